//! The bad clients' larger attacks, one module each; [`super::bad`] draws them and dispatches
//! here.
//!
//! - [`crowd`] — a tenant stores the engine's capacity at the top priority.
//! - [`hog`] — one user opens more WebSockets than its cap.
//! - [`storm`] — one user reconnects again and again, hanging up each time.
//! - [`noise`] — a peer that sends only binary frames and malformed text: still idle.
//! - [`slow_sockets`] — sockets that send half a request header (or one request) and then nothing.
//! - [`non_reader`] — a peer that never reads while its answers pile up.
//! - [`http_flood`] — one user's authenticated HTTP past its bucket, then back once it may.

pub(crate) mod crowd;
pub(crate) mod hog;
pub(crate) mod http_flood;
pub(crate) mod noise;
pub(crate) mod non_reader;
pub(crate) mod slow_sockets;
pub(crate) mod storm;
