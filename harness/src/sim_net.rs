//! The simulated network's side of the server: turmoil's listener as an `axum::serve::Listener`,
//! so `spiral_server::api::serve` runs unmodified on simulated sockets.

use std::net::SocketAddr;
use std::time::Duration;

/// A turmoil listener that axum can serve on.
pub struct SimListener(pub turmoil::net::TcpListener);

impl SimListener {
    /// Bind `0.0.0.0:port` on the current simulated host.
    pub async fn bind(port: u16) -> std::io::Result<Self> {
        turmoil::net::TcpListener::bind(("0.0.0.0", port))
            .await
            .map(SimListener)
    }
}

impl axum::serve::Listener for SimListener {
    type Io = turmoil::net::TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.0.accept().await {
                Ok(conn) => return conn,
                // As axum does for real sockets: an accept error is transient; back off briefly.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

/// Serve `state` on the current simulated host's standard ports (HTTP 3000, WebSocket commands
/// 3001, event stream 3002) until the host stops — `spiral serve`, inside the simulator.
pub async fn serve(
    state: spiral_server::api::AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listeners = spiral_server::api::Listeners {
        http: SimListener::bind(3000).await?,
        ws: SimListener::bind(3001).await?,
        stream: SimListener::bind(3002).await?,
    };
    spiral_server::api::serve(listeners, state, shutdown).await
}
