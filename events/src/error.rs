//! The one error type of the events crate. Callers match on kinds, never on
//! message text.

/// What went wrong talking to the log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The subject's last event is not the one the writer expected
    /// (JetStream 10071): a stale revision, or a create of a taken name.
    #[error("{subject} has moved on: the write expected revision {expected}")]
    WrongLastSequence { subject: String, expected: u64 },
    /// Another write to the same subject was in flight and retries ran out
    /// (JetStream 10164 / 10158 on clusters).
    #[error("concurrent writes to {subject} kept conflicting")]
    Conflict { subject: String },
    /// NATS or the stream cannot be reached right now; the write did not
    /// happen or will be recognised as done on retry.
    #[error("the event log is unavailable: {0}")]
    Unavailable(String),
    /// An append to a read copy of another region's stream: the command
    /// belongs to the owning region.
    #[error(
        "{stream} is a read copy of region {owner}'s log; its resources are written in {owner}"
    )]
    ReadCopy { stream: String, owner: String },
    /// An event could not be decoded.
    #[error("event {sequence} is corrupt: {reason}")]
    Corrupt { sequence: u64, reason: String },
    /// The server lacks a feature Fleetlog relies on.
    #[error("the NATS server does not support {feature}: {detail}")]
    Unsupported {
        feature: &'static str,
        detail: String,
    },
}

impl LogError {
    pub fn unavailable(context: &str, err: impl std::fmt::Display) -> Self {
        LogError::Unavailable(format!("{context}: {err}"))
    }

    /// Whether a caller may retry the same operation.
    pub fn is_retryable(&self) -> bool {
        matches!(self, LogError::Unavailable(_) | LogError::Conflict { .. })
    }
}
