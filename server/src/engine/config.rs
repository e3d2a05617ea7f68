//! Engine settings. Names and defaults follow SPEC §1.5; `crate::config` maps each to its env
//! var and flag and validates it once at start-up.

/// Settings of the spiral memory engine.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineConfig {
    /// `maxMemorySpirals` (`SPIRAL_MAX_SPIRALS`): spirals available to hold nodes.
    pub max_spirals: u32,
    /// `spiralTurns` (`SPIRAL_TURNS`): the most turns a spiral can wind.
    pub spiral_turns: u32,
    /// `maxMemoryNodes` (`SPIRAL_MAX_NODES`): nodes held before GC must make room.
    pub max_nodes: u64,
    /// `gcTimeBudget` (`GC_TIME_BUDGET_MS`): the longest a GC pass may run.
    pub gc_time_budget_ms: u64,
    /// `gcTriggerInterval` (`GC_TRIGGER_INTERVAL`): operations between GC passes.
    pub gc_trigger_interval: u64,
    /// `GC_BUDGET_SCALE`: nodes a pass may collect per millisecond of budget.
    pub gc_budget_scale: u64,
    /// `GC_FORCE_SKIP`: second chances a recently read node gets before it is collected anyway.
    pub gc_force_skip: u32,
    /// `SIGIL_HASH_SLICE`: hex characters of the hash that make a node's sigil id.
    pub sigil_hash_slice: u32,
    /// `HD_WEIGHT_DISTANCE`, `HD_WEIGHT_LOAD`, `HD_WEIGHT_AGE`: the spiral selection score.
    pub hd_weight_distance: f64,
    pub hd_weight_load: f64,
    pub hd_weight_age: f64,
    /// `ENABLE_QUANTUM_LINKS`: link harmonically overlapping spirals with a seeded probability.
    pub enable_quantum_links: bool,
    /// `SPIRAL_LOCK_TIMEOUT_MS`: waiting longer than this for the critical section is an error.
    pub lock_timeout_ms: u64,
    /// `SPIRAL_META_SNAPSHOTS_KEPT`: how many `meta:snapshot:<unix_ms>` entries to keep.
    pub meta_snapshots_kept: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_spirals: 89,
            spiral_turns: 21,
            max_nodes: 2618,
            gc_time_budget_ms: 25,
            gc_trigger_interval: 100,
            gc_budget_scale: 10,
            gc_force_skip: 3,
            sigil_hash_slice: 10,
            hd_weight_distance: 0.5,
            hd_weight_load: 0.3,
            hd_weight_age: 0.2,
            enable_quantum_links: false,
            lock_timeout_ms: 2000,
            meta_snapshots_kept: 10,
        }
    }
}

impl EngineConfig {
    /// The most nodes one GC pass may collect: `gc_time_budget_ms × GC_BUDGET_SCALE`.
    pub fn gc_node_limit(&self) -> usize {
        (self.gc_time_budget_ms.saturating_mul(self.gc_budget_scale)) as usize
    }

    /// Check ranges and combinations; the message names the variables.
    pub fn validate(&self) -> Result<(), String> {
        let fail = |var: &str, why: &str| Err(format!("{var}: {why}"));
        if !(1..=10_000).contains(&self.max_spirals) {
            return fail("SPIRAL_MAX_SPIRALS", "must be between 1 and 10000");
        }
        if self.spiral_turns == 0 {
            return fail("SPIRAL_TURNS", "must be at least 1");
        }
        if self.gc_time_budget_ms == 0 {
            return fail("GC_TIME_BUDGET_MS", "must be at least 1");
        }
        if self.gc_trigger_interval == 0 {
            return fail("GC_TRIGGER_INTERVAL", "must be at least 1");
        }
        if self.gc_budget_scale == 0 {
            return fail("GC_BUDGET_SCALE", "must be at least 1");
        }
        if !(4..=16).contains(&self.sigil_hash_slice) {
            return fail("SIGIL_HASH_SLICE", "must be between 4 and 16");
        }
        // Sigils are drawn at random and collision-checked: the id space must stay sparse even
        // when the engine holds all it may (its capacity plus a GC pass's worth of backlog), or
        // finding a free sigil takes ever longer under the engine lock.
        let space = 16f64.powi(self.sigil_hash_slice as i32);
        let most = self.max_nodes.saturating_mul(2).max(1) as f64;
        if space < most * SIGIL_SPARSENESS && !crate::planted!(SigilSpaceUnchecked) {
            return Err(format!(
                "SIGIL_HASH_SLICE={} gives {} ids, too few for SPIRAL_MAX_NODES={}: at least {} hex characters are needed",
                self.sigil_hash_slice,
                space,
                self.max_nodes,
                min_sigil_hex(self.max_nodes)
            ));
        }
        for (var, w) in [
            ("HD_WEIGHT_DISTANCE", self.hd_weight_distance),
            ("HD_WEIGHT_LOAD", self.hd_weight_load),
            ("HD_WEIGHT_AGE", self.hd_weight_age),
        ] {
            if !w.is_finite() || w < 0.0 {
                return fail(var, "must be a finite number ≥ 0");
            }
        }
        if self.lock_timeout_ms == 0 {
            return fail("SPIRAL_LOCK_TIMEOUT_MS", "must be at least 1");
        }
        Ok(())
    }
}

/// How many ids per node the sigil space must hold (at twice the capacity), so that a random
/// sigil collides with a held one less than once in this many draws.
const SIGIL_SPARSENESS: f64 = 4.0;

/// The fewest hex characters whose sigil space is sparse enough for `max_nodes`.
pub fn min_sigil_hex(max_nodes: u64) -> u32 {
    let most = max_nodes.saturating_mul(2).max(1) as f64 * SIGIL_SPARSENESS;
    (1..=16)
        .find(|&w| 16f64.powi(w as i32) >= most)
        .unwrap_or(16)
}
