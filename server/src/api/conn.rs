//! Serving one listener (SPEC §1.9, slow and idle connections): the accept loop and, per
//! connection, hyper's HTTP/1.1 with upgrades under a watchdog.
//!
//! hyper's own header-read timeout needs a timer, which `axum::serve` does not give it (so it is
//! silently off), and it restarts on every idle keep-alive connection, so the idle and header
//! limits could not differ. The watchdog here keeps both on the injected clock instead: a
//! connection that has not sent a whole request header `HTTP_HEADER_TIMEOUT_MS` after it was
//! accepted (or after the first byte of its next request) is closed, and so is one that stays idle
//! between requests for `HTTP_IDLE_TIMEOUT_MS`. An upgraded connection is the WebSocket's: its
//! own heartbeat and idle timer take over.
//!
//! On the WebSocket ports every accepted socket takes a place under `SPIRAL_MAX_CONNECTIONS` at
//! once ([`Place`]); its handshake takes that place over, so a socket holds one place from accept
//! to close whatever it does. A socket accepted with the cap full holds none: its handshake is
//! refused with 503, and at most `max_connections` such sockets wait for their answer — further
//! ones are closed at once.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::serve::Listener;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Notify, watch};

use super::{AppState, Connections, Place};
use crate::clock::{Instant, SharedClock};
use crate::sync::{self, AtomicBool, Mutex, Ordering};

/// Whether a listener's sockets count towards `SPIRAL_MAX_CONNECTIONS` (the WebSocket ports).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counted {
    Yes,
    No,
}

/// Where a connection is between requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for a request header to be complete, since then.
    Head(Instant),
    /// A request is being answered; `more`: bytes of the next one came meanwhile.
    Busy { more: bool },
    /// Answered; nothing more since then.
    Idle(Instant),
    /// Upgraded to a WebSocket: no HTTP limits apply.
    Upgraded,
}

/// One connection's phase, shared by its socket (reads), its service (requests and answers) and
/// its watchdog.
#[derive(Debug)]
struct Watch {
    clock: SharedClock,
    phase: Mutex<Phase>,
    /// Set with `Upgraded`: a read after the upgrade costs no lock.
    upgraded: AtomicBool,
    changed: Notify,
}

impl Watch {
    fn new(clock: SharedClock) -> Self {
        let now = clock.now();
        Watch {
            clock,
            phase: Mutex::new(Phase::Head(now)),
            upgraded: AtomicBool::new(false),
            changed: Notify::new(),
        }
    }

    fn set(&self, f: impl FnOnce(Phase, Instant) -> Phase) {
        let mut p = sync::lock(&self.phase);
        let next = f(*p, self.clock.now());
        if next != *p {
            *p = next;
            if next == Phase::Upgraded {
                self.upgraded.store(true, Ordering::Release);
            }
            drop(p);
            self.changed.notify_one();
        }
    }

    /// Bytes came in: an idle connection starts its next request header.
    fn read(&self) {
        if self.upgraded.load(Ordering::Acquire) {
            return;
        }
        self.set(|p, now| match p {
            Phase::Idle(_) => Phase::Head(now),
            Phase::Busy { .. } => Phase::Busy { more: true },
            p => p,
        });
    }

    /// A whole request header arrived (hyper called the service).
    fn request(&self) {
        self.set(|p, _| match p {
            Phase::Upgraded => p,
            _ => Phase::Busy { more: false },
        });
    }

    /// The answer went out (its body is done or dropped).
    fn answered(&self) {
        self.set(|p, now| match p {
            Phase::Busy { more: true } => Phase::Head(now),
            Phase::Busy { more: false } => Phase::Idle(now),
            p => p,
        });
    }

    fn upgraded(&self) {
        self.set(|_, _| Phase::Upgraded);
    }

