//! Meta's resources: regions, services and their regional deployments,
//! with the upgrade state machine a deployment carries (DESIGN §5).

pub mod deployment;
pub mod names;
pub mod region;
pub mod service;

use crate::convert::VersionConverter;
use crate::registry::Registry;

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
