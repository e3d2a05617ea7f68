//! One proxied connection: a supervisor that cuts it when the proxy goes down, and per direction
//! a reader (stamping each chunk with its arrival time) feeding a pump that plans each chunk's
//! delivery through the toxics of its stream and writes it out on schedule.
//!
//! Everything of one connection runs in one task, polled by `select!`: dropping the task's
//! future is the cancellation, and the sockets stay owned here so a reset can set `SO_LINGER`
//! on them before they close. The pump waits on timers, state changes and cancel-safe single
//! `write`s, so a `timeout`, `reset_peer` or `down` fires on time even mid-delivery.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use spiral_server::rng::{SplitMix64, sub_seed};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, sleep_until};

use super::log::Decision;
use super::toxic::{Stream, Toxic, ToxicKind};
use super::{Shared, Snapshot, now};

/// One read's worth: a chunk is at most this long.
const READ_BUFFER_BYTES: usize = 32 * 1024;
/// Chunks read ahead of delivery, per direction (the reader blocks beyond, pushing back on the
/// sender as a slow link would).
const CHUNKS_IN_FLIGHT: usize = 16;
/// How long the proxy tries to reach the upstream before giving up on a client.
const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How many slice sizes a `sliced` record lists.
const LOGGED_SLICES: usize = 64;

/// How a direction, or the whole connection, ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The source closed and the close was passed on: only this direction is over.
    Eof,
    /// Close the whole connection (timeout, limit_data).
    Close(&'static str),
    /// Reset both sockets (reset_peer).
    Reset,
    /// The proxy went down or was stopped.
    Cut(&'static str),
    /// A socket failed.
    Error(io::ErrorKind),
}

impl End {
    fn reason(self) -> String {
        match self {
            End::Eof => "eof".into(),
            End::Close(why) | End::Cut(why) => why.into(),
            End::Reset => "reset_peer".into(),
            End::Error(kind) => format!("error: {kind}"),
        }
    }
}

/// What a connection's parts share.
struct ConnCtx<'a> {
    shared: &'a Shared,
    id: u64,
    rng: SplitMix64,
    /// Bytes delivered, upstream and downstream.
    bytes: [AtomicU64; 2],
}

impl ConnCtx<'_> {
    fn log(&self, toxic: Option<&str>, stream: Option<Stream>, decision: Decision) {
        self.shared.log(Some(self.id), toxic, stream, decision);
    }
}

/// Serve connection `id` until it ends.
pub(super) async fn run(shared: Arc<Shared>, id: u64, mut client: TcpStream, peer: SocketAddr) {
    let mut state = shared.state.subscribe();
    let snapshot = state.borrow_and_update().clone();
    shared.log(
        Some(id),
        None,
        None,
        Decision::Accepted {
            peer: peer.to_string(),
        },
    );
    if !snapshot.enabled || snapshot.stopped {
        shared.log(Some(id), None, None, Decision::Cut);
        return;
    }
    let _ = client.set_nodelay(true);
    let connect = tokio::time::timeout(
        UPSTREAM_CONNECT_TIMEOUT,
        TcpStream::connect(snapshot.upstream),
    );
    let mut upstream = match connect.await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            unreachable_upstream(&shared, id, snapshot.upstream, e.to_string());
            return;
        }
        Err(_) => {
            unreachable_upstream(&shared, id, snapshot.upstream, "timed out".into());
            return;
        }
    };
    // Chunks keep their boundaries (slicer, latency per chunk) only if Nagle does not merge them.
    let _ = upstream.set_nodelay(true);
    let ctx = ConnCtx {
        shared: &shared,
        id,
        rng: SplitMix64::new(sub_seed(shared.seed, &format!("{}/conn/{id}", shared.name))),
        bytes: [AtomicU64::new(0), AtomicU64::new(0)],
    };
    let end = {
        let (client_read, client_write) = client.split();
        let (upstream_read, upstream_write) = upstream.split();
        let up = direction(
            &ctx,
            Stream::Upstream,
            client_read,
            upstream_write,
            shared.state.subscribe(),
        );
        let down = direction(
            &ctx,
            Stream::Downstream,
            upstream_read,
            client_write,
            shared.state.subscribe(),
        );
        supervise(&ctx, up, down, &mut state).await
    };
    if end == End::Reset {
        let _ = client.set_zero_linger();
        let _ = upstream.set_zero_linger();
    }
    drop((client, upstream));
    ctx.log(
        None,
        None,
        Decision::Closed {
            reason: end.reason(),
            upstream_bytes: ctx.bytes[0].load(Ordering::Relaxed),
            downstream_bytes: ctx.bytes[1].load(Ordering::Relaxed),
        },
    );
}

