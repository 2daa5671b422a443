//! The API surface as the descriptors declare it: every resource (its name
//! pattern, collection and standard methods) and every custom action, for
//! each service and API version.
//!
//! The REST gateway, the OpenAPI document and fleetctl are driven by this
//! catalog, so a new resource (a message with the `fleetlog.api.v1.resource`
//! option and a service with the standard methods) needs no route, schema or
//! command of its own.

use std::fmt;
use std::sync::{Arc, LazyLock};

use prost_reflect::{
    DescriptorPool, DynamicMessage, ExtensionDescriptor, MessageDescriptor, MethodDescriptor,
    ServiceDescriptor, Value,
};

use crate::DESCRIPTOR_POOL;

const RESOURCE_OPTION: &str = "fleetlog.api.v1.resource";
const ACTION_TARGET_OPTION: &str = "fleetlog.api.v1.action_target";

/// The catalog of the services in [`DESCRIPTOR_POOL`].
pub static CATALOG: LazyLock<Catalog> = LazyLock::new(|| Catalog::new(&DESCRIPTOR_POOL));

/// A resource name pattern, e.g. `projects/{project}/regions/{region}/devices/{device}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamePattern {
    segments: Vec<Segment>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Variable(String),
}

impl NamePattern {
    pub fn parse(pattern: &str) -> NamePattern {
        let segments = pattern
            .split('/')
            .map(|segment| match segment.strip_prefix('{') {
                Some(variable) => Segment::Variable(variable.trim_end_matches('}').to_owned()),
                None => Segment::Literal(segment.to_owned()),
            })
            .collect();
        NamePattern { segments }
    }

    /// Whether `name` has this pattern's shape (IDs are the service's to
    /// validate).
    pub fn matches(&self, name: &str) -> bool {
        let parts: Vec<&str> = name.split('/').collect();
        parts.len() == self.segments.len()
            && self
                .segments
                .iter()
                .zip(parts)
                .all(|(segment, part)| match segment {
                    Segment::Literal(literal) => literal == part,
                    Segment::Variable(_) => !part.is_empty(),
                })
    }

    /// The pattern of the collection: without the last (ID) segment, e.g.
    /// `projects/{project}/regions/{region}/devices`.
    pub fn collection(&self) -> NamePattern {
        NamePattern {
            segments: self.segments[..self.segments.len().saturating_sub(1)].to_vec(),
        }
    }

    /// The pattern of the parent: without the collection and ID segments
    /// (empty for a top-level resource).
    pub fn parent(&self) -> NamePattern {
        NamePattern {
            segments: self.segments[..self.segments.len().saturating_sub(2)].to_vec(),
        }
    }

    /// The variables, in order (`project`, `region`, `device`).
    pub fn variables(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|segment| match segment {
            Segment::Variable(variable) => Some(variable.as_str()),
            Segment::Literal(_) => None,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }
}

impl fmt::Display for NamePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.segments.iter().enumerate() {
            if i > 0 {
                f.write_str("/")?;
            }
            match segment {
                Segment::Literal(literal) => f.write_str(literal)?,
                Segment::Variable(variable) => write!(f, "{{{variable}}}")?,
            }
        }
        Ok(())
    }
}

/// The standard methods of a resource, as a service declares them.
#[derive(Clone, Debug, Default)]
pub struct StandardMethods {
    pub get: Option<MethodDescriptor>,
    pub batch_get: Option<MethodDescriptor>,
    pub list: Option<MethodDescriptor>,
    pub watch_one: Option<MethodDescriptor>,
    pub watch_many: Option<MethodDescriptor>,
    pub create: Option<MethodDescriptor>,
    pub update: Option<MethodDescriptor>,
    pub delete: Option<MethodDescriptor>,
}

/// What a standard method does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Standard {
    Get,
    BatchGet,
    List,
    WatchOne,
    WatchMany,
    Create,
    Update,
    Delete,
}

impl StandardMethods {
    pub fn method(&self, which: Standard) -> Option<&MethodDescriptor> {
        match which {
            Standard::Get => self.get.as_ref(),
            Standard::BatchGet => self.batch_get.as_ref(),
            Standard::List => self.list.as_ref(),
            Standard::WatchOne => self.watch_one.as_ref(),
            Standard::WatchMany => self.watch_many.as_ref(),
            Standard::Create => self.create.as_ref(),
            Standard::Update => self.update.as_ref(),
            Standard::Delete => self.delete.as_ref(),
        }
    }
}

