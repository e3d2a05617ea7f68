//! Tenant fairness (SPEC §1.9, "fair shares under GC"): a tenant holding no more than its fair
//! share of the capacity (`max_nodes` ÷ tenants holding nodes) never loses a node to GC, and a
//! tenant over its share loses no more than what it holds above it — whatever priorities anyone
//! stored at. Priorities are bounded: a store past −1000..=1000 is a `bad_request`, whether a
//! well-behaved client or a crowding one sent it. And GC takes nothing the capacity does not call
//! for: a pass collects no more nodes than the engine was over capacity when it selected.

use crate::event::{Event, Op};

use spiral_server::engine::PRIORITY_RANGE as PRIORITY;

/// The property, judged on each event alone.
pub fn judge(event: &Event) -> Result<(), String> {
    match event {
        Event::Gc {
            server,
            collected,
            excess: Some(excess),
            ..
        } if *collected as u64 > *excess => Err(format!(
            "server-{server}: a GC pass collected {collected} nodes while the engine was {excess} over its capacity"
        )),
        Event::GcShares {
            server,
            share: used,
            tenants,
            max_nodes,
        } => {
            // The share by the world's own figures, not the server's (nor its code).
            let share = &(max_nodes / tenants.len().max(1) as u64);
            if used != share {
                return Err(format!(
                    "server-{server}: GC used a fair share of {used}; {max_nodes} nodes among {} tenants make {share}",
                    tenants.len()
                ));
            }
            for t in tenants {
                let over = t.held.saturating_sub(*share);
                if t.taken > over {
                    return Err(format!(
                        "server-{server}: GC took {} of {}'s {} nodes; its fair share is {share}, so at most {over} could go (holdings: {})",
                        t.taken,
                        t.tenant,
                        t.held,
                        tenants
                            .iter()
                            .map(|t| format!("{} {}", t.tenant, t.held))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
            }
            Ok(())
        }
        Event::Crowd {
            client,
            server,
            priority,
            probe: Some(probe),
            ..
        } if !PRIORITY.contains(priority) && probe != "bad_request" => Err(format!(
            "client-{client}: server-{server} answered a store at priority {priority} with {probe}, not bad_request"
        )),
        Event::Op {
            client,
            server,
            op: Op::Store {
                priority: Some(p), ..
            },
            answer,
            ..
        } if !PRIORITY.contains(p) && answer.is_result() => Err(format!(
            // Any error will do: rate limits and outages come before argument checks.
            "client-{client}: server-{server} answered a store at priority {p} with {answer:?}, not bad_request"
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Answer, TenantShare};
    use crate::hand::{op, run_each, stored};
    use serde_json::json;
    use spiral_server::protocol::ErrorCode;

    fn shares(share: u64, t: &[(&str, u64, u64)]) -> Event {
        Event::GcShares {
            server: 0,
            share,
            tenants: t
                .iter()
                .map(|&(tenant, held, taken)| TenantShare {
                    tenant: tenant.into(),
                    held,
                    taken,
                })
                .collect(),
            max_nodes: share * t.len() as u64,
        }
    }

    fn crowd(priority: i64, probe: &str) -> Event {
        Event::Crowd {
            client: 7,
            server: 0,
            tenant: "tenant-bad".into(),
            priority,
            probe: Some(probe.into()),
            sent: 10,
            stored: 10,
        }
    }

    fn store_at(priority: i64, answer: Answer) -> Event {
        op(
            Op::Store {
                content: json!(1),
                priority: Some(priority),
            },
            answer,
            5,
        )
    }

    #[test]
    fn gc_within_shares_passes_and_gc_below_a_share_fails() {
        run_each(
            judge,
            &[
                shares(3, &[("a", 2, 0), ("b", 6, 3)]),
                shares(3, &[("a", 3, 0), ("b", 4, 1)]),
                crowd(i64::MAX, "bad_request"),
                crowd(1000, "stored"),
                store_at(1001, crate::hand::error(ErrorCode::BadRequest)),
                store_at(-1000, stored("ab")),
            ],
        )
        .unwrap();
        let e = run_each(judge, &[shares(3, &[("a", 2, 1), ("b", 6, 1)])]).unwrap_err();
        assert!(e.contains("GC took 1 of a's 2 nodes"), "{e}");
        let e = run_each(judge, &[shares(3, &[("a", 3, 0), ("b", 6, 4)])]).unwrap_err();
        assert!(e.contains("at most 3 could go"), "{e}");
        // The share is the world's: capacity 6 between two tenants is 3 each, whatever the
        // server says.
        let mut zero = shares(3, &[("a", 3, 0), ("b", 6, 3)]);
        if let Event::GcShares { share, .. } = &mut zero {
            *share = 0;
        }
        let e = run_each(judge, &[zero]).unwrap_err();
        assert!(e.contains("used a fair share of 0"), "{e}");
    }

    #[test]
    fn a_pass_collecting_past_the_excess_is_caught() {
        let gc = |collected, excess| Event::Gc {
            server: 0,
            pause_ms: 1.0,
            budget_ms: 25,
            collected,
            excess: Some(excess),
            started_ms: None,
            spared: None,
        };
        run_each(judge, &[gc(3, 3), gc(0, 0)]).unwrap();
        let e = run_each(judge, &[gc(2, 0)]).unwrap_err();
        assert!(
            e.contains("collected 2 nodes while the engine was 0 over"),
            "{e}"
        );
    }

    #[test]
    fn a_priority_past_the_bounds_must_be_refused() {
        let e = run_each(judge, &[crowd(i64::MAX, "stored")]).unwrap_err();
        assert!(e.contains("not bad_request"), "{e}");
        assert!(run_each(judge, &[store_at(i64::MIN, stored("ab"))]).is_err());
    }
}
