//! The bad clients' larger attacks, one module each; [`super::bad`] draws them and dispatches
//! here.
//!
//! - [`crowd`] — a tenant stores the engine's capacity at the top priority.
//! - [`hog`] — one user opens more WebSockets than its cap.
//! - [`storm`] — one user reconnects again and again, hanging up each time.
//! - [`noise`] — a peer that sends only binary frames and malformed text: still idle.

pub(crate) mod crowd;
pub(crate) mod hog;
pub(crate) mod noise;
pub(crate) mod storm;
