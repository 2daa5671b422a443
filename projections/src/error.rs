//! The one error type of the projections crate.

use crate::query_lang::InvalidArgument;

#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    /// RocksDB failed or holds something unreadable.
    #[error("projection storage: {0}")]
    Storage(String),
    /// The log could not be read.
    #[error(transparent)]
    Log(#[from] fleetlog_events::LogError),
    /// A query was malformed (filter, order, mask or page token).
    #[error(transparent)]
    InvalidArgument(#[from] InvalidArgument),
    /// `min_revision` was not applied within the wait bound.
    #[error("the projection has applied revision {applied}, not yet {wanted}; retry later")]
    NotCaughtUp { wanted: u64, applied: u64 },
    /// An event could not be converted into this projection's version.
    #[error("event {revision} cannot be projected: {reason}")]
    Conversion { revision: u64, reason: String },
    /// The projection is shutting down.
    #[error("the projection is closed")]
    Closed,
}
