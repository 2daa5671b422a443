//! Meta: the registry of regions, services and their regional deployments,
//! which also carries each deployment's upgrade state. Served by the same
//! generic engine as every other service.

pub mod deployment;
pub mod region;
pub mod service;

use crate::engine::convert::VersionConverter;

/// The service token in stream names and subjects.
pub const SERVICE: &str = "meta";
pub const V1: &str = "v1";
pub const VERSIONS: &[&str] = &[V1];

/// What the Meta projection holds.
pub fn converter() -> VersionConverter {
    VersionConverter::new(V1)
        .with::<fleetlog_proto::meta::v1::Region>()
        .with::<fleetlog_proto::meta::v1::Service>()
        .with::<fleetlog_proto::meta::v1::Deployment>()
}
