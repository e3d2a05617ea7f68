//! Spirals: which spiral a node goes to (a weighted score of harmonic distance, load and age),
//! what a spiral's statistics are (count, average depth, radius, turns), and the quantum links
//! between harmonically overlapping spirals. Depths are kept in parts per million.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::core::Core;

/// The angle between successive nodes on a spiral (radians): the golden angle.
const GOLDEN_ANGLE: f64 = 2.399_963_229_728_653;
const PPM: f64 = 1_000_000.0;

/// Depth in parts per million: integer sums keep incremental and rebuilt averages bit-identical.
pub type DepthPpm = u32;

pub fn depth_to_ppm(depth: f64) -> DepthPpm {
    (depth.clamp(0.0, 1.0) * PPM).round() as DepthPpm
}

pub fn ppm_to_depth(ppm: DepthPpm) -> f64 {
    f64::from(ppm) / PPM
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

impl Core {
    pub fn links(&self) -> &BTreeSet<(u32, u32)> {
        &self.links
    }

    /// Pick the spiral for a node of this depth: the lowest weighted score of harmonic distance,
    /// load and (negatively) age, ties to the lowest index.
    pub(super) fn select_spiral(&self, depth_ppm: DepthPpm) -> u32 {
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

    pub(super) fn maybe_link(&mut self, spiral: u32) {
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
}

#[cfg(test)]
#[cfg(not(spiral_loom))]
mod tests {
    use std::collections::BTreeSet;

    use super::super::core::tests::core;
    use crate::engine::config::EngineConfig;
    use crate::engine::core::Core;

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
