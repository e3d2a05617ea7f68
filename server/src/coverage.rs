//! Fault-path coverage markers (Antithesis' "sometimes" assertions): `reached!("journal.full")`
//! at each branch where the server handles a failure or a limit. A sweep reports, per marker,
//! how many runs reached it, and fails when a marker `scenarios/coverage/ci.toml` requires was never
//! reached — so a passing sweep also says which failure paths it exercised.
//!
//! Markers cost nothing outside the harness: without the `coverage` feature `reached!` expands
//! to nothing. With it, each hit bumps a counter of the current thread — a simulated run (every
//! host of it) executes on one thread, so [`take`] before and after a run gives that run's hits.
//!
//! Every marker is in [`CATALOG`] with what reaching it means; a test checks that the catalog and
//! the `reached!` sites in the source name the same markers.

/// Every marker: its name and the failure or limit it stands for.
pub const CATALOG: &[(&str, &str)] = &[
    // resilience
    (
        "breaker.opened",
        "consecutive storage outages opened the circuit breaker",
    ),
    (
        "breaker.probe_failed",
        "the half-open probe failed; the breaker opened again",
    ),
    (
        "breaker.closed_by_probe",
        "a half-open probe succeeded; the breaker closed",
    ),
    (
        "breaker.probe_by_init",
        "with nothing journaled to replay, an open breaker was probed with init (a boot during an outage)",
    ),
    ("storage.timeout", "a storage call ran past CB_TIMEOUT"),
    (
        "journal.appended",
        "a write was acknowledged from the degraded journal",
    ),
    (
        "journal.full",
        "a degraded write was refused: the journal is full",
    ),
    (
        "journal.in_doubt_past_bound",
        "a write-through that failed in doubt was journaled past the journal's bound",
    ),
    (
        "journal.disk_error",
        "a degraded write was refused: its journal entry could not be made durable",
    ),
    (
        "journal.in_doubt_undurable",
        "a write that failed in doubt could not be journaled durably; kept in memory to land",
    ),
    (
        "journal.replayed",
        "a journal entry reached storage on replay",
    ),
    (
        "journal.replay_failed",
        "a replay write failed; the entry stays",
    ),
    (
        "journal.loaded_at_boot",
        "a server started with a journal left by an earlier run",
    ),
    (
        "boot.waits_for_journal",
        "the engine did not open: journaled writes wait for storage",
    ),
    ("view.read", "a read was served from the degraded view"),
    (
        "view.list_refused",
        "a listing was refused: the view never loaded that prefix",
    ),
    (
        "counter.refused_degraded",
        "a counter update was refused in degraded mode",
    ),
    // engine
    ("gc.pass", "a GC pass deleted nodes"),
    (
        "gc.already_running",
        "a GC pass was asked for while one ran",
    ),
    (
        "gc.out_of_time",
        "a GC pass stopped at its time budget and gave nodes back",
    ),
    (
        "gc.batch_failed",
        "a GC delete batch failed; its nodes were given back",
    ),
    (
        "gc.second_chance",
        "GC skipped a recently read node (gc_force_skip)",
    ),
    (
        "gc.fair_share_spared",
        "GC passed over a node whose tenant holds no more than its fair share",
    ),
    (
        "engine.caller_gone",
        "an engine operation finished after its caller went away",
    ),
    (
        "collect.waits_for_gc",
        "a collect of a node GC was deleting waited for the pass's decision",
    ),
    (
        "store.priority_refused",
        "a store with a priority outside -1000..=1000 was refused",
    ),
    (
        "store.rolled_back",
        "a store's durable write failed; its reservation was rolled back",
    ),
    (
        "rebuild.corrected",
        "rebuild-stats corrected a spiral's statistics",
    ),
    // auth
    (
        "auth.bad_token",
        "a token was refused: malformed, bad signature or algorithm, missing claims",
    ),
    (
        "auth.expired",
        "a token was refused as expired or not yet valid",
    ),
    (
        "auth.edge_leeway",
        "a token past its exp but within the leeway was accepted",
    ),
    (
        "auth.replayed",
        "a handshake jti was refused as already used",
    ),
    ("auth.revoked", "a revoked token was refused"),
    (
        "auth.shared_fallback",
        "a shared-state decision fell back to the instance's memory",
    ),
    (
        "auth.fail_closed",
        "a handshake was refused: Redis could not check its token and AUTH_FAIL_CLOSED is set",
    ),
    (
        "auth.refresh_exhausted",
        "a refresh was refused: the chain reached REFRESH_MAX_LIFETIME_S",
    ),
    // rate limits
    (
        "ratelimit.ws_denied",
        "a WebSocket handshake or message was over the user's bucket",
    ),
    (
        "ratelimit.store_denied",
        "a store was over the user's store bucket",
    ),
    (
        "ratelimit.http_denied",
        "an HTTP request was over the user's bucket (or in its block)",
    ),
    (
        "ratelimit.swept",
        "the in-memory limiter held SPIRAL_RATE_LIMIT_BUCKETS buckets and swept the idle ones",
    ),
    // surfaces
    (
        "conn.cap_refused",
        "a handshake was refused at SPIRAL_MAX_CONNECTIONS",
    ),
    (
        "conn.user_cap_refused",
        "a handshake was refused at SPIRAL_MAX_CONNECTIONS_PER_USER (429)",
    ),
    (
        "ws.malformed_frame",
        "a malformed command frame got an error envelope",
    ),
    ("ws.binary_frame", "a binary frame got an error envelope"),
    (
        "ws.closed_oversized",
        "a frame over SPIRAL_MAX_MESSAGE_SIZE closed the connection (1009)",
    ),
    (
        "ws.close_lingered",
        "a closed WebSocket's unread input was read and discarded (a lingering close)",
    ),
    ("ws.closed_idle", "an idle connection was closed (4000)"),
    (
        "ws.closed_silent",
        "a peer that stopped answering pings was closed (4001)",
    ),
    (
        "ws.closed_revoked",
        "a revoked subject's connection was closed (4003)",
    ),
    (
        "ws.backpressure_drop",
        "an outbound frame was dropped: the connection's queue was full",
    ),
    // slow clients (SPEC §1.9)
    (
        "http.header_timeout",
        "a connection without a whole request header by HTTP_HEADER_TIMEOUT_MS was closed",
    ),
    (
        "http.idle_timeout",
        "a keep-alive connection idle for HTTP_IDLE_TIMEOUT_MS was closed",
    ),
    (
        "conn.accept_refused",
        "a socket was closed at accept: the cap and the refusals waiting for their 503 were full",
    ),
    (
        "ws.queue_bytes_full",
        "an outbound frame was dropped: the connection's queue held WS_SEND_QUEUE_BYTES",
    ),
    (
        "ws.slow_client_closed",
        "a connection at its queue's bound for WS_SLOW_CLIENT_MS was closed (1008)",
    ),
];

