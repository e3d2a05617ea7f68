//! The index's own invariant check (SPEC §1.5, invariants 1 and 3): counts agree with the
//! nodes, and no node was collected twice. `Engine::check_against_storage` adds storage.

use super::core::{Core, NodeState};
use super::spiral::spiral_id;

/// An invariant of SPEC §1.5 found broken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation(pub String);

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Core {
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
}