    /// Resolves when the connection has been in `Head` for `header` or in `Idle` for `idle`:
    /// which limit it broke.
    async fn expired(&self, header: Duration, idle: Duration) -> Limit {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let phase = *sync::lock(&self.phase);
            let due = match phase {
                Phase::Head(t) => Some((t + header, Limit::Header)),
                Phase::Idle(t) => Some((t + idle, Limit::Idle)),
                Phase::Busy { .. } | Phase::Upgraded => None,
            };
            match due {
                None => notified.await,
                Some((at, limit)) => {
                    // `biased`: an unbiased select picks among ready branches with tokio's
                    // per-thread RNG, which no seed controls (SPEC §2).
                    tokio::select! {
                        biased;
                        () = tokio::time::sleep_until(at) => {
                            if *sync::lock(&self.phase) == phase {
                                return limit;
                            }
                        }
                        () = &mut notified => {}
                    }
                }
            }
        }
    }
}

/// Which limit closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Limit {
    Header,
    Idle,
}

/// How long an upgraded socket lingers after the server is done with it (see [`Watched`]).
const LINGER: Duration = Duration::from_secs(2);

/// A connection's socket: it tells the connection's [`Watch`] when bytes come in, and closes an
/// upgraded connection the way a lingering close does.
///
/// Dropped with input the server never read — the rest of a frame refused on its header for
/// being over the size limit, frames that crossed the server's close frame — a socket is reset
/// by the kernel, and the reset fails the peer's write of the frame it is still sending before it
/// could read the close frame that explains why. So an upgraded socket's last owner hands it to a
/// task that sends FIN (the close is final) and then reads and discards until the peer closes
/// too, for at most [`LINGER`] and `linger_bytes` (four times `SPIRAL_MAX_MESSAGE_SIZE` + 1 MiB:
/// the rest of any frame a client could mean); a peer that keeps sending past either is reset
/// after all. Plain HTTP connections close at once: a slow or idle one is cut on purpose.
struct Watched<I>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    /// Taken by the lingering task when the socket is dropped.
    io: Option<I>,
    watch: Arc<Watch>,
    linger_bytes: usize,
}

impl<I> Watched<I>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    fn new(io: I, watch: Arc<Watch>, linger_bytes: usize) -> Self {
        Watched {
            io: Some(io),
            watch,
            linger_bytes,
        }
    }

    fn io(&mut self) -> std::io::Result<&mut I> {
        self.io
            .as_mut()
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotConnected))
    }

    /// FIN, then discard input until the peer's FIN, `max_bytes` or [`LINGER`].
    async fn linger(mut io: I, max_bytes: usize) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let _ = tokio::time::timeout(LINGER, async {
            let _ = io.shutdown().await;
            let mut scratch = vec![0u8; 16 * 1024];
            let mut left = max_bytes;
            while let Ok(n @ 1..) = io.read(&mut scratch).await {
                crate::reached!("ws.close_lingered");
                let Some(rest) = left.checked_sub(n) else {
                    break;
                };
                left = rest;
            }
        })
        .await;
    }
}

impl<I> Drop for Watched<I>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    fn drop(&mut self) {
        // Planted: dropped at once, unread input and all, as before the close lingered.
        if !self.watch.upgraded.load(Ordering::Acquire) || crate::planted!(WsNoLinger) {
            return;
        }
        let (Some(io), Ok(rt)) = (self.io.take(), tokio::runtime::Handle::try_current()) else {
            return;
        };
        rt.spawn(Self::linger(io, self.linger_bytes));
    }
}

impl<I> AsyncRead for Watched<I>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(self.io()?).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.watch.read();
        }
        r
    }
}

impl<I> AsyncWrite for Watched<I>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(self.io()?).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(self.io()?).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.as_ref().is_some_and(I::is_write_vectored)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(self.io()?).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(self.io()?).poll_shutdown(cx)
    }
}

/// An answer's body that tells the [`Watch`] when it is done (sent, or dropped with the
/// connection).
struct Tracked {
    body: Body,
    watch: Arc<Watch>,
}

impl hyper::body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.watch.answered();
    }
}

