//! The engine's lock-protected state: a synchronous state machine with no I/O.
//!
//! Every mutation of counts happens here, inside one critical section, so invariant 1
//! (`total == Σ spiral.node_count == live nodes`) can be checked by loom without any async
//! machinery. Storage I/O happens between two critical sections:
//!
//! - store:   `reserve_store` (Pending) → persist → `commit_store` (Live, counted) | `abort_store`
//! - collect: `begin_collect` (Collecting) → delete → `commit_collect` (gone) | `abort_collect`
//! - GC:      `gc_select` marks candidates Collecting, then the same delete → commit path.
//!
//! A Pending node is invisible to GC and to readers (its store is in flight); a Collecting node is
//! invisible to every other collector, so no node is collected twice.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::config::EngineConfig;
use crate::rng::SplitMix64;

/// The angle between successive nodes on a spiral (radians): the golden angle.
const GOLDEN_ANGLE: f64 = 2.399_963_229_728_653;
const PPM: f64 = 1_000_000.0;
/// A sigil as the engine keys it: its hex digits as an integer. Integer keys make the index,
/// the GC queue and rebuild cheap; ids are formatted back to fixed-width hex at the edge.
pub type Sigil = u64;

/// Sigils are at most 16 hex digits so they fit a `Sigil`.
pub const MAX_SIGIL_HEX: u32 = 16;

/// Parse an id of exactly `width` lowercase hex digits.
pub fn parse_sigil(id: &str, width: u32) -> Option<Sigil> {
    if id.len() != width as usize
        || !id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    Sigil::from_str_radix(id, 16).ok()
}

pub fn format_sigil(key: Sigil, width: u32) -> String {
    format!("{key:0width$x}", width = width as usize)
}

/// A tenant name, shared by all of its nodes (and by a rebuild's scan) instead of copied.
pub type Tenant = std::sync::Arc<str>;

/// Depth in parts per million: integer sums keep incremental and rebuilt averages bit-identical.
pub type DepthPpm = u32;

pub fn depth_to_ppm(depth: f64) -> DepthPpm {
    (depth.clamp(0.0, 1.0) * PPM).round() as DepthPpm
}

pub fn ppm_to_depth(ppm: DepthPpm) -> f64 {
    f64::from(ppm) / PPM
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    /// Reserved; its durable write is in flight. Not counted, not readable, not collectable.
    Pending,
    /// Durable and counted.
    Live,
    /// Counted until its delete commits; no other collector may take it.
    Collecting,
}

#[derive(Debug, Clone)]
pub struct NodeMeta {
    pub tenant: Tenant,
    pub spiral: u32,
    pub depth_ppm: DepthPpm,
    pub priority: i64,
    pub created_ms: u64,
    pub state: NodeState,
    /// Second-chance bit: set by a read, cleared when GC skips the node.
    pub referenced: bool,
    /// How many GC passes have skipped this node; at `gc_force_skip` it is collected regardless.
    pub skips: u32,
    /// Commit sequence number, so a concurrent rebuild can tell nodes committed after its scan.
    pub commit_seq: u64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Spiral {
    pub node_count: u64,
    pub depth_sum_ppm: u64,
    /// Operation number at which this spiral last received a node (for the age term).
    pub last_used_op: u64,
}

/// Public, derived statistics of one spiral.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpiralStats {
    pub id: String,
    pub node_count: u64,
    pub avg_depth: f64,
    pub radius: f64,
    pub turns: f64,
}

pub fn spiral_id(index: u32) -> String {
    format!("s{index:02}")
}

pub fn parse_spiral_id(id: &str) -> Option<u32> {
    id.strip_prefix('s')?.parse().ok()
}

impl Spiral {
    pub fn stats(&self, index: u32, spiral_turns: u32) -> SpiralStats {
        let avg_depth = if self.node_count == 0 {
            0.0
        } else {
            self.depth_sum_ppm as f64 / self.node_count as f64 / PPM
        };
        let n = self.node_count as f64;
        SpiralStats {
            id: spiral_id(index),
            node_count: self.node_count,
            avg_depth,
            radius: n.sqrt() * (0.5 + avg_depth),
            turns: (n * GOLDEN_ANGLE / std::f64::consts::TAU).min(f64::from(spiral_turns)),
        }
    }
}