fn unreachable_upstream(shared: &Shared, id: u64, upstream: SocketAddr, error: String) {
    shared.log(
        Some(id),
        None,
        None,
        Decision::UpstreamUnreachable {
            upstream: upstream.to_string(),
            error,
        },
    );
}

/// Run both directions; the connection ends when both have closed, when either ends it, or
/// when the proxy goes down.
async fn supervise(
    ctx: &ConnCtx<'_>,
    up: impl Future<Output = End>,
    down: impl Future<Output = End>,
    state: &mut watch::Receiver<Snapshot>,
) -> End {
    tokio::pin!(up, down);
    let (mut up_open, mut down_open) = (true, true);
    let mut watching = true;
    // A change made while this connection was being set up must not be missed.
    state.mark_changed();
    while up_open || down_open {
        tokio::select! {
            end = &mut up, if up_open => match end {
                End::Eof => up_open = false,
                other => return other,
            },
            end = &mut down, if down_open => match end {
                End::Eof => down_open = false,
                other => return other,
            },
            changed = state.changed(), if watching => {
                let cut = match changed {
                    Err(_) => Some("stopped"),
                    Ok(()) => {
                        let s = state.borrow_and_update();
                        if s.stopped {
                            Some("stopped")
                        } else if !s.enabled {
                            Some("down")
                        } else {
                            None
                        }
                    }
                };
                if let Some(why) = cut {
                    ctx.log(None, None, Decision::Cut);
                    return End::Cut(why);
                }
                watching = changed.is_ok();
            },
        }
    }
    End::Eof
}

/// One direction: `src` is read into chunks, the pump delivers them to `dst`.
async fn direction(
    ctx: &ConnCtx<'_>,
    stream: Stream,
    mut src: ReadHalf<'_>,
    mut dst: WriteHalf<'_>,
    state: watch::Receiver<Snapshot>,
) -> End {
    let (tx, rx) = mpsc::channel(CHUNKS_IN_FLIGHT);
    let mut pump = Pump::new(ctx, stream);
    let pump = pump.run(rx, &mut dst, state);
    let reader = read_chunks(&mut src, tx);
    tokio::pin!(pump, reader);
    let mut reading = true;
    loop {
        tokio::select! {
            end = &mut pump => return end,
            read = &mut reader, if reading => {
                reading = false;
                if let Err(e) = read {
                    return End::Error(e.kind());
                }
            }
        }
    }
}

struct Chunk {
    data: Vec<u8>,
    arrival: Instant,
}

/// Read until end of stream; dropping `tx` at the end tells the pump.
async fn read_chunks(src: &mut ReadHalf<'_>, tx: mpsc::Sender<Chunk>) -> io::Result<()> {
    let mut buf = vec![0u8; READ_BUFFER_BYTES];
    loop {
        let n = src.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        let chunk = Chunk {
            data: buf[..n].to_vec(),
            arrival: now(),
        };
        if tx.send(chunk).await.is_err() {
            return Ok(());
        }
    }
}

/// A piece of a chunk, due at `at`.
#[derive(Debug)]
struct Piece {
    data: Vec<u8>,
    written: usize,
    at: Instant,
}

/// One toxic as this connection sees it.
struct ToxicState {
    id: u64,
    toxic: Toxic,
    /// The once-per-connection toxicity draw.
    draw: f64,
    /// Draws for values, after `draw`.
    rng: SplitMix64,
    /// When the toxic began to apply; `None` while it does not.
    since: Option<Instant>,
    /// Bytes passed (limit_data).
    passed: u64,
    /// When this toxic's stage last let data out (latency, bandwidth, slicer): stages are
    /// sequential, so nothing leaves a stage before the previous piece did.
    busy_until: Option<Instant>,
}

impl ToxicState {
    fn applies(&self) -> bool {
        self.since.is_some()
    }
}

enum Event {
    Changed(bool),
    Deadline,
    CloseDue,
    Wrote(io::Result<usize>),
    Received(Option<Chunk>),
}

struct Pump<'a> {
    ctx: &'a ConnCtx<'a>,
    stream: Stream,
    /// This stream's toxics, in the proxy's order.
    toxics: Vec<ToxicState>,
    /// Index of the next chunk of this direction.
    chunk: u64,
    pending: VecDeque<Piece>,
    /// A chunk was lost: nothing more passes.
    lost: bool,
    /// limit_data reached: end this way once `pending` is delivered.
    close_after: Option<End>,
    /// The source has closed.
    eof: bool,
    /// When the close is passed on (slow_close).
    close_at: Option<Instant>,
}

