//! A peer that sends only noise — binary frames and malformed text, never a command — and answers
//! pings. Noise is not activity (SPEC §1.9: "every frame counts"): the idle timer must close the
//! connection with 4000 just as if the peer had sent nothing.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use super::super::net::SimWs;
use super::super::now_ms;
use crate::scenario::WorldSpec;

/// What a read window saw.
enum Window {
    /// Frames or nothing, but the connection is open.
    Open,
    /// A close frame (with its code), or the connection ended without one (`None`).
    Ended(Option<u16>),
}

/// Read for `span`: answers and pings pass (tungstenite answers the pings), a close ends it.
async fn read_for(ws: &mut SimWs, span: Duration) -> Window {
    let read = async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(f))) => return Window::Ended(f.map(|f| u16::from(f.code))),
                None | Some(Err(_)) => return Window::Ended(None),
                Some(Ok(_)) => {}
            }
        }
    };
    tokio::time::timeout(span, read)
        .await
        .unwrap_or(Window::Open)
}

/// Send noise every quarter of the idle timeout until the server closes the connection or the
/// idle timeout (plus two ping intervals and a second) has long passed; the close code, if any.
pub(crate) async fn run(ws: &mut SimWs, w: &WorldSpec) -> Option<u16> {
    let deadline = now_ms() + w.ws_idle_timeout_ms + w.ws_ping_interval_ms * 2 + 1_000;
    let gap = Duration::from_millis((w.ws_idle_timeout_ms / 4).max(1));
    let mut n = 0u32;
    while now_ms() < deadline {
        n += 1;
        let noise = if n.is_multiple_of(2) {
            Message::Binary(vec![0xde, 0xad, 0xbe, 0xef].into())
        } else {
            Message::Text(format!("{{\"id\": {n}, \"command\": ").into())
        };
        if ws.send(noise).await.is_err() {
            // Closed under us: see how.
            if let Window::Ended(code) = read_for(ws, Duration::from_secs(1)).await {
                return code;
            }
            return None;
        }
        if let Window::Ended(code) = read_for(ws, gap).await {
            return code;
        }
    }
    None
}