/// The harmonic of spiral `i`: its position on the unit circle, spread by the golden ratio.
pub fn spiral_harmonic(i: u32) -> f64 {
    (f64::from(i) * 0.618_033_988_749_894_9).fract()
}

fn circular_distance(a: f64, b: f64) -> f64 {
    let d = (a - b).abs();
    d.min(1.0 - d) * 2.0
}

/// What `reserve_store` hands back to the caller who will persist the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub id: String,
    pub spiral: u32,
}

/// What made a GC pass due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GcTrigger {
    Interval,
    Capacity,
}

impl GcTrigger {
    pub fn reason(self) -> &'static str {
        match self {
            GcTrigger::Interval => "interval",
            GcTrigger::Capacity => "capacity",
        }
    }
}

/// Why a GC pass picked what it picked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcSelection {
    pub ids: Vec<String>,
    /// Candidates spared this pass because they were read since the last pass.
    pub skipped: u32,
    /// Nodes above capacity before this pass.
    pub excess: u64,
}

/// A node as found in storage by a rebuild scan.
#[derive(Debug, Clone)]
pub struct ScannedNode {
    pub key: Sigil,
    pub tenant: Tenant,
    pub spiral: u32,
    pub depth_ppm: DepthPpm,
    pub priority: i64,
    pub created_ms: u64,
}

/// One corrected spiral: its statistics before and after the rebuild.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Correction {
    pub before: SpiralStats,
    pub after: SpiralStats,
}

/// An invariant of SPEC §1.5 found broken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation(pub String);

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A rebuild in progress: collections that commit while its scan runs must not be resurrected.
#[derive(Debug, Default)]
struct RebuildWindow {
    start_seq: u64,
    collected: BTreeSet<Sigil>,
}

#[derive(Debug)]
pub struct Core {
    cfg: EngineConfig,
    rng: SplitMix64,
    /// Boot generation (a storage counter bumped at every open), hashed into every sigil so an
    /// id is never handed out again after a restart, even though the RNG replays its stream.
    generation: i64,
    spirals: Vec<Spiral>,
    nodes: BTreeMap<Sigil, NodeMeta>,
    /// GC order: lowest priority first, then oldest, then id (a total, deterministic order).
    gc_queue: BTreeSet<(i64, u64, Sigil)>,
    total: u64,
    op: u64,
    ops_since_gc: u64,
    commit_seq: u64,
    links: BTreeSet<(u32, u32)>,
    rebuild: Option<RebuildWindow>,
    /// Commits of a collect for a node that was not being collected: invariant 3 broken.
    double_collects: u64,
}

impl Core {
    pub fn new(cfg: EngineConfig, seed: u64) -> Self {
        let spirals = vec![Spiral::default(); cfg.max_spirals as usize];
        Self {
            cfg,
            rng: SplitMix64::new(seed),
            generation: 0,
            spirals,
            nodes: BTreeMap::new(),
            gc_queue: BTreeSet::new(),
            total: 0,
            op: 0,
            ops_since_gc: 0,
            commit_seq: 0,
            links: BTreeSet::new(),
            rebuild: None,
            double_collects: 0,
        }
    }

    pub fn set_generation(&mut self, generation: i64) {
        self.generation = generation;
    }

    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    fn key(&self, id: &str) -> Option<Sigil> {
        parse_sigil(id, self.cfg.sigil_hash_slice)
    }

    /// The tenant a node belongs to, while the core knows the node.
    pub fn tenant_of(&self, id: &str) -> Option<Tenant> {
        let key = self.key(id)?;
        self.nodes.get(&key).map(|n| n.tenant.clone())
    }

