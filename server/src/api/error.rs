//! One error type for HTTP and WebSocket alike: `{"error": {"code", "message", "retry_after_ms"?}}`
//! with a stable `code`. Internal details go to the log, never to the client.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::auth::Reject;
use crate::error::{EngineError, StorageError};
use crate::protocol::{ErrorBody, ErrorCode};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    Unauthorized(Reject),
    Forbidden(&'static str),
    NotFound,
    BadRequest(String),
    PayloadTooLarge(usize),
    RateLimited {
        retry_after_ms: u64,
    },
    /// Too many connections: 503, retry later.
    OverCapacity {
        retry_after_ms: u64,
    },
    StorageUnavailable,
    Timeout,
    Internal,
}

impl From<Reject> for ApiError {
    /// A refused token is a 401; one that could not be checked (fail closed) is a 503.
    fn from(r: Reject) -> Self {
        match r {
            Reject::Unavailable => ApiError::StorageUnavailable,
            r => ApiError::Unauthorized(r),
        }
    }
}

impl ApiError {
    pub fn code(&self) -> ErrorCode {
        match self {
            ApiError::Unauthorized(_) => ErrorCode::Unauthorized,
            ApiError::Forbidden(_) => ErrorCode::Forbidden,
            ApiError::NotFound => ErrorCode::NotFound,
            ApiError::BadRequest(_) => ErrorCode::BadRequest,
            ApiError::PayloadTooLarge(_) => ErrorCode::PayloadTooLarge,
            ApiError::RateLimited { .. } | ApiError::OverCapacity { .. } => ErrorCode::RateLimited,
            ApiError::StorageUnavailable => ErrorCode::StorageUnavailable,
            ApiError::Timeout => ErrorCode::Timeout,
            ApiError::Internal => ErrorCode::Internal,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::OverCapacity { .. } | ApiError::StorageUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Timeout => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn message(&self) -> String {
        match self {
            ApiError::Unauthorized(r) => r.message().to_owned(),
            ApiError::Forbidden(why) => (*why).to_owned(),
            ApiError::NotFound => "no such memory".to_owned(),
            ApiError::BadRequest(m) => m.clone(),
            ApiError::PayloadTooLarge(max) => format!("payload larger than {max} bytes"),
            ApiError::RateLimited { .. } => "rate limit exceeded".to_owned(),
            ApiError::OverCapacity { .. } => "too many connections".to_owned(),
            ApiError::StorageUnavailable => "storage is unavailable; retry later".to_owned(),
            ApiError::Timeout => "the operation timed out; retry later".to_owned(),
            ApiError::Internal => "internal error".to_owned(),
        }
    }

    pub fn retry_after_ms(&self) -> Option<u64> {
        match self {
            ApiError::RateLimited { retry_after_ms }
            | ApiError::OverCapacity { retry_after_ms } => Some(*retry_after_ms),
            _ => None,
        }
    }

    /// The `error` object of an envelope.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            code: self.code(),
            message: self.message(),
            retry_after_ms: self.retry_after_ms(),
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::NotFound => ApiError::NotFound,
            EngineError::BadRequest(m) => ApiError::BadRequest(m),
            EngineError::LockTimeout(_)
            | EngineError::Storage(StorageError::Timeout(_) | StorageError::InDoubt(_)) => {
                ApiError::Timeout
            }
            EngineError::Storage(StorageError::Unavailable(_) | StorageError::JournalFull(_)) => {
                ApiError::StorageUnavailable
            }
            other => {
                tracing::error!(error = %other, "internal error");
                ApiError::Internal
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status(), axum::Json(json!({"error": self.body()}))).into_response();
        if let Some(ms) = self.retry_after_ms() {
            let secs = ms.div_ceil(1000).max(1);
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        resp
    }
}
