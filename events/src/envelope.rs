//! The event envelope: a `ResourceChange` as stored on a subject, and the
//! small typed values that travel with it.

use std::fmt;

use prost::Message as _;

pub use fleetlog_proto::events::v1::{ResourceChange, resource_change::Kind as ChangeKind};

use crate::error::LogError;

/// Header carrying the command id of every event, so a retry can recognise
/// its own earlier success (see DESIGN "Idempotent retry vs optimistic
/// concurrency").
pub const COMMAND_ID_HEADER: &str = "Fleetlog-Command-Id";

/// The stream sequence of an event; a resource's `revision` is the sequence
/// of its last event. Zero means "no event".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Revision(pub u64);

impl Revision {
    pub const NONE: Revision = Revision(0);

    pub fn get(self) -> u64 {
        self.0
    }

    /// Revisions travel as int64 on the wire; negative values mean "none".
    pub fn from_wire(value: i64) -> Revision {
        Revision(u64::try_from(value).unwrap_or(0))
    }

    pub fn to_wire(self) -> i64 {
        i64::try_from(self.0).unwrap_or(i64::MAX)
    }
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Identifies one command. A client's `request_id` when given (so retries
/// share it), a fresh UUIDv7 otherwise.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CommandId(String);

/// Longest `request_id` accepted.
pub const MAX_COMMAND_ID_LEN: usize = 64;

impl CommandId {
    pub fn generate() -> Self {
        CommandId(uuid::Uuid::now_v7().to_string())
    }

    /// Validates a client-supplied request id: 1–64 printable ASCII characters
    /// without spaces (it becomes a NATS header value).
    pub fn from_request_id(request_id: &str) -> Result<Self, String> {
        if request_id.is_empty() || request_id.len() > MAX_COMMAND_ID_LEN {
            return Err(format!(
                "must be 1 to {MAX_COMMAND_ID_LEN} characters long, got {}",
                request_id.len()
            ));
        }
        if !request_id.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("may contain only printable ASCII characters without spaces".into());
        }
        Ok(CommandId(request_id.to_owned()))
    }

    /// A client's optional request id, or a generated one.
    pub fn from_optional_request_id(request_id: &str) -> Result<Self, String> {
        if request_id.is_empty() {
            Ok(Self::generate())
        } else {
            Self::from_request_id(request_id)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CommandId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An event read back from the log.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredEvent {
    pub revision: Revision,
    pub subject: String,
    pub change: ResourceChange,
}

impl StoredEvent {
    pub fn decode(revision: Revision, subject: &str, payload: &[u8]) -> Result<Self, LogError> {
        let change = ResourceChange::decode(payload).map_err(|e| LogError::Corrupt {
            sequence: revision.get(),
            reason: e.to_string(),
        })?;
        Ok(StoredEvent {
            revision,
            subject: subject.to_owned(),
            change,
        })
    }

    pub fn kind(&self) -> ChangeKind {
        self.change.kind()
    }

    pub fn is_deletion(&self) -> bool {
        self.kind() == ChangeKind::Deleted
    }
}
