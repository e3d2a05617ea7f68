//! GC selection inside the core: when a pass is due ([`GcTrigger`]), how far over capacity the
//! engine is, and which nodes a pass takes ([`GcSelection`]): only from tenants holding more
//! than their fair share of the capacity (`max_nodes` ÷ tenants holding nodes), and from those
//! no further than down to it; among them lowest priority and oldest first, with a second chance
//! for a node read since the last pass (SPEC §1.9, "fair shares under GC"). The async pass that
//! deletes what was selected is `Engine::gc`.

use std::collections::BTreeMap;

use super::core::{Core, NodeState, Tenant};
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
    /// Each tenant's fair share of the capacity when the pass selected (0: nothing to select).
    pub share: u64,
    /// Every tenant holding live nodes when the pass selected: how many, and how many of them
    /// the pass took.
    pub tenants: Vec<TenantShare>,
}

/// One tenant's holding at a GC selection, and what the selection took from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantShare {
    pub tenant: Tenant,
    pub held: u64,
    pub taken: u64,
}

/// A tenant's fair share of `max_nodes` among `tenants` tenants holding nodes.
pub fn fair_share(max_nodes: u64, tenants: usize) -> u64 {
    max_nodes / (tenants.max(1) as u64)
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

    /// Live nodes per tenant (Pending ones are not counted yet, Collecting ones are on their
    /// way out).
    fn holdings(&self) -> BTreeMap<Tenant, u64> {
        let mut held = BTreeMap::new();
        for n in self.nodes.values().filter(|n| n.state == NodeState::Live) {
            *held.entry(n.tenant.clone()).or_insert(0) += 1;
        }
        held
    }

    /// Step 1 of a GC pass: pick at most `limit` candidates, enough to bring the engine back to
    /// capacity, and take them. Only a tenant holding more than its fair share gives nodes up,
    /// and only down to its share; among those, queue order (lowest priority, oldest). A node
    /// read since it was last considered is skipped (second chance) unless it has been skipped
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
        let mut held: BTreeMap<Tenant, (u64, u64)> = self
            .holdings()
            .into_iter()
            .map(|(t, n)| (t, (n, 0)))
            .collect();
        let share = fair_share(self.cfg.max_nodes, held.len());
        sel.share = share;
        let unfair = crate::planted!(GcUnfair);
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
            let Some((had, taken)) = held.get_mut(&n.tenant) else {
                continue;
            };
            if *had - *taken <= share && !unfair {
                crate::reached!("gc.fair_share_spared");
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
            *taken += 1;
            sel.ids.push(format_sigil(key, width));
        }
        sel.tenants = held
            .into_iter()
            .map(|(tenant, (held, taken))| TenantShare {
                tenant,
                held,
                taken,
            })
            .collect();
        sel
    }
}

#[cfg(test)]
#[cfg(not(spiral_loom))]
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
    fn gc_takes_only_from_tenants_over_their_share_and_only_down_to_it() {
        // Capacity 6 among two tenants: a share of 3 each. `a` holds 2 nodes at the lowest
        // priority; `b` crowds in 6 at the highest.
        let mut c = core(6);
        let a: Vec<String> = (0..2).map(|i| store(&mut c, "a", 0.1, -1000, i)).collect();
        let b: Vec<String> = (0..6)
            .map(|i| store(&mut c, "b", 0.1, 1000, 10 + i))
            .collect();
        let sel = c.gc_select(100);
        assert_eq!(sel.excess, 2);
        assert_eq!(sel.share, 3);
        assert_eq!(sel.ids, b[..2].to_vec(), "b's oldest, never a's");
        let taken: Vec<(&str, u64, u64)> = sel
            .tenants
            .iter()
            .map(|t| (&*t.tenant, t.held, t.taken))
            .collect();
        assert_eq!(taken, vec![("a", 2, 0), ("b", 6, 2)]);
        for id in &sel.ids {
            assert!(c.commit_collect(id));
        }
        // Back at capacity (a 2, b 4); b crowds in 3 more: only b gives nodes up, and only the
        // excess — never one of a's, though every one of a's is at the lowest priority.
        for i in 0..3 {
            store(&mut c, "b", 0.1, 1000, 20 + i);
        }
        let sel = c.gc_select(100);
        assert_eq!(sel.ids.len(), 3);
        assert!(sel.ids.iter().all(|id| !a.contains(id)), "{sel:?}");
    }

    #[test]
    fn within_their_shares_tenants_are_spared_even_when_the_limit_wants_more() {
        // Three tenants, capacity 9 (share 3): 4, 4 and 3 nodes — 2 over capacity. Only the two
        // tenants over their share give up one node each, whatever the priorities.
        let mut c = core(9);
        for i in 0..4 {
            store(&mut c, "x", 0.1, 5, i);
            store(&mut c, "y", 0.1, 5, 10 + i);
        }
        let z: Vec<String> = (0..3)
            .map(|i| store(&mut c, "z", 0.1, -5, 20 + i))
            .collect();
        let sel = c.gc_select(100);
        assert_eq!(sel.ids.len(), 2);
        assert!(sel.ids.iter().all(|id| !z.contains(id)), "{sel:?}");
        let per: Vec<u64> = sel.tenants.iter().map(|t| t.taken).collect();
        assert_eq!(per, vec![1, 1, 0]);
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