/// Serve `router` on `listener` until `stop` turns true; then stop accepting, let every
/// connection finish its request in flight, and return once they have.
pub async fn serve<L>(
    mut listener: L,
    router: Router,
    state: AppState,
    counted: Counted,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()>
where
    L: Listener,
    L::Addr: std::fmt::Debug,
{
    // Every connection task holds a receiver; `closed()` resolves once all are gone.
    let (alive_tx, alive_rx) = watch::channel(());
    loop {
        let (io, addr) = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break,
            conn = listener.accept() => conn,
        };
        tracing::trace!(?addr, "accepted");
        // Planted: as before, sockets count only once upgraded.
        let counted = if crate::planted!(NoHeaderTimeout) {
            Counted::No
        } else {
            counted
        };
        let place = match counted {
            Counted::No => None,
            Counted::Yes => match Connections::reserve(&state) {
                Some(slot) => Some(Place::holding(slot)),
                // The cap is full: the handshake will be refused with 503 — if not too many
                // refusals already wait for their answer.
                None => match Connections::refusing(&state) {
                    Some(guard) => Some(Place::refusing(guard)),
                    None => {
                        crate::reached!("conn.accept_refused");
                        drop(io);
                        continue;
                    }
                },
            },
        };
        tokio::spawn(connection(
            io,
            router.clone(),
            state.clone(),
            place,
            stop.clone(),
            alive_rx.clone(),
        ));
    }
    drop(alive_rx);
    drop(listener);
    alive_tx.closed().await;
    Ok(())
}

/// One connection, from accept to close.
async fn connection<I>(
    io: I,
    router: Router,
    st: AppState,
    place: Option<Place>,
    mut stop: watch::Receiver<bool>,
    _alive: watch::Receiver<()>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let watch = Arc::new(Watch::new(st.clock.clone()));
    let linger_bytes = st.cfg.max_message_size.saturating_mul(4) + 1024 * 1024;
    let io = TokioIo::new(Watched::new(io, watch.clone(), linger_bytes));
    let router = TowerToHyperService::new(router);
    let service = {
        let watch = watch.clone();
        let place = place.clone();
        hyper::service::service_fn(move |mut req: Request<Incoming>| {
            watch.request();
            if let Some(p) = &place {
                req.extensions_mut().insert(p.clone());
            }
            let answer = hyper::service::Service::call(&router, req);
            let watch = watch.clone();
            let counted = place.is_some();
            async move {
                let mut res: Response = answer.await?;
                if res.status() == StatusCode::SWITCHING_PROTOCOLS {
                    watch.upgraded();
                } else if counted {
                    // A WebSocket port serves handshakes only: a refused one ends its socket,
                    // so a socket never lingers there without its place.
                    res.headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
                Ok::<_, std::convert::Infallible>(res.map(|body| Tracked {
                    body,
                    watch: watch.clone(),
                }))
            }
        })
    };
    let conn = hyper::server::conn::http1::Builder::new()
        .serve_connection(io, service)
        .with_upgrades();
    tokio::pin!(conn);
    let header = Duration::from_millis(st.cfg.http_header_timeout_ms);
    let idle = Duration::from_millis(st.cfg.http_idle_timeout_ms);
    let limits = async {
        if crate::planted!(NoHeaderTimeout) {
            // Planted: no limit at all, as when hyper had no timer.
            return std::future::pending().await;
        }
        watch.expired(header, idle).await
    };
    tokio::pin!(limits);
    let mut stopping = false;
    loop {
        tokio::select! {
            biased;
            res = conn.as_mut() => {
                if let Err(e) = res {
                    tracing::trace!(error = %e, "connection ended");
                }
                break;
            }
            limit = &mut limits => {
                let reason = match limit {
                    Limit::Header => {
                        crate::reached!("http.header_timeout");
                        "header"
                    }
                    Limit::Idle => {
                        crate::reached!("http.idle_timeout");
                        "idle"
                    }
                };
                st.metrics.http_connection_timeouts.inc(&[reason]);
                // Dropping the connection closes the socket.
                break;
            }
            _ = stop.wait_for(|s| *s), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
    drop(place);
}
