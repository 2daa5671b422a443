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

/// The `impl Resource` blocks under `dir`, with the file each is in.
fn resource_impls(dir: &std::path::Path, found: &mut Vec<(String, String)>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            resource_impls(&path, found)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path)?;
            for block in text.split("\nimpl Resource for ").skip(1) {
                // The block ends where the next item starts at column 0.
                let body = block.split("\n}\n").next().unwrap_or(block);
                found.push((path.display().to_string(), body.to_owned()));
            }
        }
    }
    Ok(())
}

#[test]
fn a_resource_whose_checks_read_others_says_so() -> std::io::Result<()> {
    let mut impls = Vec::new();
    resource_impls(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut impls,
    )?;
    assert!(
        impls.len() >= 6,
        "found only {} `impl Resource` blocks",
        impls.len()
    );
    let mut problems = Vec::new();
    for (file, body) in &impls {
        let checks = body.contains("fn check_references(") || body.contains("fn check_delete(");
        if checks && !body.contains("const CHECKS_OTHERS: bool = true;") {
            let ty = body.split_whitespace().next().unwrap_or("?");
            problems.push(format!(
                "{file}: `impl Resource for {ty}` checks other resources but does not set \
                 `const CHECKS_OTHERS: bool = true;` (its commands would check a stale projection)"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    Ok(())
}
