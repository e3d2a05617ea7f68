//! `[checks]`: which checkers run and their bounds (the SLOs are `[slo]`, [`super::Slo`]).

use serde::{Deserialize, Serialize};
use spiral_history::checkers::NAMES;

/// Which checkers run and their bounds. Every checker is on unless turned off here.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Checks {
    /// Checker names to turn off (see `docs/simulation.md`).
    #[serde(default)]
    pub disable: Vec<String>,
    /// After the last fault heals, each client must complete an operation within this (s).
    #[serde(default = "default_liveness")]
    pub liveness_within_s: f64,
    /// A GC pass may overrun its budget by this much (the delete batch in flight), ms.
    #[serde(default = "default_gc_grace")]
    pub gc_grace_ms: u64,
}

fn default_liveness() -> f64 {
    20.0
}
fn default_gc_grace() -> u64 {
    25
}

impl Default for Checks {
    fn default() -> Self {
        Self {
            disable: Vec::new(),
            liveness_within_s: default_liveness(),
            gc_grace_ms: default_gc_grace(),
        }
    }
}

impl Checks {
    /// Every checker turned off exists.
    pub(super) fn validate(&self) -> Result<(), String> {
        for d in &self.disable {
            if !NAMES.contains(&d.as_str()) {
                return Err(format!(
                    "[checks] disable: no checker {d:?} (checkers: {})",
                    NAMES.join(", ")
                ));
            }
        }
        Ok(())
    }
}
