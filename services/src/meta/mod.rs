//! Meta: the registry of regions, services and their regional deployments,
//! which also carries each deployment's upgrade state. Served by the same
//! generic engine as every other service.

pub mod deployment;
pub mod names;
pub mod region;
pub mod service;

use crate::engine::convert::VersionConverter;
use crate::engine::registry::Registry;

/// The service token in stream names and subjects.
pub const SERVICE: &str = "meta";
pub const V1: &str = "v1";
pub const VERSIONS: &[&str] = &[V1];

/// Every Meta resource type.
pub fn resources() -> Registry {
    Registry::new()
        .stored::<fleetlog_proto::meta::v1::Region>()
        .stored::<fleetlog_proto::meta::v1::Service>()
        .stored::<fleetlog_proto::meta::v1::Deployment>()
}

/// What the Meta projection holds.
pub fn converter() -> VersionConverter {
    resources().converter(V1)
}
