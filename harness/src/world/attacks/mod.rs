//! The bad clients' larger attacks, one module each; [`super::bad`] draws them and dispatches
//! here.
//!
//! - [`hog`] — one user opens more WebSockets than its cap.

pub(crate) mod hog;
