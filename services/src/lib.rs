//! The Fleetlog services: the generic resource engine, the API and flows of
//! each service over the resource model of `fleetlog-model`, the transports
//! (gRPC, gRPC-Web, REST) and fleetd (roles, config, startup and shutdown).
//!
//! Start reading at [`engine`]; a resource type is declared in the model
//! crate, in a module like `fleetlog_model::devices::device`.

pub mod devices;
pub mod engine;
pub mod error;
pub mod fence;
pub mod fleetd;
pub mod gateway;
pub mod iam;
pub mod meta;
pub mod routing;
pub mod telemetry;
pub mod upgrade;

pub use error::ServiceError;
