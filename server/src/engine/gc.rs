//! GC selection inside the core: when a pass is due ([`GcTrigger`]), how far over capacity the
//! engine is, and which nodes a pass takes ([`GcSelection`]): lowest priority and oldest first,
//! with a second chance for a node read since the last pass. The async pass that deletes what
//! was selected is `Engine::gc`.

use super::core::{Core, NodeState};
use super::sigil::format_sigil;

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

impl Core {
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
                crate::reached!("gc.second_chance");
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
}

#[cfg(all(test, not(spiral_loom)))]
mod tests {
    use super::super::core::tests::{core, store};
    use super::*;

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
}
