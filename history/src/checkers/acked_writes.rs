//! No acknowledged write lost: an acknowledged store stays readable (with its content) until an
//! acknowledged collect or a GC pass removes it — during the run and in durable storage at the end.
//!
//! And an id names one memory for the whole run: a store is never acknowledged with the id of an
//! earlier store of the same content, as a restarted server whose RNG replays its stream would
//! give it without the boot generation in the sigil. (Ids are judged by the history, and held by
//! clients: a late collect of the old id would take the new memory.) Two different contents
//! meeting on one 40-bit prefix by chance are not judged.
//!
//! And a list shows what is there: a tenant's list answered empty by a server on which one of
//! its stores had been acknowledged before the list was sent — a node nothing ever removed (no
//! collect, no GC removal, no removal in flight at a stop, all run long) — is a violation.
//! Judged at the end of the run, when every removal is known.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use spiral_server::protocol::ErrorCode;

use super::Checker;
use crate::event::{Answer, Event, Op};

#[derive(Debug, Default)]
pub struct AckedWrites {
    acked: BTreeMap<String, Value>,
    removed: BTreeSet<String>,
    /// Each acknowledged id's tenant, server and when its acknowledgement came.
    owner: BTreeMap<String, (String, u32, u64)>,
    /// Lists answered empty: tenant, server, when sent.
    empty_lists: Vec<(String, u32, u64)>,
}

impl AckedWrites {
    fn present(&self, id: &str) -> bool {
        self.acked.contains_key(id) && !self.removed.contains(id)
    }
}