/// A resource type in one API version, served by one service.
#[derive(Clone, Debug)]
pub struct ResourceType {
    /// `devices.fleetlog.io/Device`.
    pub type_name: String,
    /// The API version, the last part of the package (`v1`, `v1alpha2`).
    pub version: String,
    pub message: MessageDescriptor,
    pub service: ServiceDescriptor,
    pub pattern: NamePattern,
    /// lowerCamelCase: `provisioningPolicy`.
    pub singular: String,
    /// lowerCamelCase: `provisioningPolicies`.
    pub plural: String,
    /// The pattern's variables that take DNS-style IDs (`service`).
    pub domain_variables: Vec<String>,
    pub methods: StandardMethods,
}

impl ResourceType {
    /// The request field that carries the resource in Create and Update
    /// (`device`, `provisioning_policy`).
    pub fn body_field(&self) -> String {
        snake_case(&self.singular)
    }

    /// The Create request's ID field (`device_id`).
    pub fn id_field(&self) -> String {
        format!("{}_id", snake_case(&self.singular))
    }
}

/// A custom action: any method of a service that is not a standard method.
#[derive(Clone, Debug)]
pub struct Action {
    pub version: String,
    pub method: MethodDescriptor,
    /// The method name in lowerCamelCase, as REST spells it after `:`.
    pub verb: String,
    /// The pattern of the request's `name`.
    pub target: NamePattern,
}

/// Every resource and action of every service in a descriptor pool.
#[derive(Clone, Debug, Default)]
pub struct Catalog {
    pub resources: Vec<Arc<ResourceType>>,
    pub actions: Vec<Action>,
}

/// What a path (after the version) addresses.
#[derive(Clone, Debug)]
pub enum Addressed<'a> {
    /// A resource by name.
    Name(&'a Arc<ResourceType>),
    /// A resource collection: `{parent}/{plural}`; carries the parent.
    Collection(&'a Arc<ResourceType>, String),
}

impl Catalog {
    pub fn new(pool: &DescriptorPool) -> Catalog {
        let resource_option = pool.get_extension_by_name(RESOURCE_OPTION);
        let target_option = pool.get_extension_by_name(ACTION_TARGET_OPTION);
        let mut catalog = Catalog::default();
        for service in pool.services() {
            let version = version_of(service.package_name());
            let resource = resource_option
                .as_ref()
                .and_then(|option| served_resource(&service, option, &version));
            let standard = resource.as_ref().map(|r| r.methods.clone());
            for method in service.methods() {
                let is_standard = standard.as_ref().is_some_and(|methods| {
                    [
                        &methods.get,
                        &methods.batch_get,
                        &methods.list,
                        &methods.watch_one,
                        &methods.watch_many,
                        &methods.create,
                        &methods.update,
                        &methods.delete,
                    ]
                    .iter()
                    .any(|m| m.as_ref() == Some(&method))
                });
                if is_standard || method.input().get_field_by_name("name").is_none() {
                    continue;
                }
                let declared = target_option
                    .as_ref()
                    .and_then(|option| string_option(&method.options(), option));
                let target = match (declared, &resource) {
                    (Some(pattern), _) => NamePattern::parse(&pattern),
                    (None, Some(resource)) => resource.pattern.clone(),
                    (None, None) => continue,
                };
                catalog.actions.push(Action {
                    version: version.clone(),
                    verb: lower_camel(method.name()),
                    method,
                    target,
                });
            }
            if let Some(resource) = resource {
                catalog.resources.push(Arc::new(resource));
            }
        }
        catalog
    }

    /// The API versions served, e.g. `["v1", "v1alpha2"]`.
    pub fn versions(&self) -> Vec<&str> {
        let mut versions: Vec<&str> = self.resources.iter().map(|r| r.version.as_str()).collect();
        versions.sort_unstable();
        versions.dedup();
        versions
    }

    /// What `path` (a resource name, or a parent and collection) addresses
    /// in `version`.
    pub fn address(&self, version: &str, path: &str) -> Option<Addressed<'_>> {
        let in_version = || self.resources.iter().filter(|r| r.version == version);
        if let Some(resource) = in_version().find(|r| r.pattern.matches(path)) {
            return Some(Addressed::Name(resource));
        }
        in_version().find_map(|resource| {
            let collection = resource.pattern.collection();
            collection.matches(path).then(|| {
                let parent = path
                    .rsplit_once('/')
                    .map(|(parent, _)| parent.to_owned())
                    .unwrap_or_default();
                Addressed::Collection(resource, parent)
            })
        })
    }

    /// The custom action `verb` on the resource `name` in `version`.
    pub fn action(&self, version: &str, name: &str, verb: &str) -> Option<&Action> {
        self.actions.iter().find(|action| {
            action.version == version
                && action.verb.eq_ignore_ascii_case(verb)
                && action.target.matches(name)
        })
    }

    /// Whether the pattern variable `variable` (wherever it appears: a
    /// variable means the same thing in every pattern) takes DNS-style IDs.
    pub fn is_domain_variable(&self, variable: &str) -> bool {
        self.resources
            .iter()
            .any(|r| r.domain_variables.iter().any(|v| v == variable))
    }

    /// The resource type whose collection is `plural` (e.g. `devices`) in
    /// `version`.
    pub fn resource_by_plural(&self, version: &str, plural: &str) -> Option<&Arc<ResourceType>> {
        self.resources
            .iter()
            .find(|r| r.version == version && r.plural.eq_ignore_ascii_case(plural))
    }
}

