//! The one mapping from a gRPC status to an HTTP answer: REST errors and the
//! error events of server-sent streams say exactly what the gRPC call says.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tonic::Code;

/// The HTTP status of a gRPC code (the mapping of google.rpc.Code).
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        // Client Closed Request, as Google's APIs answer it.
        Code::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

pub use fleetlog_proto::status::code_name;

/// `{"error": {"code": 404, "status": "NOT_FOUND", "message": "…"}}`.
pub fn error_body(status: &tonic::Status) -> serde_json::Value {
    serde_json::json!({
        "error": {
            "code": http_status(status.code()).as_u16(),
            "status": code_name(status.code()),
            "message": status.message(),
        }
    })
}

/// A failed call as an HTTP response.
pub fn error_response(status: &tonic::Status) -> Response {
    (http_status(status.code()), axum::Json(error_body(status))).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_api_md_code_has_its_http_status() {
        for (code, http) in [
            (Code::InvalidArgument, 400),
            (Code::NotFound, 404),
            (Code::AlreadyExists, 409),
            (Code::Aborted, 409),
            (Code::FailedPrecondition, 400),
            (Code::Unauthenticated, 401),
            (Code::PermissionDenied, 403),
            (Code::Unavailable, 503),
            (Code::DeadlineExceeded, 504),
            (Code::OutOfRange, 400),
        ] {
            assert_eq!(http_status(code).as_u16(), http, "{code:?}");
        }
        let body = error_body(&tonic::Status::not_found("projects/p/x not found"));
        assert_eq!(body["error"]["code"], 404);
        assert_eq!(body["error"]["status"], "NOT_FOUND");
        assert_eq!(body["error"]["message"], "projects/p/x not found");
    }
}
