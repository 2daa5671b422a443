//! The read side of Fleetlog: RocksDB projections of the log, the projector
//! that keeps them current, and the query engine over them.
//!
//! Nothing here knows about gRPC. Start reading at [`projector::Projector`]
//! and [`query`].

pub mod active;
pub mod error;
pub mod projection;
pub mod projector;
pub mod query;
pub mod query_lang;
pub mod store;

pub use error::ProjectionError;
pub use projection::{AsWritten, Converter, Projection};
pub use projector::{Projector, ReplayOptions};