impl<'a> Pump<'a> {
    fn new(ctx: &'a ConnCtx<'a>, stream: Stream) -> Self {
        Self {
            ctx,
            stream,
            toxics: Vec::new(),
            chunk: 0,
            pending: VecDeque::new(),
            lost: false,
            close_after: None,
            eof: false,
            close_at: None,
        }
    }

    fn log(&self, toxic: &str, decision: Decision) {
        self.ctx.log(Some(toxic), Some(self.stream), decision);
    }

    async fn run(
        &mut self,
        mut rx: mpsc::Receiver<Chunk>,
        dst: &mut WriteHalf<'_>,
        mut state: watch::Receiver<Snapshot>,
    ) -> End {
        let snapshot = state.borrow_and_update().clone();
        self.refresh(&snapshot);
        let mut watching = true;
        loop {
            if self.pending.is_empty() {
                if let Some(end) = self.close_after {
                    return end;
                }
                if self.eof && self.close_at.is_none() && !self.lost && !self.blackholed() {
                    let mut delay_ms = 0;
                    if let Some((name, ms)) = self.slow_close_ms() {
                        self.log(&name, Decision::SlowClose { delay_ms: ms });
                        delay_ms = ms;
                    }
                    self.close_at = Some(now() + Duration::from_millis(delay_ms));
                }
            }
            let deadline = self.deadline();
            let can_receive =
                self.pending.is_empty() && !self.eof && !self.lost && self.close_after.is_none();
            let event = tokio::select! {
                biased;
                changed = state.changed(), if watching => Event::Changed(changed.is_ok()),
                () = sleep_opt(deadline.as_ref().map(|d| d.at)) => Event::Deadline,
                () = sleep_opt(self.close_at) => Event::CloseDue,
                written = write_front(dst, self.pending.front()) => Event::Wrote(written),
                chunk = rx.recv(), if can_receive => Event::Received(chunk),
            };
            match event {
                Event::Changed(true) => {
                    let snapshot = state.borrow_and_update().clone();
                    self.refresh(&snapshot);
                }
                // The proxy is gone; the supervisor cuts the connection.
                Event::Changed(false) => watching = false,
                Event::Deadline => {
                    if let Some(d) = deadline {
                        self.log(&d.toxic, d.decision);
                        return d.end;
                    }
                }
                Event::CloseDue => {
                    let _ = dst.shutdown().await;
                    return End::Eof;
                }
                Event::Wrote(Ok(0)) => return End::Error(io::ErrorKind::WriteZero),
                Event::Wrote(Ok(n)) => {
                    self.ctx.bytes[usize::from(self.stream == Stream::Downstream)]
                        .fetch_add(n as u64, Ordering::Relaxed);
                    if let Some(front) = self.pending.front_mut() {
                        front.written += n;
                        if front.written >= front.data.len() {
                            self.pending.pop_front();
                        }
                    }
                }
                Event::Wrote(Err(e)) => return End::Error(e.kind()),
                Event::Received(None) => self.eof = true,
                Event::Received(Some(chunk)) => self.plan(chunk),
            }
        }
    }

    /// Bring this connection's view of its stream's toxics up to date: draw toxicity for new
    /// toxics, re-judge updated ones against their stored draw, forget removed ones.
    fn refresh(&mut self, snapshot: &Snapshot) {
        let t = now();
        let mut next = Vec::new();
        for installed in snapshot
            .toxics
            .iter()
            .filter(|i| i.toxic.stream == self.stream)
        {
            let toxic = &installed.toxic;
            let known = self.toxics.iter().position(|s| s.id == installed.id);
            let (mut state, was) = match known {
                Some(pos) => {
                    let s = self.toxics.swap_remove(pos);
                    let was = Some(s.applies());
                    (s, was)
                }
                None => {
                    let mut rng = self.ctx.rng.fork(&toxic.name);
                    let draw = rng.next_f64();
                    let s = ToxicState {
                        id: installed.id,
                        toxic: toxic.clone(),
                        draw,
                        rng,
                        since: None,
                        passed: 0,
                        busy_until: None,
                    };
                    (s, None)
                }
            };
            state.toxic = toxic.clone();
            let applies = state.draw < toxic.toxicity;
            if was != Some(applies) {
                if applies {
                    state.since = Some(t);
                } else {
                    state.since = None;
                }
                let (toxicity, draw) = (toxic.toxicity, state.draw);
                let decision = if applies {
                    Decision::Applies { toxicity, draw }
                } else {
                    Decision::Skips { toxicity, draw }
                };
                self.log(&toxic.name, decision);
            }
            next.push(state);
        }
        self.toxics = next;
    }

