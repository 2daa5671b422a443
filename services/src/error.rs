//! The services' one error type and the one place it becomes a gRPC status.

use fleetlog_events::LogError;
use fleetlog_model::ModelError;
use fleetlog_projections::ProjectionError;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// A request field is malformed or out of range; `field` names it.
    #[error("invalid {field}: {message}")]
    InvalidArgument { field: String, message: String },
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0} already exists")]
    AlreadyExists(String),
    /// A stale `expected_revision`, or a concurrent write won.
    #[error("{0}")]
    Aborted(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    PermissionDenied(String),
    /// NATS or the projection is unreachable; nothing was written.
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    DeadlineExceeded(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ServiceError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ServiceError::InvalidArgument {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl From<LogError> for ServiceError {
    fn from(err: LogError) -> Self {
        match err {
            LogError::WrongLastSequence { .. } => {
                ServiceError::Aborted(format!("{err}; read the resource again and retry"))
            }
            // Writes to the subject were in flight (or a duplicate was being
            // stored) for longer than the log client retried: nothing is
            // known to be wrong with the request, so it is retryable, and
            // nothing was written that a retry would double.
            LogError::Conflict { .. } => {
                ServiceError::Unavailable(format!("{err}; retry the request"))
            }
            LogError::Unavailable(_) => ServiceError::Unavailable(err.to_string()),
            // Commands are routed to the owning region before they get
            // here; one that was not is refused, never written across.
            LogError::ReadCopy { .. } => ServiceError::FailedPrecondition(format!(
                "{err}: send the command to that region's endpoint"
            )),
            LogError::Corrupt { .. } | LogError::Unsupported { .. } => {
                ServiceError::Internal(err.to_string())
            }
        }
    }
}

impl From<ProjectionError> for ServiceError {
    fn from(err: ProjectionError) -> Self {
        match err {
            ProjectionError::InvalidArgument(invalid) => ServiceError::InvalidArgument {
                field: invalid.field.to_owned(),
                message: invalid.message,
            },
            ProjectionError::NotCaughtUp { .. } => ServiceError::DeadlineExceeded(err.to_string()),
            ProjectionError::Log(log) => log.into(),
            ProjectionError::Closed => ServiceError::Unavailable(err.to_string()),
            ProjectionError::Storage(_) | ProjectionError::Conversion { .. } => {
                ServiceError::Internal(err.to_string())
            }
        }
    }
}

impl From<ModelError> for ServiceError {
    fn from(err: ModelError) -> Self {
        match err {
            ModelError::InvalidArgument { field, message } => {
                ServiceError::InvalidArgument { field, message }
            }
            ModelError::FailedPrecondition(message) => ServiceError::FailedPrecondition(message),
            ModelError::Internal(message) => ServiceError::Internal(message),
            ModelError::Projection(projection) => projection.into(),
        }
    }
}

impl From<ServiceError> for tonic::Status {
    fn from(err: ServiceError) -> Self {
        let message = err.to_string();
        match err {
            ServiceError::InvalidArgument { .. } => tonic::Status::invalid_argument(message),
            ServiceError::NotFound(_) => tonic::Status::not_found(message),
            ServiceError::AlreadyExists(_) => tonic::Status::already_exists(message),
            ServiceError::Aborted(_) => tonic::Status::aborted(message),
            ServiceError::FailedPrecondition(_) => tonic::Status::failed_precondition(message),
            ServiceError::Unauthenticated(_) => tonic::Status::unauthenticated(message),
            ServiceError::PermissionDenied(_) => tonic::Status::permission_denied(message),
            ServiceError::Unavailable(_) => tonic::Status::unavailable(message),
            ServiceError::DeadlineExceeded(_) => tonic::Status::deadline_exceeded(message),
            ServiceError::Internal(_) => {
                tracing::error!(error = %message, "internal error");
                tonic::Status::internal(message)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transient_log_conflict_is_retryable_never_a_verdict() {
        let conflict = ServiceError::from(LogError::Conflict {
            subject: "ev.devices.eu1.s01.x".into(),
        });
        assert!(
            matches!(conflict, ServiceError::Unavailable(_)),
            "{conflict:?}"
        );
        assert_eq!(
            tonic::Status::from(conflict).code(),
            tonic::Code::Unavailable
        );
        let stale = ServiceError::from(LogError::WrongLastSequence {
            subject: "ev.devices.eu1.s01.x".into(),
            expected: 3,
        });
        assert!(matches!(stale, ServiceError::Aborted(_)), "{stale:?}");
    }
}