impl Checker for AckedWrites {
    fn name(&self) -> &'static str {
        "acked_writes"
    }

    fn observe(&mut self, event: &Event) -> Result<(), String> {
        match event {
            Event::Op {
                op,
                answer,
                tenant,
                server,
                sent_ms,
                done_ms,
                ..
            } => {
                match (op, answer) {
                    (Op::Store { .. }, Answer::Stored { id }) => {
                        self.owner
                            .insert(id.clone(), (tenant.clone(), *server, *done_ms));
                    }
                    (Op::List, Answer::Listed { items: 0, .. }) => {
                        self.empty_lists.push((tenant.clone(), *server, *sent_ms));
                    }
                    _ => {}
                }
                let not_found = answer.error_code() == Some(ErrorCode::NotFound);
                match (op, answer) {
                    (Op::Store { content, .. }, Answer::Stored { id }) => {
                        let earlier = self.acked.insert(id.clone(), content.clone());
                        if earlier.as_ref() == Some(content) {
                            return Err(format!(
                                "store acknowledged as {id}, the id an earlier store of the same content was given: an id must name one memory for the run"
                            ));
                        }
                    }
                    (Op::Collect { id }, _) if not_found && self.present(id) => {
                        return Err(format!(
                            "collect of acknowledged store {id} answered not_found"
                        ));
                    }
                    // Collected, or unknown (no answer, a timeout): it may be gone.
                    (Op::Collect { id }, _) if !not_found => {
                        self.removed.insert(id.clone());
                    }
                    (Op::Get { id }, _) if not_found && self.present(id) => {
                        return Err(format!("acknowledged store {id} read back as not_found"));
                    }
                    _ => {}
                }
            }
            Event::GcRemoved { id, .. } => {
                self.removed.insert(id.clone());
            }
            // It may be gone: like a collect that got no answer. What the stopping server names
            // as being removed must be nodes.
            Event::RemovalsInFlight { ids, server } => {
                if let Some(bad) = ids.iter().find(|id| !super::is_node_id(id)) {
                    return Err(format!(
                        "server-{server} stopped while removing {bad:?}, not an id: what it was removing is unknown"
                    ));
                }
                self.removed.extend(ids.iter().cloned());
            }
            Event::Durable {
                id,
                server,
                found: false,
            } if !self.removed.contains(id) => {
                return Err(format!(
                    "acknowledged store {id} (server-{server}) is not in durable storage at the end"
                ));
            }
            _ => {}
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), String> {
        for (tenant, server, sent_ms) in &self.empty_lists {
            let there = self.owner.iter().find(|(id, (t, s, acked_ms))| {
                t == tenant && s == server && acked_ms < sent_ms && !self.removed.contains(*id)
            });
            if let Some((id, (_, _, acked_ms))) = there {
                return Err(format!(
                    "{tenant}'s list on server-{server} (sent at {sent_ms} ms) was empty, but {id}, acknowledged at {acked_ms} ms and never removed, was there"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hand::*;
    use serde_json::json;

    #[test]
    fn a_lost_acknowledged_store_is_caught_and_collected_ones_are_not() {
        let store = op(store(json!(1)), stored("a"), 0);
        let lost = Event::Durable {
            id: "a".into(),
            server: 0,
            found: false,
        };
        let e = run(&mut AckedWrites::default(), &[store.clone(), lost.clone()]).unwrap_err();
        assert!(e.contains("not in durable storage"), "{e}");
        let read_gone = op(get("a"), error(ErrorCode::NotFound), 5);
        assert!(
            run(
                &mut AckedWrites::default(),
                &[store.clone(), read_gone.clone()]
            )
            .is_err()
        );
        let collect = op(collect("a"), Answer::Collected, 3);
        run(
            &mut AckedWrites::default(),
            &[store.clone(), collect, read_gone, lost.clone()],
        )
        .unwrap();
        let gc = Event::GcRemoved {
            server: 0,
            id: "a".into(),
            tenant: None,
        };
        run(
            &mut AckedWrites::default(),
            &[store.clone(), gc, lost.clone()],
        )
        .unwrap();
        let stopping = |id: &str| Event::RemovalsInFlight {
            server: 0,
            ids: vec![id.into()],
        };
        run(
            &mut AckedWrites::default(),
            &[store.clone(), stopping("a"), lost.clone()],
        )
        .unwrap();
        let e = run(&mut AckedWrites::default(), &[store, stopping(""), lost]).unwrap_err();
        assert!(e.contains("not an id"), "{e}");
    }

    #[test]
    fn an_empty_list_while_a_node_is_there_is_caught() {
        let late = op(store(json!(1)), stored("a"), 7);
        let store = op(store(json!(1)), stored("a"), 0);
        let empty = op(Op::List, listed(), 5);
        let e = run(&mut AckedWrites::default(), &[store.clone(), empty.clone()]).unwrap_err();
        assert!(
            e.contains("list on server-0 (sent at 5 ms) was empty, but a"),
            "{e}"
        );
        // Removed at any time, or acknowledged after the list was sent: not judged.
        let gc = Event::GcRemoved {
            server: 0,
            id: "a".into(),
            tenant: None,
        };
        run(
            &mut AckedWrites::default(),
            &[store.clone(), empty.clone(), gc],
        )
        .unwrap();
        run(&mut AckedWrites::default(), &[empty.clone(), late]).unwrap();
        // Another tenant's node is not this tenant's to list.
        let mut other = store;
        if let Event::Op { tenant, .. } = &mut other {
            *tenant = "tenant-1".into();
        }
        run(&mut AckedWrites::default(), &[other, empty]).unwrap();
    }

    #[test]
    fn an_id_given_again_to_the_same_content_is_caught() {
        let first = op(store(json!({"note": 1})), stored("a"), 0);
        let collect = op(collect("a"), Answer::Collected, 1);
        let again = op(store(json!({"note": 1})), stored("a"), 2);
        let e = run(
            &mut AckedWrites::default(),
            &[first.clone(), collect, again],
        )
        .unwrap_err();
        assert!(e.contains("one memory for the run"), "{e}");
        // Another content on the same id (a chance meeting of prefixes) is not judged.
        let other = op(store(json!({"note": 2})), stored("a"), 2);
        run(&mut AckedWrites::default(), &[first, other]).unwrap();
    }
}
