//! Deliberately broken variants (feature `planted-bugs`, never in normal builds), chosen at run
//! time by `SPIRAL_PLANTED_BUG=<name>`. Each one exists to prove that a verification suite
//! catches the bug it is meant to catch; `.ci/run` runs every demonstration expecting failure.

use std::sync::OnceLock;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bug {
    /// Engine: a spiral's count is updated outside the critical section (lost updates).
    CountRace,
    /// Engine: GC takes candidates without marking them, so a concurrent collect removes the
    /// same node twice.
    DoubleCollect,
    /// Engine: a store is acknowledged before its durable write completes.
    AckBeforePersist,
    /// Engine: rebuild-stats skips the last node it scans.
    RebuildSkip,
    /// Memory adapter: `keys(prefix)` matches one byte too few.
    KeysPrefix,
    /// Breaker: an open breaker closes again without a successful probe.
    BreakerSkipsProbe,
    /// Degraded journal: an entry whose replay write fails is dropped instead of retried.
    JournalDrop,
    /// Auth: `jti` check and insert are not atomic across instances.
    ReplayWindow,
    /// Harness: a trace line carries an unseeded value (a randomly keyed hash), so two runs of
    /// one seed differ. Shows that the determinism check, and the CI step running it, fail.
    NondeterministicTrace,
    /// WebSocket: a frame that breaks RFC 6455 (or text that is not UTF-8) ends the connection
    /// without a close frame, as before the server chose 1002/1007 itself.
    WsSilentClose,
    /// WebSocket: a close overtakes the frames queued before it (an answer already queued is
    /// lost), as before a close waited for them.
    CloseOvertakesQueue,
    /// Engine: an operation runs in its caller's task, so a caller that goes away (a client
    /// hanging up mid-request) abandons it halfway — a GC pass stays marked running forever, a
    /// store Pending, a collect Collecting — as before operations ran detached.
    CancelUnsafe,
    /// Engine: a collect of a node a GC pass is deleting answers `not_found` at once, before the
    /// pass decides (the node may still be read, or be given back), as before collect waited.
    CollectDuringGc,
    /// WebSocket: binary frames are answered without taking a token from the message bucket, as
    /// before binary frames were rate-limited.
    BinaryUnlimited,
    /// Degraded journal: kept in process memory only, as before it was durable — a restart or a
    /// crash in degraded mode loses every write it acknowledged.
    JournalVolatile,
    /// Auth: `/auth/refresh` mints token ids from the seeded RNG alone, so every restart (and
    /// every instance with the same seed) mints the same ids again.
    JtiRepeats,
    /// Auth: every `/auth/refresh` restarts the token's lifetime, so a refresh loop keeps a
    /// token alive for ever.
    RefreshForever,
    /// Rate limits: buckets run on each instance's wall clock, so a clock that jumps ahead and
    /// back freezes every bucket it touched (on every instance sharing it) for the size of the
    /// jump.
    BucketWallClock,
    /// WebSocket: no per-user cap on open connections, as before `SPIRAL_MAX_CONNECTIONS_PER_USER`
    /// — one user can take every slot up to `SPIRAL_MAX_CONNECTIONS`.
    NoUserCap,
    /// WebSocket: binary frames and malformed text reset the idle timer, as before only commands
    /// counted as activity — a peer sending noise is never closed as idle.
    NoiseKeepsAlive,
    /// Engine: GC takes candidates in one global queue (lowest priority, oldest) whatever their
    /// tenant holds, and `priority` takes any integer, as before fair shares — one tenant storing
    /// at the top priority makes GC delete another tenant's nodes.
    GcUnfair,
    /// Auth: without Redis, used and revoked tokens live in process memory only, as before they
    /// were written through to storage — a restart forgets them.
    AuthVolatile,
    /// Stream: `insight.content` is removed only when `insight` is an object, as before arrays
    /// of insights were sanitized too.
    InsightArrayLeaks,
    /// Engine settings: no check that `SIGIL_HASH_SLICE` gives enough ids for
    /// `SPIRAL_MAX_NODES`, as before — a small slice and a large capacity spin under the lock.
    SigilSpaceUnchecked,
    /// Embedded storage: redb runs on the async worker even for a file on disk, as before its
    /// I/O moved to the blocking pool — a stalled disk freezes the worker, and no timeout fires.
    EmbeddedInline,
    /// `/ready` probes storage directly (an `init`, a write transaction on embedded storage),
    /// around the circuit breaker, as before it read through the breaker.
    ReadyBypassesBreaker,
    /// HTTP: no header or idle timeout on any listener, and sockets not yet upgraded do not count
    /// towards `SPIRAL_MAX_CONNECTIONS`, as when `axum::serve` gave hyper no timer — a socket that
    /// sends half a request header stays open for ever.
    NoHeaderTimeout,
    /// WebSocket: the outbound queue is bounded in frames only and a connection at its bound is
    /// never closed, as before `WS_SEND_QUEUE_BYTES` and `WS_SLOW_CLIENT_MS` — a peer that never
    /// reads parks up to `WS_SEND_QUEUE` large frames; each stream client gets its own copy of a
    /// frame.
    QueueUnboundedBytes,
    /// Degraded journal: a write-through that failed with an outage (it may have landed) is
    /// refused like a new write when the journal is full, as before in-doubt writes were
    /// journaled past the bound — a store answered `storage_unavailable` lands in storage after
    /// all and comes back with the next rebuild.
    JournalFullLands,
    /// Shutdown: `serve` returns once the HTTP connections have finished, without waiting for the
    /// WebSockets it asked to close, as before — the process exits under them, a command in
    /// flight goes unanswered and the peer gets no 1001.
    ShutdownAbandonsSockets,
    /// Rate limiter: its sweep asks whether a bucket is idle by deciding a request on it, which
    /// takes one from the bucket, so no bucket ever looks full: nothing is swept and the
    /// in-memory limiter grows with every user it has seen, whatever SPIRAL_RATE_LIMIT_BUCKETS.
    LimiterNeverSweeps,
    /// Degraded journal: a write whose outcome storage left in doubt, and whose journal entry the
    /// disk refused, is taken back like a new write and its caller told `timeout` — so an index
    /// forgets a write that may have landed (storage holds a node the engine does not count), as
    /// before such a write was kept in memory until it landed.
    InDoubtDropped,
    /// WebSocket: a connection is dropped with whatever input the server has not read, as
    /// before an upgraded socket's close lingered — the kernel resets it, and the peer still
    /// sending the rest of a frame refused on its header fails before it reads the 1009.
    WsNoLinger,
}