    fn id(&self, key: Sigil) -> String {
        format_sigil(key, self.cfg.sigil_hash_slice)
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    pub fn node_state(&self, id: &str) -> Option<NodeState> {
        self.nodes.get(&self.key(id)?).map(|n| n.state)
    }

    pub fn links(&self) -> &BTreeSet<(u32, u32)> {
        &self.links
    }

    /// Pick the spiral for a node of this depth: the lowest weighted score of harmonic distance,
    /// load and (negatively) age, ties to the lowest index.
    fn select_spiral(&self, depth_ppm: DepthPpm) -> u32 {
        let depth = ppm_to_depth(depth_ppm);
        let capacity = (self.cfg.max_nodes as f64 / self.spirals.len().max(1) as f64).max(1.0);
        let horizon = self.spirals.len().max(1) as f64;
        let mut best = (f64::INFINITY, 0u32);
        for (i, s) in self.spirals.iter().enumerate() {
            let i = i as u32;
            let distance = circular_distance(spiral_harmonic(i), depth);
            let load = s.node_count as f64 / capacity;
            let age = ((self.op - s.last_used_op.min(self.op)) as f64 / horizon).min(1.0);
            let score = self.cfg.hd_weight_distance * distance + self.cfg.hd_weight_load * load
                - self.cfg.hd_weight_age * age;
            if score < best.0 {
                best = (score, i);
            }
        }
        best.1
    }

    fn sigil(&mut self, tenant: &str, content_digest: &[u8; 32]) -> Sigil {
        let salt = self.rng.next_u64();
        let shift = 64 - 4 * self.cfg.sigil_hash_slice.min(MAX_SIGIL_HEX);
        for attempt in 0u32.. {
            let mut h = Sha256::new();
            h.update(salt.to_le_bytes());
            h.update(self.generation.to_le_bytes());
            h.update(self.op.to_le_bytes());
            h.update(attempt.to_le_bytes());
            h.update(tenant.as_bytes());
            h.update(content_digest);
            let digest = h.finalize();
            let mut first = [0u8; 8];
            first.copy_from_slice(&digest[..8]);
            // The first `sigil_hash_slice` hex digits of the hash.
            let key = u64::from_be_bytes(first).checked_shr(shift).unwrap_or(0);
            // Collision check: a sigil names one node for its whole life.
            if !self.nodes.contains_key(&key) {
                return key;
            }
        }
        unreachable!("an unbounded attempt counter always finds a free sigil")
    }

    /// Step 1 of a store: choose a sigil and a spiral and hold them as Pending.
    pub fn reserve_store(
        &mut self,
        tenant: &str,
        depth_ppm: DepthPpm,
        priority: i64,
        created_ms: u64,
        content_digest: &[u8; 32],
    ) -> Reservation {
        self.op += 1;
        let key = self.sigil(tenant, content_digest);
        let spiral = self.select_spiral(depth_ppm);
        self.spirals[spiral as usize].last_used_op = self.op;
        self.nodes.insert(
            key,
            NodeMeta {
                tenant: Tenant::from(tenant),
                spiral,
                depth_ppm,
                priority,
                created_ms,
                state: NodeState::Pending,
                referenced: false,
                skips: 0,
                commit_seq: 0,
            },
        );
        Reservation {
            id: self.id(key),
            spiral,
        }
    }

    /// Step 3 of a store: the node is durable; count it. Returns false if the reservation is gone
    /// (which only a bug can cause).
    pub fn commit_store(&mut self, id: &str) -> bool {
        self.commit_seq += 1;
        let seq = self.commit_seq;
        let Some(key) = self.key(id) else {
            return false;
        };
        let Some(node) = self.nodes.get_mut(&key) else {
            return false;
        };
        if node.state != NodeState::Pending {
            return false;
        }
        node.state = NodeState::Live;
        node.commit_seq = seq;
        let (spiral, depth) = (node.spiral, node.depth_ppm);
        self.gc_queue.insert((node.priority, node.created_ms, key));
        self.count_in(spiral, depth);
        self.ops_since_gc += 1;
        if self.cfg.enable_quantum_links {
            self.maybe_link(spiral);
        }
        true
    }

    /// The counting half of `commit_store`, split out so the planted `count-race` bug can run it
    /// in a separate critical section.
    pub fn count_in(&mut self, spiral: u32, depth_ppm: DepthPpm) {
        let s = &mut self.spirals[spiral as usize];
        s.node_count += 1;
        s.depth_sum_ppm += u64::from(depth_ppm);
        self.total += 1;
    }

    /// Planted `count-race`: read the counts (first critical section)…
    pub fn read_counts(&self, spiral: u32) -> (u64, u64, u64) {
        let s = &self.spirals[spiral as usize];
        (s.node_count, s.depth_sum_ppm, self.total)
    }

    /// …and write them back incremented in a second one: a lost update when two commits interleave.
    pub fn write_counts(&mut self, spiral: u32, depth_ppm: DepthPpm, read: (u64, u64, u64)) {
        let s = &mut self.spirals[spiral as usize];
        s.node_count = read.0 + 1;
        s.depth_sum_ppm = read.1 + u64::from(depth_ppm);
        self.total = read.2 + 1;
    }

    /// Commit a store without counting it (the caller counts it separately). Planted bugs only.
    pub fn commit_store_uncounted(&mut self, id: &str) -> Option<(u32, DepthPpm)> {
        self.commit_seq += 1;
        let seq = self.commit_seq;
        let key = self.key(id)?;
        let node = self.nodes.get_mut(&key)?;
        node.state = NodeState::Live;
        node.commit_seq = seq;
        let out = (node.spiral, node.depth_ppm);
        self.gc_queue.insert((node.priority, node.created_ms, key));
        self.ops_since_gc += 1;
        Some(out)
    }

    fn maybe_link(&mut self, spiral: u32) {
        let h = spiral_harmonic(spiral);
        for other in 0..self.spirals.len() as u32 {
            if other == spiral || self.spirals[other as usize].node_count == 0 {
                continue;
            }
            let pair = (spiral.min(other), spiral.max(other));
            if self.links.contains(&pair) || circular_distance(h, spiral_harmonic(other)) > 0.1 {
                continue;
            }
            if self.rng.next_f64() < 0.5 {
                self.links.insert(pair);
            }
        }
    }

    /// The durable write failed: forget the reservation.
    pub fn abort_store(&mut self, id: &str) {
        let Some(key) = self.key(id) else { return };
        if self
            .nodes
            .get(&key)
            .is_some_and(|n| n.state == NodeState::Pending)
        {
            self.nodes.remove(&key);
        }
    }

    /// A reader looks at a node: visible only if committed and owned by `tenant`.
    /// Marks it referenced (a second chance against GC).
    pub fn touch(&mut self, tenant: &str, id: &str) -> bool {
        let Some(key) = self.key(id) else {
            return false;
        };
        match self.nodes.get_mut(&key) {
            Some(n) if &*n.tenant == tenant && n.state != NodeState::Pending => {
                n.referenced = true;
                true
            }
            _ => false,
        }
    }

    /// Step 1 of a collect: take the node so no other collector can.
    pub fn begin_collect(&mut self, tenant: &str, id: &str) -> bool {
        self.op += 1;
        let Some(key) = self.key(id) else {
            return false;
        };
        match self.nodes.get_mut(&key) {
            Some(n) if &*n.tenant == tenant && n.state == NodeState::Live => {
                n.state = NodeState::Collecting;
                true
            }
            _ => false,
        }
    }

    /// Step 3 of a collect or GC: the delete is durable; uncount the node.
    pub fn commit_collect(&mut self, id: &str) -> bool {
        let key = self.key(id).unwrap_or(Sigil::MAX);
        let taken = self
            .nodes
            .get(&key)
            .is_some_and(|n| n.state == NodeState::Collecting);
        if !taken {
            // Removing what nobody took means two collectors raced for one node.
            self.double_collects += 1;
            return false;
        }
        self.remove_counted(key);
        self.ops_since_gc += 1;
        if let Some(w) = self.rebuild.as_mut() {
            w.collected.insert(key);
        }
        true
    }

    fn remove_counted(&mut self, key: Sigil) {
        if let Some(n) = self.nodes.remove(&key) {
            self.gc_queue.remove(&(n.priority, n.created_ms, key));
            let s = &mut self.spirals[n.spiral as usize];
            s.node_count = s.node_count.saturating_sub(1);
            s.depth_sum_ppm = s.depth_sum_ppm.saturating_sub(u64::from(n.depth_ppm));
            self.total = self.total.saturating_sub(1);
        }
    }

    /// The delete failed: the node stays.
    pub fn abort_collect(&mut self, id: &str) {
        let Some(key) = self.key(id) else { return };
        if let Some(n) = self
            .nodes
            .get_mut(&key)
            .filter(|n| n.state == NodeState::Collecting)
        {
            n.state = NodeState::Live;
        }
    }

    /// Whether a GC pass is due, and why: every `gc_trigger_interval` operations, or when over
    /// capacity.
    pub fn gc_due(&self) -> Option<GcTrigger> {
        if self.ops_since_gc >= self.cfg.gc_trigger_interval {
            Some(GcTrigger::Interval)
        } else if self.total > self.cfg.max_nodes {
            Some(GcTrigger::Capacity)
        } else {
            None
        }
    }

    /// Nodes GC still owes: how far over capacity the engine is.
    pub fn gc_backlog(&self) -> u64 {
        self.total.saturating_sub(self.cfg.max_nodes)
    }

    /// Step 1 of a GC pass: pick at most `limit` candidates in queue order (lowest priority,
    /// oldest), enough to bring the engine back to capacity, and take them. A node read since
    /// it was last considered is skipped (second chance) unless it has been skipped
    /// `gc_force_skip` times already.
    pub fn gc_select(&mut self, limit: usize) -> GcSelection {
        self.ops_since_gc = 0;
        let excess = self.gc_backlog();
        let want = (excess as usize).min(limit);
        let mut sel = GcSelection {
            excess,
            ..GcSelection::default()
        };
        if want == 0 {
            return sel;
        }
        let force = self.cfg.gc_force_skip;
        let take_without_marking = crate::planted!(DoubleCollect);
        let width = self.cfg.sigil_hash_slice;
        for &(_, _, key) in self.gc_queue.iter() {
            if sel.ids.len() >= want {
                break;
            }
            let Some(n) = self.nodes.get_mut(&key) else {
                continue;
            };
            if n.state != NodeState::Live {
                continue;
            }
            if n.referenced && n.skips < force {
                n.referenced = false;
                n.skips += 1;
                sel.skipped += 1;
                continue;
            }
            if !take_without_marking {
                n.state = NodeState::Collecting;
            }
            sel.ids.push(format_sigil(key, width));
        }
        sel
    }

    /// Planted `double-collect`: GC took a node without marking it; take it now, whoever has it.
    pub fn force_collecting(&mut self, id: &str) -> bool {
        let Some(key) = self.key(id) else {
            return false;
        };
        match self.nodes.get_mut(&key) {
            Some(n) if n.state != NodeState::Pending => {
                n.state = NodeState::Collecting;
                true
            }
            _ => false,
        }
    }

    /// Current statistics of every spiral that holds nodes, in id order.
    pub fn spiral_stats(&self) -> Vec<SpiralStats> {
        self.spirals
            .iter()
            .enumerate()
            .filter(|(_, s)| s.node_count > 0)
            .map(|(i, s)| s.stats(i as u32, self.cfg.spiral_turns))
            .collect()
    }

    /// Statistics of every spiral, empty ones included, for snapshots.
    pub fn all_spiral_stats(&self) -> Vec<SpiralStats> {
        self.spirals
            .iter()
            .enumerate()
            .map(|(i, s)| s.stats(i as u32, self.cfg.spiral_turns))
            .collect()
    }

    /// Load counts from a meta snapshot (at boot, before the verifying rebuild).
    pub fn load_counts(&mut self, spirals: &[(u32, u64, u64)]) {
        for s in self.spirals.iter_mut() {
            *s = Spiral::default();
        }
        let mut total = 0;
        for &(i, count, depth_sum) in spirals {
            if let Some(s) = self.spirals.get_mut(i as usize) {
                s.node_count = count;
                s.depth_sum_ppm = depth_sum;
                total += count;
            }
        }
        self.total = total;
    }

    pub fn raw_counts(&self) -> Vec<(u32, u64, u64)> {
        self.spirals
            .iter()
            .enumerate()
            .map(|(i, s)| (i as u32, s.node_count, s.depth_sum_ppm))
            .collect()
    }

    /// Start a rebuild: remember the commit sequence its scan starts after. `None` if one is
    /// already running.
    pub fn begin_rebuild(&mut self) -> Option<u64> {
        if self.rebuild.is_some() {
            return None;
        }
        self.rebuild = Some(RebuildWindow {
            start_seq: self.commit_seq,
            collected: BTreeSet::new(),
        });
        Some(self.commit_seq)
    }

    pub fn cancel_rebuild(&mut self) {
        self.rebuild = None;
    }

    /// Finish a rebuild: reconcile the index with what the scan found in storage (storage is the
    /// truth), recompute every spiral from the nodes, and report each spiral whose statistics
    /// changed. Nodes whose store or collect raced the scan keep the state their own protocol
    /// gives them.
    pub fn apply_rebuild(&mut self, mut scanned: Vec<ScannedNode>) -> Vec<Correction> {
        let window = self.rebuild.take().unwrap_or_default();
        let before = self.all_spiral_stats();
        // Storage lists keys in order, so this is a merge of two sorted sequences: one pass,
        // sequential access, no per-node lookups (sorting sorted input is linear).
        scanned.sort_unstable_by_key(|s| s.key);
        let spirals = self.spirals.len();
        let usable =
            |s: &ScannedNode| !window.collected.contains(&s.key) && (s.spiral as usize) < spirals;
        let mut fresh: Vec<ScannedNode> = Vec::new();
        let mut lost: Vec<Sigil> = Vec::new();
        let mut scan = scanned.into_iter().peekable();
        for (&key, n) in self.nodes.iter_mut() {
            while let Some(s) = scan.next_if(|s| s.key < key) {
                if usable(&s) {
                    fresh.push(s);
                }
            }
            match scan.next_if(|s| s.key == key).filter(|s| usable(s)) {
                Some(s) => {
                    // Storage decides where a node lives and what it weighs.
                    n.spiral = s.spiral;
                    n.depth_ppm = s.depth_ppm;
                    if (n.priority, n.created_ms) != (s.priority, s.created_ms) {
                        let old = (n.priority, n.created_ms, key);
                        n.priority = s.priority;
                        n.created_ms = s.created_ms;
                        if self.gc_queue.remove(&old) {
                            self.gc_queue.insert((s.priority, s.created_ms, key));
                        }
                    }
                }
                // Counted, committed before the scan began, and not in storage: gone.
                None if n.state == NodeState::Live && n.commit_seq <= window.start_seq => {
                    lost.push(key)
                }
                None => {}
            }
        }
        fresh.extend(scan.filter(|s| usable(s)));
        for s in fresh {
            self.commit_seq += 1;
            self.gc_queue.insert((s.priority, s.created_ms, s.key));
            self.nodes.insert(
                s.key,
                NodeMeta {
                    tenant: s.tenant,
                    spiral: s.spiral,
                    depth_ppm: s.depth_ppm,
                    priority: s.priority,
                    created_ms: s.created_ms,
                    state: NodeState::Live,
                    referenced: false,
                    skips: 0,
                    commit_seq: self.commit_seq,
                },
            );
        }
        for key in lost {
            if let Some(n) = self.nodes.remove(&key) {
                self.gc_queue.remove(&(n.priority, n.created_ms, key));
            }
        }
        // Recount from the nodes themselves.
        let mut fresh = vec![Spiral::default(); self.spirals.len()];
        let mut total = 0;
        for n in self
            .nodes
            .values()
            .filter(|n| n.state != NodeState::Pending)
        {
            let s = &mut fresh[n.spiral as usize];
            s.node_count += 1;
            s.depth_sum_ppm += u64::from(n.depth_ppm);
            total += 1;
        }
        for (old, new) in self.spirals.iter().zip(fresh.iter_mut()) {
            new.last_used_op = old.last_used_op;
        }
        self.spirals = fresh;
        self.total = total;
        let after = self.all_spiral_stats();
        before
            .into_iter()
            .zip(after)
            .filter(|(b, a)| b != a)
            .map(|(before, after)| Correction { before, after })
            .collect()
    }

    /// Invariants 1 and 3 of SPEC §1.5 as far as the index can tell (storage is checked by the
    /// async engine).
    pub fn check(&self) -> Result<(), Violation> {
        let sum: u64 = self.spirals.iter().map(|s| s.node_count).sum();
        let counted = self
            .nodes
            .values()
            .filter(|n| n.state != NodeState::Pending)
            .count() as u64;
        if self.total != sum || sum != counted {
            return Err(Violation(format!(
                "invariant 1: totalMemories={} Σ spiral.nodeCount={} counted nodes={}",
                self.total, sum, counted
            )));
        }
        for (i, s) in self.spirals.iter().enumerate() {
            let (n, d) = self
                .nodes
                .values()
                .filter(|n| n.state != NodeState::Pending && n.spiral as usize == i)
                .fold((0u64, 0u64), |(n, d), node| {
                    (n + 1, d + u64::from(node.depth_ppm))
                });
            if s.node_count != n || s.depth_sum_ppm != d {
                return Err(Violation(format!(
                    "invariant 1: spiral {} counts {} nodes (depth sum {}) but holds {} (depth sum {})",
                    spiral_id(i as u32),
                    s.node_count,
                    s.depth_sum_ppm,
                    n,
                    d
                )));
            }
        }
        if self.double_collects > 0 {
            return Err(Violation(format!(
                "invariant 3: {} node(s) collected twice",
                self.double_collects
            )));
        }
        Ok(())
    }

    /// Committed node ids (Live or Collecting), in id order.
    pub fn counted_ids(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.state != NodeState::Pending)
            .map(|(k, _)| self.id(*k))
            .collect()
    }

