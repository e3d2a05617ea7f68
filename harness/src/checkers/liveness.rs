//! Liveness: after the last fault heals, every well-behaved client reconnects and completes an
//! operation within `within_ms` (or before the workload ends, if that comes first).

use std::collections::BTreeMap;

use super::{Checker, Class, Obs, is_result};

pub struct Liveness {
    clients: u32,
    within_ms: u64,
    end_ms: u64,
    /// A truncated workload (shrinking) may stop clients early: nothing to judge.
    truncated: bool,
    /// Per client: the times of its successful operations.
    done: BTreeMap<u32, Vec<u64>>,
    last_heal_ms: Option<u64>,
}

impl Liveness {
    pub fn new(clients: u32, within_ms: u64, end_ms: u64, truncated: bool) -> Self {
        Self {
            clients,
            within_ms,
            end_ms,
            truncated,
            done: BTreeMap::new(),
            last_heal_ms: None,
        }
    }
}

impl Checker for Liveness {
    fn name(&self) -> &'static str {
        "liveness"
    }

    fn class(&self) -> Class {
        Class::Liveness
    }

    fn observe(&mut self, obs: &Obs) -> Result<(), String> {
        match obs {
            Obs::Op {
                client,
                answer,
                done_ms,
                ..
            } if is_result(answer) => {
                self.done.entry(*client).or_default().push(*done_ms);
            }
            Obs::End { last_heal_ms } => self.last_heal_ms = Some(*last_heal_ms),
            _ => {}
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), String> {
        let Some(heal) = self.last_heal_ms else {
            return Err("the workload never ended".into());
        };
        if self.truncated {
            return Ok(());
        }
        let deadline = (heal + self.within_ms).min(self.end_ms);
        let stuck: Vec<u32> = (0..self.clients)
            .filter(|c| {
                !self
                    .done
                    .get(c)
                    .is_some_and(|ts| ts.iter().any(|t| (heal..=deadline).contains(t)))
            })
            .collect();
        if stuck.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "clients {stuck:?} completed no operation between the last heal at {heal} ms and {deadline} ms"
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkers::test_support::*;
    use serde_json::json;

    #[test]
    fn a_client_that_never_recovers_is_caught() {
        let ok = op("stats", None, None, result(json!({})), 30_000);
        let end = Obs::End {
            last_heal_ms: 25_000,
        };
        run(
            &mut Liveness::new(1, 20_000, 60_000, false),
            &[ok.clone(), end.clone()],
        )
        .unwrap();
        let early = op("stats", None, None, result(json!({})), 10_000);
        assert!(
            run(
                &mut Liveness::new(1, 20_000, 60_000, false),
                &[early, end.clone()]
            )
            .is_err()
        );
        let late = op("stats", None, None, result(json!({})), 50_000);
        assert!(run(&mut Liveness::new(1, 20_000, 60_000, false), &[late, end]).is_err());
    }
}
