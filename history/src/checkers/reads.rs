//! No read of a value never written: a read that succeeds returns exactly the content an
//! acknowledged store of that id carried. And no read fails with `internal`: storage faults are
//! `storage_unavailable` or `timeout`, a missing node `not_found`; `internal` is a server that
//! could not make sense of what it stored.

use std::collections::BTreeMap;

use serde_json::Value;
use spiral_server::protocol::ErrorCode;

use super::Checker;
use crate::event::{Answer, Event, Op};

#[derive(Debug, Default)]
pub struct Reads {
    acked: BTreeMap<String, Value>,
}

impl Checker for Reads {
    fn name(&self) -> &'static str {
        "reads"
    }

    fn observe(&mut self, event: &Event) -> Result<(), String> {
        let Event::Op { op, answer, .. } = event else {
            return Ok(());
        };
        match (op, answer) {
            (Op::Store { content, .. }, Answer::Stored { id }) => {
                self.acked.insert(id.clone(), content.clone());
            }
            (
                Op::Get { id },
                Answer::Error {
                    code: ErrorCode::Internal,
                    message,
                },
            ) => return Err(format!("read of {id} answered `internal`: {message}")),
            (Op::Get { id }, Answer::Read { content: got }) => match self.acked.get(id) {
                Some(c) if c == got => {}
                Some(c) => return Err(format!("read of {id} returned {got}, acknowledged {c}")),
                None => return Err(format!("read of {id} returned {got}, never written")),
            },
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
    fn reads_must_return_what_was_written() {
        let store = op(store(json!({"n": 1})), stored("a"), 0);
        let good = op(get("a"), read(json!({"n": 1})), 2);
        run(&mut Reads::default(), &[store.clone(), good]).unwrap();
        let wrong = op(get("a"), read(json!({"n": 2})), 2);
        assert!(run(&mut Reads::default(), &[store, wrong]).is_err());
        let phantom = op(get("b"), read(json!(1)), 2);
        assert!(
            run(&mut Reads::default(), &[phantom])
                .unwrap_err()
                .contains("never written")
        );
    }

    #[test]
    fn a_read_answered_internal_fails_and_storage_errors_do_not() {
        let store = op(store(json!({"n": 1})), stored("a"), 0);
        let down = op(get("a"), error(ErrorCode::StorageUnavailable), 2);
        run(&mut Reads::default(), &[store.clone(), down]).unwrap();
        let broken = op(get("a"), error(ErrorCode::Internal), 2);
        let e = run(&mut Reads::default(), &[store, broken]).unwrap_err();
        assert!(e.contains("read of a answered `internal`"), "{e}");
    }
}