    /// A tenant's committed node ids, in id order, at most `limit`.
    pub fn tenant_ids(&self, tenant: &str, limit: usize) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|(_, n)| &*n.tenant == tenant && n.state != NodeState::Pending)
            .take(limit)
            .map(|(k, _)| self.id(*k))
            .collect()
    }
}

#[cfg(all(test, not(spiral_loom)))]
mod tests {
    use super::*;

    fn core(max_nodes: u64) -> Core {
        Core::new(
            EngineConfig {
                max_nodes,
                ..EngineConfig::default()
            },
            42,
        )
    }

    fn store(c: &mut Core, tenant: &str, depth: f64, priority: i64, t: u64) -> String {
        let r = c.reserve_store(tenant, depth_to_ppm(depth), priority, t, &[t as u8; 32]);
        assert!(c.commit_store(&r.id));
        r.id
    }

    #[test]
    fn sigils_are_unique_hex_of_the_configured_length() {
        let mut c = core(10_000);
        let mut seen = BTreeSet::new();
        for i in 0..2000 {
            let id = store(&mut c, "t", 0.5, 0, i);
            assert_eq!(id.len(), 10);
            assert!(id.chars().all(|ch| ch.is_ascii_hexdigit()));
            assert!(seen.insert(id));
        }
        c.check().unwrap();
    }

