//! The log side of Fleetlog: typed resource names, the subjects they map to,
//! the `ResourceChange` envelope and the JetStream log client.
//!
//! Nothing here knows about RocksDB or gRPC. Start reading at [`log::EventLog`].

pub mod envelope;
pub mod error;
pub mod log;
pub mod name;
pub mod subject;

pub use envelope::{CommandId, Revision, StoredEvent};
pub use error::LogError;
pub use log::{Appended, CopyState, Delivered, EventLog, ServerFeatures, StartAt, Subscription};
pub use name::{Id, NameError, ParentName, ResourceName, StorageKey};
pub use subject::{DeviceLogStream, SHARD_RING_SIZE, ShardId, StreamId};