/// The resource a service serves: the message its `Get{Message}` returns,
/// when that message declares the resource option.
fn served_resource(
    service: &ServiceDescriptor,
    option: &ExtensionDescriptor,
    version: &str,
) -> Option<ResourceType> {
    service.methods().find_map(|get| {
        let message = get.output();
        if get.name() != format!("Get{}", message.name()) {
            return None;
        }
        let declared = message.options();
        if !declared.has_extension(option) {
            return None;
        }
        let Value::Message(descriptor) = declared.get_extension(option).into_owned() else {
            return None;
        };
        let field = |name: &str| {
            descriptor
                .get_field_by_name(name)
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default()
        };
        let domain_variables = descriptor
            .get_field_by_name("domain_variables")
            .and_then(|v| {
                v.as_list().map(|items| {
                    items
                        .iter()
                        .filter_map(|i| i.as_str().map(str::to_owned))
                        .collect()
                })
            })
            .unwrap_or_default();
        let singular_upper = message.name().to_owned();
        let plural = field("plural");
        let plural_upper = upper_camel(&plural);
        let find = |name: String| service.methods().find(|m| m.name() == name);
        Some(ResourceType {
            type_name: field("type"),
            version: version.to_owned(),
            pattern: NamePattern::parse(&field("pattern")),
            singular: field("singular"),
            methods: StandardMethods {
                get: Some(get.clone()),
                batch_get: find(format!("BatchGet{plural_upper}")),
                list: find(format!("List{plural_upper}")),
                watch_one: find(format!("Watch{singular_upper}")),
                watch_many: find(format!("Watch{plural_upper}")),
                create: find(format!("Create{singular_upper}")),
                update: find(format!("Update{singular_upper}")),
                delete: find(format!("Delete{singular_upper}")),
            },
            plural,
            domain_variables,
            message,
            service: service.clone(),
        })
    })
}

fn string_option(options: &DynamicMessage, option: &ExtensionDescriptor) -> Option<String> {
    options
        .has_extension(option)
        .then(|| options.get_extension(option).as_str().map(str::to_owned))
        .flatten()
        .filter(|s| !s.is_empty())
}

/// `fleetlog.devices.v1alpha2` → `v1alpha2`.
fn version_of(package: &str) -> String {
    package.rsplit('.').next().unwrap_or(package).to_owned()
}

/// `ProvisionDeviceViaPolicy` → `provisionDeviceViaPolicy`.
pub fn lower_camel(name: &str) -> String {
    let mut chars = name.chars();
    match chars.next() {
        Some(first) => first.to_ascii_lowercase().to_string() + chars.as_str(),
        None => String::new(),
    }
}

/// `provisioningPolicies` → `ProvisioningPolicies`.
pub fn upper_camel(name: &str) -> String {
    let mut chars = name.chars();
    match chars.next() {
        Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
        None => String::new(),
    }
}

