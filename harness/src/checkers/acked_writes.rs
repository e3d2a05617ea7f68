//! No acknowledged write lost: an acknowledged store stays readable (with its content) until an
//! acknowledged collect or a GC pass removes it — during the run and in durable storage at the end.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use spiral_server::protocol::ErrorCode;

use super::{Checker, Obs, error_code, is_result};

#[derive(Debug, Default)]
pub struct AckedWrites {
    acked: BTreeMap<String, Value>,
    removed: BTreeSet<String>,
}

impl Checker for AckedWrites {
    fn name(&self) -> &'static str {
        "acked_writes"
    }

    fn observe(&mut self, obs: &Obs) -> Result<(), String> {
        match obs {
            Obs::Op {
                op,
                answer,
                content,
                target,
                ..
            } => match op.as_str() {
                "store" if is_result(answer) => {
                    if let (Some(id), Some(c)) = (answer["data"]["id"].as_str(), content) {
                        self.acked.insert(id.to_owned(), c.clone());
                    }
                }
                "collect" => {
                    let Some(id) = target else { return Ok(()) };
                    if error_code(answer) == Some(ErrorCode::NotFound) {
                        if self.acked.contains_key(id) && !self.removed.contains(id) {
                            return Err(format!(
                                "collect of acknowledged store {id} answered not_found"
                            ));
                        }
                    } else {
                        // Collected, or unknown (no answer, a timeout): it may be gone.
                        self.removed.insert(id.clone());
                    }
                }
                "get" => {
                    if let Some(id) = target
                        && self.acked.contains_key(id)
                        && !self.removed.contains(id)
                        && error_code(answer) == Some(ErrorCode::NotFound)
                    {
                        return Err(format!("acknowledged store {id} read back as not_found"));
                    }
                }
                _ => {}
            },
            Obs::GcRemoved { id, .. } => {
                self.removed.insert(id.clone());
            }
            Obs::Durable {
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
    use crate::checkers::test_support::*;
    use serde_json::json;

    #[test]
    fn a_lost_acknowledged_store_is_caught_and_collected_ones_are_not() {
        let store = op("store", None, Some(json!(1)), result(json!({"id": "a"})), 0);
        let lost = Obs::Durable {
            id: "a".into(),
            server: 0,
            found: false,
        };
        let e = run(&mut AckedWrites::default(), &[store.clone(), lost.clone()]).unwrap_err();
        assert!(e.contains("not in durable storage"), "{e}");
        let read_gone = op("get", Some("a"), None, error("not_found"), 5);
        assert!(
            run(
                &mut AckedWrites::default(),
                &[store.clone(), read_gone.clone()]
            )
            .is_err()
        );
        let collect = op("collect", Some("a"), None, result(json!({})), 3);
        run(
            &mut AckedWrites::default(),
            &[store.clone(), collect, read_gone, lost.clone()],
        )
        .unwrap();
        let gc = Obs::GcRemoved {
            server: 0,
            id: "a".into(),
        };
        run(&mut AckedWrites::default(), &[store, gc, lost]).unwrap();
    }
}