    fn active(&self) -> impl Iterator<Item = &ToxicState> {
        self.toxics.iter().filter(|t| t.applies())
    }

    /// An applying `timeout` drops everything and holds back the close.
    fn blackholed(&self) -> bool {
        self.active()
            .any(|t| matches!(t.toxic.kind, ToxicKind::Timeout { .. }))
    }

    fn slow_close_ms(&self) -> Option<(String, u64)> {
        self.active()
            .filter_map(|t| match t.toxic.kind {
                ToxicKind::SlowClose { delay_ms } => Some((t.toxic.name.clone(), delay_ms)),
                _ => None,
            })
            .max_by_key(|(_, ms)| *ms)
    }

    /// The earliest connection-ending timer among the applying toxics.
    fn deadline(&self) -> Option<Deadline> {
        self.active()
            .filter_map(|t| {
                let since = t.since?;
                let (timeout_ms, end, decision) = match t.toxic.kind {
                    ToxicKind::Timeout { timeout_ms } if timeout_ms > 0 => (
                        timeout_ms,
                        End::Close("timeout"),
                        Decision::TimedOut { timeout_ms },
                    ),
                    ToxicKind::ResetPeer { timeout_ms } => {
                        (timeout_ms, End::Reset, Decision::Reset { timeout_ms })
                    }
                    _ => return None,
                };
                Some(Deadline {
                    at: since + Duration::from_millis(timeout_ms),
                    end,
                    toxic: t.toxic.name.clone(),
                    decision,
                })
            })
            .min_by_key(|d| d.at)
    }

    /// Plan a chunk's delivery: pass it through each applying toxic in order, each stage
    /// splitting, delaying, cutting or dropping pieces.
    fn plan(&mut self, chunk: Chunk) {
        let index = self.chunk;
        self.chunk += 1;
        let arrival = chunk.arrival;
        let mut pieces = vec![Piece {
            data: chunk.data,
            written: 0,
            at: now(),
        }];
        let (ctx, stream) = (self.ctx, self.stream);
        let log = |toxic: &str, decision| ctx.log(Some(toxic), Some(stream), decision);
        for t in self.toxics.iter_mut().filter(|t| t.since.is_some()) {
            if pieces.is_empty() {
                break;
            }
            let bytes: usize = pieces.iter().map(|p| p.data.len()).sum();
            match t.toxic.kind {
                ToxicKind::Latency {
                    latency_ms,
                    jitter_ms,
                } => {
                    let delay_ms = latency_ms.saturating_add_signed(jitter(&mut t.rng, jitter_ms));
                    log(
                        &t.toxic.name,
                        Decision::Delay {
                            chunk: index,
                            delay_ms,
                        },
                    );
                    let due = arrival + Duration::from_millis(delay_ms);
                    for p in &mut pieces {
                        p.at = p.at.max(due).max(t.busy_until.unwrap_or(p.at));
                        t.busy_until = Some(p.at);
                    }
                }
                ToxicKind::Bandwidth { rate_kb_per_s } if rate_kb_per_s > 0 => {
                    // rate KB/s = rate bytes/ms; pieces of at most 100 ms' worth.
                    let piece_bytes =
                        usize::try_from(rate_kb_per_s.saturating_mul(100)).unwrap_or(usize::MAX);
                    let mut out = Vec::new();
                    for p in pieces {
                        for part in p.data.chunks(piece_bytes.max(1)) {
                            let cost = Duration::from_nanos(
                                (part.len() as u64).saturating_mul(1_000_000) / rate_kb_per_s,
                            );
                            let at = p.at.max(t.busy_until.unwrap_or(p.at)) + cost;
                            t.busy_until = Some(at);
                            out.push(Piece {
                                data: part.to_vec(),
                                written: 0,
                                at,
                            });
                        }
                    }
                    pieces = out;
                }
                ToxicKind::Slicer {
                    average_size,
                    size_variation,
                    delay_us,
                } => {
                    let gap = Duration::from_micros(delay_us);
                    let mut sizes = Vec::new();
                    let mut out = Vec::new();
                    for p in pieces {
                        let mut at = p.at.max(t.busy_until.unwrap_or(p.at));
                        let mut off = 0;
                        while off < p.data.len() {
                            let size = slice_size(&mut t.rng, average_size, size_variation);
                            let end = off + size.min(p.data.len() - off);
                            if off > 0 {
                                at += gap;
                            }
                            sizes.push(end - off);
                            out.push(Piece {
                                data: p.data[off..end].to_vec(),
                                written: 0,
                                at,
                            });
                            off = end;
                        }
                        t.busy_until = Some(at);
                    }
                    let slices = sizes.len();
                    sizes.truncate(LOGGED_SLICES);
                    log(
                        &t.toxic.name,
                        Decision::Sliced {
                            chunk: index,
                            bytes,
                            slices,
                            sizes,
                        },
                    );
                    pieces = out;
                }
                ToxicKind::LimitData { bytes: limit } => {
                    let mut budget = limit.saturating_sub(t.passed);
                    let before = budget;
                    pieces.retain_mut(|p| {
                        if budget == 0 {
                            return false;
                        }
                        let keep = usize::try_from(budget).unwrap_or(usize::MAX);
                        p.data.truncate(keep);
                        budget -= p.data.len() as u64;
                        true
                    });
                    t.passed += before - budget;
                    if t.passed >= limit && self.close_after.is_none() {
                        log(&t.toxic.name, Decision::LimitReached { bytes: limit });
                        self.close_after = Some(End::Close("limit_data"));
                    }
                }
                ToxicKind::Loss { probability } => {
                    if t.rng.next_f64() < probability {
                        log(
                            &t.toxic.name,
                            Decision::Lost {
                                chunk: index,
                                bytes,
                            },
                        );
                        self.lost = true;
                        pieces.clear();
                    }
                }
                ToxicKind::Timeout { .. } => {
                    log(
                        &t.toxic.name,
                        Decision::Dropped {
                            chunk: index,
                            bytes,
                        },
                    );
                    pieces.clear();
                }
                ToxicKind::Bandwidth { .. }
                | ToxicKind::SlowClose { .. }
                | ToxicKind::ResetPeer { .. } => {}
            }
        }
        self.pending
            .extend(pieces.into_iter().filter(|p| !p.data.is_empty()));
    }
}

