//! The Fleetlog services: the generic resource engine, the resources of each
//! service, and fleetd (roles, config, startup and shutdown).
//!
//! Start reading at [`engine`]; a resource type is declared in a module like
//! [`devices::model::device`].

pub mod devices;
pub mod engine;
pub mod error;
pub mod fleetd;
pub mod gateway;
pub mod iam;
pub mod meta;
pub mod telemetry;
pub mod upgrade;

#[cfg(test)]
mod tidy;

pub use error::ServiceError;
