//! Meta: the registry of regions, services and their regional deployments,
//! which also carries each deployment's upgrade state. Its resources and
//! the upgrade state machine are `fleetlog_model::meta`; this is their
//! API, served by the same generic engine as every other service.

pub mod api;

pub use fleetlog_model::meta::{SERVICE, V1, VERSIONS, converter, resources};