struct Deadline {
    at: Instant,
    end: End,
    toxic: String,
    decision: Decision,
}

/// Uniform in `[-jitter_ms, +jitter_ms]`.
fn jitter(rng: &mut SplitMix64, jitter_ms: u64) -> i64 {
    if jitter_ms == 0 {
        return 0;
    }
    let jitter = i64::try_from(jitter_ms).unwrap_or(i64::MAX / 2);
    let span = 2 * jitter.unsigned_abs() + 1;
    (rng.next_u64() % span) as i64 - jitter
}

/// Uniform in `[average - variation, average + variation]`, at least 1.
fn slice_size(rng: &mut SplitMix64, average: u64, variation: u64) -> usize {
    let low = average.saturating_sub(variation);
    let span = (average.saturating_add(variation) - low).saturating_add(1);
    let size = low + rng.next_u64() % span;
    usize::try_from(size.max(1)).unwrap_or(usize::MAX)
}

async fn sleep_opt(at: Option<Instant>) {
    match at {
        Some(at) => sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Wait until the front piece is due, then write what one `write` takes of it (cancel-safe: an
/// interrupted `write` wrote nothing).
async fn write_front(dst: &mut WriteHalf<'_>, piece: Option<&Piece>) -> io::Result<usize> {
    match piece {
        Some(p) => {
            sleep_until(p.at).await;
            dst.write(&p.data[p.written..]).await
        }
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slice_sizes_stay_within_average_plus_or_minus_variation_and_at_least_one() {
        let mut rng = SplitMix64::new(1);
        for _ in 0..1000 {
            let s = slice_size(&mut rng, 10, 4);
            assert!((6..=14).contains(&s), "{s}");
        }
        for _ in 0..100 {
            assert!(slice_size(&mut rng, 0, 0) == 1);
            assert!((1..=8).contains(&slice_size(&mut rng, 3, 5)));
        }
    }

    #[test]
    fn jitter_covers_both_signs_and_stays_within_bounds() {
        let mut rng = SplitMix64::new(2);
        let draws: Vec<i64> = (0..1000).map(|_| jitter(&mut rng, 5)).collect();
        assert!(draws.iter().all(|d| (-5..=5).contains(d)));
        assert!(draws.contains(&-5) && draws.contains(&5));
        assert_eq!(jitter(&mut rng, 0), 0);
    }
}
