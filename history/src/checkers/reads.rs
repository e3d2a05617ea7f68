//! No read of a value never written: a read that succeeds returns exactly the content an
//! acknowledged store of that id carried.

use std::collections::BTreeMap;

use serde_json::Value;

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
}