    #[test]
    fn pending_nodes_are_invisible_and_uncounted_until_commit() {
        let mut c = core(100);
        let r = c.reserve_store("t", 500_000, 0, 1, &[0; 32]);
        assert_eq!(c.total(), 0);
        assert!(!c.touch("t", &r.id));
        assert!(!c.begin_collect("t", &r.id));
        c.check().unwrap();
        c.abort_store(&r.id);
        assert_eq!(c.node_state(&r.id), None);
    }

    #[test]
    fn another_tenant_cannot_see_or_collect_a_node() {
        let mut c = core(100);
        let id = store(&mut c, "a", 0.1, 0, 1);
        assert!(!c.touch("b", &id));
        assert!(!c.begin_collect("b", &id));
        assert!(c.begin_collect("a", &id));
    }

    #[test]
    fn collecting_twice_is_refused_and_a_stray_commit_is_reported() {
        let mut c = core(100);
        let id = store(&mut c, "t", 0.1, 0, 1);
        assert!(c.begin_collect("t", &id));
        assert!(!c.begin_collect("t", &id));
        assert!(c.commit_collect(&id));
        assert!(!c.commit_collect(&id));
        assert!(c.check().unwrap_err().0.contains("invariant 3"));
    }

    #[test]
    fn gc_takes_lowest_priority_oldest_first_and_only_the_excess() {
        let mut c = core(3);
        let a = store(&mut c, "t", 0.1, 5, 1);
        let b = store(&mut c, "t", 0.1, 1, 2);
        let d = store(&mut c, "t", 0.1, 1, 3);
        let e = store(&mut c, "t", 0.1, 9, 4);
        let f = store(&mut c, "t", 0.1, 9, 5);
        assert_eq!(c.gc_due(), Some(GcTrigger::Capacity));
        let sel = c.gc_select(100);
        assert_eq!(sel.excess, 2);
        assert_eq!(sel.ids, vec![b, d]);
        let _ = (a, e, f);
    }

