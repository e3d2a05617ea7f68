//! Liveness: once the last fault has healed (the [`Phase::Liveness`] record), every well-behaved
//! client reconnects and completes an operation within `within_ms` (or before the workload ends,
//! if that comes first), and every server is serving again by the time the run settles
//! ([`Event::NotServing`]). Judged when the history ends; a history that never reached
//! [`Phase::Final`] did not finish its workload.

use std::collections::BTreeMap;

use super::{Checker, Class};
use crate::event::{Event, Phase};

pub struct Liveness {
    clients: u32,
    within_ms: u64,
    end_ms: u64,
    /// A truncated workload (shrinking) may stop clients early: nothing to judge.
    truncated: bool,
    /// Per client: the times of its successful operations.
    done: BTreeMap<u32, Vec<u64>>,
    last_heal_ms: Option<u64>,
    ended: bool,
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
            ended: false,
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

    fn observe(&mut self, event: &Event) -> Result<(), String> {
        match event {
            Event::Op {
                client,
                answer,
                done_ms,
                ..
            } if answer.is_result() => {
                self.done.entry(*client).or_default().push(*done_ms);
            }
            Event::Phase {
                phase: Phase::Liveness,
                at_ms,
            } => self.last_heal_ms = Some(*at_ms),
            Event::Phase {
                phase: Phase::Final,
                ..
            } => self.ended = true,
            Event::NotServing { server, waited_ms } => {
                return Err(format!(
                    "server-{server} was still not serving {waited_ms} ms after the workload ended, every fault healed before: it never came back"
                ));
            }
            _ => {}
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), String> {
        if !self.ended {
            return Err("the workload never ended".into());
        }
        let Some(heal) = self.last_heal_ms else {
            return Err("the faults never healed".into());
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
    use crate::event::Op;
    use crate::hand::*;

    fn phase(phase: Phase, at_ms: u64) -> Event {
        Event::Phase { phase, at_ms }
    }

    #[test]
    fn a_client_that_never_recovers_is_caught() {
        let healed = phase(Phase::Liveness, 25_000);
        let end = phase(Phase::Final, 60_000);
        let ok = op(Op::Stats, listed(), 30_000);
        let live = || Liveness::new(1, 20_000, 60_000, false);
        run(&mut live(), &[healed.clone(), ok.clone(), end.clone()]).unwrap();
        let early = op(Op::Stats, listed(), 10_000);
        assert!(run(&mut live(), &[early, healed.clone(), end.clone()]).is_err());
        let late = op(Op::Stats, listed(), 50_000);
        assert!(run(&mut live(), &[healed.clone(), late, end]).is_err());
        // A history that stops before its final phase did not finish its workload.
        let e = run(&mut live(), &[healed, ok]).unwrap_err();
        assert!(e.contains("never ended"), "{e}");
    }

    #[test]
    fn a_server_that_never_came_back_is_caught() {
        let healed = phase(Phase::Liveness, 25_000);
        let ok = op(Op::Stats, listed(), 30_000);
        let end = phase(Phase::Final, 60_000);
        let down = Event::NotServing {
            server: 1,
            waited_ms: 60_000,
        };
        let e = run(
            &mut Liveness::new(1, 20_000, 60_000, false),
            &[healed, ok, end, down],
        )
        .unwrap_err();
        assert!(
            e.contains("server-1 was still not serving 60000 ms after the workload ended"),
            "{e}"
        );
    }
}
