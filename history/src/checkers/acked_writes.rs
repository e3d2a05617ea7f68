//! No acknowledged write lost: an acknowledged store stays readable (with its content) until an
//! acknowledged collect or a GC pass removes it — during the run and in durable storage at the end.
//!
//! And an id names one memory for the whole run: a store is never acknowledged with the id of an
//! earlier store of the same content, as a restarted server whose RNG replays its stream would
//! give it without the boot generation in the sigil. (Ids are judged by the history, and held by
//! clients: a late collect of the old id would take the new memory.) Two different contents
//! meeting on one 40-bit prefix by chance are not judged.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use spiral_server::protocol::ErrorCode;

use super::Checker;
use crate::event::{Answer, Event, Op};

#[derive(Debug, Default)]
pub struct AckedWrites {
    acked: BTreeMap<String, Value>,
    removed: BTreeSet<String>,
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
            Event::Op { op, answer, .. } => {
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