    #[test]
    fn a_read_node_gets_force_skip_second_chances_then_goes() {
        let mut c = core(1);
        let old = store(&mut c, "t", 0.1, 0, 1);
        let _new = store(&mut c, "t", 0.1, 0, 2);
        for pass in 0..3 {
            assert!(c.touch("t", &old));
            let sel = c.gc_select(10);
            assert_ne!(
                sel.ids.first(),
                Some(&old),
                "pass {pass} should spare the read node"
            );
            assert_eq!(sel.skipped, 1);
            for id in &sel.ids {
                c.abort_collect(id);
            }
        }
        assert!(c.touch("t", &old));
        let sel = c.gc_select(10);
        assert_eq!(
            sel.ids.first(),
            Some(&old),
            "skipped 3 times: collected regardless"
        );
    }

    #[test]
    fn gc_selection_respects_the_per_pass_limit() {
        let mut c = core(0);
        for i in 0..50 {
            store(&mut c, "t", 0.5, 0, i);
        }
        assert_eq!(c.gc_select(7).ids.len(), 7);
    }

    #[test]
    fn selection_prefers_harmonically_close_spirals_and_spreads_load() {
        let mut c = core(100_000);
        let mut used = BTreeSet::new();
        for i in 0..500 {
            let r = c.reserve_store("t", (i * 1999 % 1_000_000) as u32, 0, i, &[0; 32]);
            used.insert(r.spiral);
            c.commit_store(&r.id);
        }
        assert!(
            used.len() > 40,
            "stores spread over spirals: {}",
            used.len()
        );
        c.check().unwrap();
    }

