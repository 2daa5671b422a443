//! Holds each service's resource list against the API catalog (the idea of
//! rust-analyzer's `tidy.rs`): a resource the proto declares but Rust does
//! not register would be written and never readable, one registered with a
//! name pattern or field that differs from the proto would be served under
//! names the OpenAPI document and the generic clients do not expect.
//! Whether every catalog service is served is checked by fleetd at startup
//! (`fleetd::served`), which every end-to-end test goes through.

use fleetlog_proto::catalog::{CATALOG, NamePattern};

use crate::registry::{Registered, Registry};
use crate::{devices, iam, meta};

/// Every service's registrations, with the proto package prefix its
/// messages must have.
fn registries() -> Vec<(String, Registry)> {
    vec![
        (format!("fleetlog.{}.", meta::SERVICE), meta::resources()),
        (format!("fleetlog.{}.", iam::SERVICE), iam::resources()),
        (
            format!("fleetlog.{}.", devices::SERVICE),
            devices::resources(),
        ),
    ]
}

fn all_registered() -> Vec<(String, Registered)> {
    registries()
        .into_iter()
        .flat_map(|(package, registry)| {
            registry
                .registered()
                .iter()
                .cloned()
                .map(move |r| (package.clone(), r))
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn every_catalog_resource_is_registered_with_the_proto_pattern_and_fields() {
    let registered = all_registered();
    let mut problems = Vec::new();
    for resource in &CATALOG.resources {
        let message = resource.message.full_name();
        let Some((package, found)) = registered
            .iter()
            .find(|(_, r)| r.served && r.message == message)
        else {
            problems.push(format!(
                "{message} is in the catalog but no service registers it (add it to its service's `resources()`)"
            ));
            continue;
        };
        if !message.starts_with(package.as_str()) {
            problems.push(format!(
                "{message} is registered by the service of {package}*"
            ));
        }
        if NamePattern::parse(found.pattern) != resource.pattern {
            problems.push(format!(
                "{message}: Rust names it {} but the proto pattern is {:?}",
                found.pattern, resource.pattern
            ));
        }
        if found.field != resource.body_field() {
            problems.push(format!(
                "{message}: Rust's body field is {:?}, the proto's {:?}",
                found.field,
                resource.body_field()
            ));
        }
        if found.id_field != resource.id_field() {
            problems.push(format!(
                "{message}: Rust's ID field is {:?}, the proto's {:?}",
                found.id_field,
                resource.id_field()
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_registration_is_a_catalog_resource_of_its_own_service() {
    let mut problems = Vec::new();
    for (package, registered) in all_registered() {
        if !registered.message.starts_with(package.as_str()) {
            problems.push(format!(
                "{} is registered by the service of {package}*",
                registered.message
            ));
        }
        let in_catalog = CATALOG
            .resources
            .iter()
            .any(|r| r.message.full_name() == registered.message);
        if registered.served && !in_catalog {
            problems.push(format!(
                "{} is registered but the catalog has no such resource (a resource message needs a `google.api.resource` option and a service with its standard methods)",
                registered.message
            ));
        }
        if !registered.served && in_catalog {
            problems.push(format!(
                "{} is an API resource but registered as internal (use `stored`)",
                registered.message
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn each_service_stores_something_and_each_stored_type_once() {
    for (package, registry) in registries() {
        let stored: Vec<&str> = registry
            .registered()
            .iter()
            .filter(|r| r.stored)
            .map(|r| r.message.as_str())
            .collect();
        let mut unique = stored.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), stored.len(), "{package}: {stored:?}");
        assert!(!stored.is_empty(), "{package} stores nothing");
    }
}
