//! The process's stop signals, for the binaries (`spiral`, `spiral-proxy`): nothing in the server
//! library waits on them — it takes a shutdown future instead.

/// Resolves at SIGTERM or Ctrl-C. A signal that cannot be listened for never fires (rather than
/// stopping the process at once).
pub async fn shutdown() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    // Either ends the process; which one is seen first when both arrive does not matter.
    tokio::select! {
        biased;
        () = ctrl_c => {}
        () = term => {}
    }
}
