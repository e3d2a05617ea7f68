//! No read of a value never written: a read that succeeds returns exactly the content an
//! acknowledged store of that id carried.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{Checker, Obs, is_result};

#[derive(Debug, Default)]
pub struct Reads {
    acked: BTreeMap<String, Value>,
}

impl Checker for Reads {
    fn name(&self) -> &'static str {
        "reads"
    }

    fn observe(&mut self, obs: &Obs) -> Result<(), String> {
        let Obs::Op {
            op,
            answer,
            content,
            target,
            ..
        } = obs
        else {
            return Ok(());
        };
        if !is_result(answer) {
            return Ok(());
        }
        match op.as_str() {
            "store" => {
                if let (Some(id), Some(c)) = (answer["data"]["id"].as_str(), content) {
                    self.acked.insert(id.to_owned(), c.clone());
                }
            }
            "get" => {
                let id = target.as_deref().unwrap_or("?");
                let got = &answer["data"]["content"];
                match self.acked.get(id) {
                    Some(c) if c == got => {}
                    Some(c) => {
                        return Err(format!("read of {id} returned {got}, acknowledged {c}"));
                    }
                    None => return Err(format!("read of {id} returned {got}, never written")),
                }
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
    fn reads_must_return_what_was_written() {
        let store = op(
            "store",
            None,
            Some(json!({"n": 1})),
            result(json!({"id": "a"})),
            0,
        );
        let good = op(
            "get",
            Some("a"),
            None,
            result(json!({"content": {"n": 1}})),
            2,
        );
        run(&mut Reads::default(), &[store.clone(), good]).unwrap();
        let wrong = op(
            "get",
            Some("a"),
            None,
            result(json!({"content": {"n": 2}})),
            2,
        );
        assert!(run(&mut Reads::default(), &[store, wrong]).is_err());
        let phantom = op("get", Some("b"), None, result(json!({"content": 1})), 2);
        assert!(
            run(&mut Reads::default(), &[phantom])
                .unwrap_err()
                .contains("never written")
        );
    }
}