/// `provisioningPolicy` → `provisioning_policy`.
pub fn snake_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for c in name.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(version: &str, plural: &str) -> Arc<ResourceType> {
        CATALOG
            .resource_by_plural(version, plural)
            .cloned()
            .unwrap_or_else(|| panic!("{version} {plural} is in the catalog"))
    }

    #[test]
    fn every_resource_of_every_service_is_found_with_all_standard_methods() {
        let mut found: Vec<String> = CATALOG
            .resources
            .iter()
            .map(|r| format!("{} {}", r.version, r.pattern))
            .collect();
        found.sort();
        assert_eq!(
            found,
            [
                "v1 projects/{project}/regions/{region}/devices/{device}",
                "v1 projects/{project}/regions/{region}/provisioningPolicies/{provisioning_policy}",
                "v1 projects/{project}/regions/{region}/provisioningPolicies/{provisioning_policy}/provisioningApprovalRequests/{provisioning_approval_request}",
                "v1 projects/{project}/roleBindings/{role_binding}",
                "v1 projects/{project}/serviceAccounts/{service_account}",
                "v1 regions/{region}",
                "v1 services/{service}",
                "v1 services/{service}/deployments/{deployment}",
                "v1alpha2 projects/{project}/devices/{device}",
                "v1alpha2 projects/{project}/provisioningPolicies/{provisioning_policy}",
                "v1alpha2 projects/{project}/provisioningPolicies/{provisioning_policy}/provisioningApprovalRequests/{provisioning_approval_request}",
            ]
        );
        for r in &CATALOG.resources {
            let m = &r.methods;
            for (which, method) in [
                ("get", &m.get),
                ("batch_get", &m.batch_get),
                ("list", &m.list),
                ("watch_one", &m.watch_one),
                ("watch_many", &m.watch_many),
                ("create", &m.create),
                ("update", &m.update),
                ("delete", &m.delete),
            ] {
                assert!(method.is_some(), "{} lacks {which}", r.type_name);
            }
            assert!(
                r.methods.create.as_ref().is_some_and(|c| c
                    .input()
                    .get_field_by_name(&r.id_field())
                    .is_some()
                    && c.input().get_field_by_name(&r.body_field()).is_some()),
                "{}: create has {} and {}",
                r.type_name,
                r.id_field(),
                r.body_field()
            );
        }
    }

    #[test]
    fn actions_are_the_other_methods_with_their_targets() {
        let verbs: Vec<String> = CATALOG
            .actions
            .iter()
            .filter(|a| a.version == "v1")
            .map(|a| a.verb.clone())
            .collect();
        for expected in [
            "provisionServiceAccountToDevice",
            "removeServiceAccountFromDevice",
            "heartbeat",
            "getDeviceConfig",
            "uploadDeviceLogs",
            "queryDeviceLogs",
            "provisionDeviceViaPolicy",
            "requestProvisioningApproval",
            "provisionDeviceForApprovedRequest",
            "beginUpgrade",
            "rollbackUpgrade",
            "createServiceAccountKey",
            "deleteServiceAccountKey",
        ] {
            assert!(
                verbs.iter().any(|v| v == expected),
                "{expected} in {verbs:?}"
            );
        }
        let key = CATALOG
            .action(
                "v1",
                "projects/p/serviceAccounts/sa/keys/k1",
                "deleteServiceAccountKey",
            )
            .map(|a| a.method.full_name().to_owned());
        assert_eq!(
            key.as_deref(),
            Some("fleetlog.iam.v1.ServiceAccountService.DeleteServiceAccountKey")
        );
        assert!(
            CATALOG
                .action("v1", "projects/p/devices/d", "heartbeat")
                .is_none(),
            "a v1alpha2-shaped name is not a v1 device"
        );
    }

    #[test]
    fn paths_address_names_and_collections() {
        let devices = resource("v1", "devices");
        match CATALOG.address("v1", "projects/p/regions/eu1/devices/d1") {
            Some(Addressed::Name(r)) => assert!(Arc::ptr_eq(r, &devices)),
            other => panic!("{other:?}"),
        }
        match CATALOG.address("v1", "projects/p/regions/eu1/devices") {
            Some(Addressed::Collection(r, parent)) => {
                assert!(Arc::ptr_eq(r, &devices));
                assert_eq!(parent, "projects/p/regions/eu1");
            }
            other => panic!("{other:?}"),
        }
        match CATALOG.address("v1", "regions") {
            Some(Addressed::Collection(r, parent)) => {
                assert_eq!(r.plural, "regions");
                assert_eq!(parent, "");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            CATALOG.address("v1alpha2", "projects/p/devices/d1"),
            Some(Addressed::Name(r)) if r.version == "v1alpha2"
        ));
        assert!(CATALOG.address("v1", "projects/p/devices/d1").is_none());
        assert!(
            CATALOG
                .address("v1", "projects/p/regions//devices/d")
                .is_none()
        );
        assert!(CATALOG.address("v2", "regions/r").is_none());
    }

    #[test]
    fn names_are_spelled_as_rest_and_proto_want() {
        assert_eq!(
            snake_case("provisioningApprovalRequest"),
            "provisioning_approval_request"
        );
        assert_eq!(
            lower_camel("ProvisionDeviceViaPolicy"),
            "provisionDeviceViaPolicy"
        );
        assert_eq!(upper_camel("roleBindings"), "RoleBindings");
        let pattern = NamePattern::parse("services/{service}/deployments/{deployment}");
        assert_eq!(
            pattern.collection().to_string(),
            "services/{service}/deployments"
        );
        assert_eq!(pattern.parent().to_string(), "services/{service}");
        assert_eq!(
            pattern.variables().collect::<Vec<_>>(),
            ["service", "deployment"]
        );
        assert!(CATALOG.is_domain_variable("service"));
        assert!(!CATALOG.is_domain_variable("deployment"));
        assert!(!CATALOG.is_domain_variable("project"));
    }
}