    #[test]
    fn rebuild_corrects_drifted_counts_and_reports_before_and_after() {
        let mut c = core(100);
        let id = store(&mut c, "t", 0.25, 0, 1);
        let spiral = c.nodes[&parse_sigil(&id, 10).unwrap()].spiral;
        c.load_counts(&[(spiral, 7, 1)]);
        assert!(c.check().is_err());
        c.begin_rebuild().unwrap();
        let fixes = c.apply_rebuild(vec![ScannedNode {
            key: parse_sigil(&id, 10).unwrap(),
            tenant: "t".into(),
            spiral,
            depth_ppm: 250_000,
            priority: 0,
            created_ms: 1,
        }]);
        assert_eq!(fixes.len(), 1);
        assert_eq!(fixes[0].before.node_count, 7);
        assert_eq!(fixes[0].after.node_count, 1);
        assert_eq!(fixes[0].after.avg_depth, 0.25);
        c.check().unwrap();
    }

    #[test]
    fn rebuild_keeps_stores_that_commit_during_the_scan_and_drops_collects() {
        let mut c = core(100);
        let early = store(&mut c, "t", 0.5, 0, 1);
        let gone = store(&mut c, "t", 0.5, 0, 2);
        c.begin_rebuild().unwrap();
        let scan_saw = |c: &Core, id: &str| ScannedNode {
            key: parse_sigil(id, 10).unwrap(),
            tenant: "t".into(),
            spiral: c.nodes[&parse_sigil(id, 10).unwrap()].spiral,
            depth_ppm: 500_000,
            priority: 0,
            created_ms: 1,
        };
        let scanned = vec![scan_saw(&c, &early), scan_saw(&c, &gone)];
        // While the scan runs: one store commits, one collect commits.
        let late = store(&mut c, "t", 0.5, 0, 3);
        assert!(c.begin_collect("t", &gone));
        assert!(c.commit_collect(&gone));
        c.apply_rebuild(scanned);
        assert_eq!(c.counted_ids().len(), 2);
        assert!(c.node_state(&late).is_some());
        assert!(c.node_state(&gone).is_none());
        c.check().unwrap();
    }

    #[test]
    fn quantum_links_are_seeded() {
        let run = |seed| {
            let mut c = Core::new(
                EngineConfig {
                    enable_quantum_links: true,
                    ..EngineConfig::default()
                },
                seed,
            );
            for i in 0..300u64 {
                let r = c.reserve_store("t", ((i * 7919) % 1_000_000) as u32, 0, i, &[0; 32]);
                c.commit_store(&r.id);
            }
            c.links().clone()
        };
        assert_eq!(run(1), run(1));
        assert!(!run(1).is_empty());
    }
}
