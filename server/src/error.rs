//! Typed errors. Callers branch on these; the HTTP layer maps each to a stable `code` and never
//! shows the inner detail to a client.

use thiserror::Error;

/// What a storage adapter can fail with.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum StorageError {
    /// The backend did not answer or refused the connection; the call may succeed later.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// The call did not finish within its time limit.
    #[error("storage call timed out after {0} ms")]
    Timeout(u64),
    /// The stored bytes are not what the contract promises (not JSON, not an integer counter).
    #[error("corrupt value at {key}: {detail}")]
    Corrupt { key: String, detail: String },
    /// Storage is unreachable and the degraded-mode journal has no room: the write was refused,
    /// not acknowledged, so nothing was lost.
    #[error("storage unavailable and the degraded journal is full ({0} entries)")]
    JournalFull(usize),
    /// A write whose outcome storage left in doubt (it timed out, so it may have landed) could not
    /// be made durable in the degraded journal (the disk refused the entry). It is queued in
    /// memory and lands when storage returns, unless this process stops first: not acknowledged
    /// (the caller hears `timeout`, outcome unknown), but callers keeping an index count it as
    /// done, since storage will hold it.
    #[error(
        "storage call timed out after {0} ms; the write lands when storage returns unless this server stops first"
    )]
    InDoubt(u64),
    /// The adapter was configured wrongly (bad URL, refused insecure connection, unreadable CA).
    #[error("storage configuration: {0}")]
    Config(String),
}

impl StorageError {
    /// Errors that say nothing about the backend's health (a corrupt value is a data problem, not
    /// an outage) must not trip the circuit breaker.
    pub fn is_outage(&self) -> bool {
        matches!(
            self,
            StorageError::Unavailable(_) | StorageError::Timeout(_) | StorageError::InDoubt(_)
        )
    }
}

/// What an engine operation can fail with.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum EngineError {
    #[error("not found")]
    NotFound,
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The critical section could not be entered within the lock timeout.
    #[error("timed out waiting {0} ms for the engine lock")]
    LockTimeout(u64),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("internal: {0}")]
    Internal(String),
}
