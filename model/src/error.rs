//! The model's one error type. The services map it into their own
//! (`fleetlog_services::error`), where it becomes a gRPC status; the
//! variants are the verdicts a resource's own rules can reach.

use fleetlog_projections::ProjectionError;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A request field is malformed or out of range; `field` names it.
    #[error("invalid {field}: {message}")]
    InvalidArgument { field: String, message: String },
    /// The request is well-formed but the state of the system refuses it
    /// (the message says what to change first).
    #[error("{0}")]
    FailedPrecondition(String),
    /// Stored or logged data breaks the model's own rules.
    #[error("internal error: {0}")]
    Internal(String),
    /// Reading another resource from a projection failed.
    #[error(transparent)]
    Projection(#[from] ProjectionError),
}

impl ModelError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ModelError::InvalidArgument {
            field: field.into(),
            message: message.into(),
        }
    }
}
