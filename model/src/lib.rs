//! The Fleetlog resource model: what each service's resources are, without
//! I/O. Their names, their declarations for the engine ([`Resource`]:
//! validation, references, wire forms), the transforms between API
//! versions, the projection converters built from each service's
//! [`registry::Registry`], and the pure decisions over a resource (the
//! upgrade state machine, provisioning).
//!
//! Depends on `proto`, `events` and `projections` (a resource's own rules
//! read other resources from a projection); knows nothing of NATS, gRPC
//! servers, callers' credentials or processes. `fleetlog-services` serves
//! it; `fleetctl` and `fleetlog-bench` use its names and converters
//! without linking the server.

pub mod convert;
pub mod devices;
pub mod error;
pub mod iam;
pub mod meta;
pub mod registry;
mod resource;
pub mod stored;
pub mod transform;

#[cfg(test)]
mod tidy;

pub use error::ModelError;
pub use resource::{
    Area, FieldViolation, Resource, SHARD_LABEL, Surroundings, Wire, decode_own_version, parse_mask,
};