#[cfg(feature = "coverage")]
thread_local! {
    static HITS: std::cell::RefCell<std::collections::BTreeMap<&'static str, u64>> =
        const { std::cell::RefCell::new(std::collections::BTreeMap::new()) };
}

/// Count one hit of `marker` on this thread (what `reached!` expands to with `coverage`).
#[cfg(feature = "coverage")]
pub fn hit(marker: &'static str) {
    HITS.with(|h| *h.borrow_mut().entry(marker).or_default() += 1);
}

/// This thread's hits since the last call, by marker; empty without the `coverage` feature.
pub fn take() -> std::collections::BTreeMap<&'static str, u64> {
    #[cfg(feature = "coverage")]
    {
        HITS.with(|h| std::mem::take(&mut *h.borrow_mut()))
    }
    #[cfg(not(feature = "coverage"))]
    {
        std::collections::BTreeMap::new()
    }
}

/// Whether markers count in this build.
pub const ENABLED: bool = cfg!(feature = "coverage");

#[cfg(test)]
#[cfg(not(spiral_loom))]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// Every source file of the server but this one: its path and text.
    fn sources() -> Vec<(std::path::PathBuf, String)> {
        let mut files = Vec::new();
        let mut dirs = vec![std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src")];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "rs")
                    && !path.ends_with("coverage.rs")
                {
                    let text = std::fs::read_to_string(&path).unwrap();
                    files.push((path, text));
                }
            }
        }
        files
    }

    /// Every `reached!("…")` in the server's source.
    fn sites() -> BTreeSet<String> {
        let mut found = BTreeSet::new();
        for (_, text) in sources() {
            // `reached!("marker")`, or `reached!(` and the marker on the next line (rustfmt's
            // layout of a long `reached!("marker" if cond)`).
            for part in text.split("reached!(").skip(1) {
                if let Some(rest) = part.trim_start().strip_prefix('"') {
                    found.insert(rest.split('"').next().unwrap().to_owned());
                }
            }
        }
        found
    }

    /// An unbiased `tokio::select!` picks among ready branches with tokio's per-thread RNG, which
    /// no seed controls: one seed would stop giving one run (SPEC §2). Only `main.rs` (signals,
    /// outside any simulation) may use one.
    #[test]
    fn every_select_in_the_server_is_biased() {
        let mut unbiased = Vec::new();
        for (path, text) in sources() {
            if path.ends_with("main.rs") {
                continue;
            }
            for (i, part) in text.split("select! {").enumerate().skip(1) {
                if !part.trim_start().starts_with("biased;") {
                    unbiased.push(format!("{} (select #{i})", path.display()));
                }
            }
        }
        assert!(unbiased.is_empty(), "unbiased select!: {unbiased:?}");
    }

    #[test]
    fn the_catalog_and_the_source_name_the_same_markers() {
        let catalog: BTreeSet<String> = CATALOG.iter().map(|(m, _)| (*m).to_owned()).collect();
        assert_eq!(catalog.len(), CATALOG.len(), "a marker is catalogued twice");
        let sites = sites();
        let missing: Vec<_> = catalog.difference(&sites).collect();
        let unknown: Vec<_> = sites.difference(&catalog).collect();
        assert!(
            missing.is_empty(),
            "catalogued but never marked: {missing:?}"
        );
        assert!(unknown.is_empty(), "marked but not catalogued: {unknown:?}");
    }
}