impl Bug {
    pub const ALL: [Bug; 33] = [
        Bug::CountRace,
        Bug::DoubleCollect,
        Bug::AckBeforePersist,
        Bug::RebuildSkip,
        Bug::KeysPrefix,
        Bug::BreakerSkipsProbe,
        Bug::JournalDrop,
        Bug::ReplayWindow,
        Bug::NondeterministicTrace,
        Bug::WsSilentClose,
        Bug::CloseOvertakesQueue,
        Bug::CancelUnsafe,
        Bug::CollectDuringGc,
        Bug::BinaryUnlimited,
        Bug::JournalVolatile,
        Bug::JtiRepeats,
        Bug::RefreshForever,
        Bug::BucketWallClock,
        Bug::NoUserCap,
        Bug::NoiseKeepsAlive,
        Bug::GcUnfair,
        Bug::AuthVolatile,
        Bug::InsightArrayLeaks,
        Bug::SigilSpaceUnchecked,
        Bug::EmbeddedInline,
        Bug::ReadyBypassesBreaker,
        Bug::NoHeaderTimeout,
        Bug::QueueUnboundedBytes,
        Bug::JournalFullLands,
        Bug::ShutdownAbandonsSockets,
        Bug::LimiterNeverSweeps,
        Bug::InDoubtDropped,
        Bug::WsNoLinger,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Bug::CountRace => "count-race",
            Bug::DoubleCollect => "double-collect",
            Bug::AckBeforePersist => "ack-before-persist",
            Bug::RebuildSkip => "rebuild-skip",
            Bug::KeysPrefix => "keys-prefix",
            Bug::BreakerSkipsProbe => "breaker-skips-probe",
            Bug::JournalDrop => "journal-drop",
            Bug::ReplayWindow => "replay-window",
            Bug::NondeterministicTrace => "nondeterministic-trace",
            Bug::WsSilentClose => "ws-silent-close",
            Bug::CloseOvertakesQueue => "close-overtakes-queue",
            Bug::CancelUnsafe => "cancel-unsafe",
            Bug::CollectDuringGc => "collect-during-gc",
            Bug::BinaryUnlimited => "binary-unlimited",
            Bug::JournalVolatile => "journal-volatile",
            Bug::JtiRepeats => "jti-repeats",
            Bug::RefreshForever => "refresh-forever",
            Bug::BucketWallClock => "bucket-wall-clock",
            Bug::NoUserCap => "no-user-cap",
            Bug::NoiseKeepsAlive => "noise-keeps-alive",
            Bug::GcUnfair => "gc-unfair",
            Bug::AuthVolatile => "auth-volatile",
            Bug::InsightArrayLeaks => "insight-array-leaks",
            Bug::SigilSpaceUnchecked => "sigil-space-unchecked",
            Bug::EmbeddedInline => "embedded-inline",
            Bug::ReadyBypassesBreaker => "ready-bypasses-breaker",
            Bug::NoHeaderTimeout => "no-header-timeout",
            Bug::QueueUnboundedBytes => "queue-unbounded-bytes",
            Bug::JournalFullLands => "journal-full-lands",
            Bug::ShutdownAbandonsSockets => "shutdown-abandons-sockets",
            Bug::LimiterNeverSweeps => "limiter-never-sweeps",
            Bug::InDoubtDropped => "in-doubt-dropped",
            Bug::WsNoLinger => "ws-no-linger",
        }
    }

    pub fn parse(name: &str) -> Option<Bug> {
        Bug::ALL.into_iter().find(|b| b.name() == name)
    }
}

/// The bug planted for this process, read once from `SPIRAL_PLANTED_BUG`.
pub fn current() -> Option<Bug> {
    static CURRENT: OnceLock<Option<Bug>> = OnceLock::new();
    *CURRENT.get_or_init(|| {
        let name = std::env::var("SPIRAL_PLANTED_BUG").ok()?;
        let bug = Bug::parse(name.trim());
        if bug.is_none() {
            eprintln!(
                "SPIRAL_PLANTED_BUG={name} names no planted bug; known: {:?}",
                Bug::ALL.map(Bug::name)
            );
        }
        bug
    })
}

pub fn active(bug: Bug) -> bool {
    current() == Some(bug)
}
