//! The engine's lock-protected state: a synchronous state machine with no I/O.
//!
//! Every mutation of counts happens in [`Core`], inside one critical section, so invariant 1
//! (`total == Σ spiral.node_count == live nodes`) can be checked by loom without any async
//! machinery. Storage I/O happens between two critical sections:
//!
//! - store:   `reserve_store` (Pending) → persist → `commit_store` (Live, counted) | `abort_store`
//! - collect: `begin_collect` (Collecting) → delete → `commit_collect` (gone) | `abort_collect`
//! - GC:      `gc_select` marks candidates Collecting, then the same delete → commit path.
//!
//! A Pending node is invisible to GC and to readers (its store is in flight); a Collecting node is
//! invisible to every other collector, so no node is collected twice.
//!
//! This file holds the node lifecycle: the [`Core`] itself, node states, and the store and collect
//! sections. The rest of the core lives beside it, one concept a file: [`super::sigil`] (ids),
//! [`super::spiral`] (selection, statistics, links), [`super::gc`] (GC selection),
//! [`super::rebuild`] (rebuild-stats) and [`super::check`] (the invariant check).

use std::collections::{BTreeMap, BTreeSet};

use super::config::EngineConfig;
use super::rebuild::RebuildWindow;
use super::sigil::Sigil;
use super::spiral::{DepthPpm, Spiral};
use crate::rng::SplitMix64;

/// A tenant name, shared by all of its nodes (and by a rebuild's scan) instead of copied.
pub type Tenant = std::sync::Arc<str>;

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

/// What `reserve_store` hands back to the caller who will persist the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub id: String,
    pub spiral: u32,
}

/// The engine's state behind its one lock: spirals, the node index, the GC queue and counters.
#[derive(Debug)]
pub struct Core {
    pub(super) cfg: EngineConfig,
    pub(super) rng: SplitMix64,
    /// Boot generation (a storage counter bumped at every open), hashed into every sigil so an
    /// id is never handed out again after a restart, even though the RNG replays its stream.
    pub(super) generation: i64,
    pub(super) spirals: Vec<Spiral>,
    pub(super) nodes: BTreeMap<Sigil, NodeMeta>,
    /// GC order: lowest priority first, then oldest, then id (a total, deterministic order).
    pub(super) gc_queue: BTreeSet<(i64, u64, Sigil)>,
    pub(super) total: u64,
    pub(super) op: u64,
    pub(super) ops_since_gc: u64,
    pub(super) commit_seq: u64,
    pub(super) links: BTreeSet<(u32, u32)>,
    pub(super) rebuild: Option<RebuildWindow>,
    /// Commits of a collect for a node that was not being collected: invariant 3 broken.
    pub(super) double_collects: u64,
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

    /// The tenant a node belongs to, while the core knows the node.
    pub fn tenant_of(&self, id: &str) -> Option<Tenant> {
        let key = self.key(id)?;
        self.nodes.get(&key).map(|n| n.tenant.clone())
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    pub fn node_state(&self, id: &str) -> Option<NodeState> {
        self.nodes.get(&self.key(id)?).map(|n| n.state)
    }

    /// Nodes in the middle of an operation: stores reserved but not committed (Pending), and
    /// removals not finished (Collecting). At rest both are 0; anything else is an operation that
    /// left its reservation behind.
    pub fn in_flight(&self) -> (u64, u64) {
        self.nodes.values().fold((0, 0), |(p, c), n| match n.state {
            NodeState::Pending => (p + 1, c),
            NodeState::Collecting => (p, c + 1),
            _ => (p, c),
        })
    }

    /// The nodes being removed right now (a GC pass or a collect holds them): each may or may
    /// not be gone from storage yet.
    pub fn removals_in_flight(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.state == NodeState::Collecting)
            .map(|(k, _)| super::sigil::format_sigil(*k, self.cfg.sigil_hash_slice))
            .collect()
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

    /// The counting half of `commit_store`.
    fn count_in(&mut self, spiral: u32, depth_ppm: DepthPpm) {
        let s = &mut self.spirals[spiral as usize];
        s.node_count += 1;
        s.depth_sum_ppm += u64::from(depth_ppm);
        self.total += 1;
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
            self.note_double_collect();
            return false;
        }
        self.remove_counted(key);
        self.ops_since_gc += 1;
        if let Some(w) = self.rebuild.as_mut() {
            w.collected.insert(key);
        }
        true
    }

    /// Count a collect of a node nobody took, for the self-check (invariant 3): a correct engine
    /// never gets here.
    fn note_double_collect(&mut self) {
        self.double_collects += 1;
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

/// Fixtures the core's tests share, in this file and its sibling files.
#[cfg(test)]
#[cfg(not(spiral_loom))]
pub(super) mod tests {
    use super::*;
    use crate::engine::spiral::depth_to_ppm;

    pub(in crate::engine) fn core(max_nodes: u64) -> Core {
        Core::new(
            EngineConfig {
                max_nodes,
                ..EngineConfig::default()
            },
            42,
        )
    }

    pub(in crate::engine) fn store(
        c: &mut Core,
        tenant: &str,
        depth: f64,
        priority: i64,
        t: u64,
    ) -> String {
        let r = c.reserve_store(tenant, depth_to_ppm(depth), priority, t, &[t as u8; 32]);
        assert!(c.commit_store(&r.id));
        r.id
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
}
