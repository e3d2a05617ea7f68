//! GC's second chance (SPEC §1.5, `GC_FORCE_SKIP`): a node its owner has read is spared by the
//! next GC pass that reaches it, until it has been spared `GC_FORCE_SKIP` times. Judged on the
//! case the history pins down: a node whose owner read it successfully — with no read of it
//! attempted before — must not be taken by the first GC pass on that server that started after
//! the read was answered (before it, no pass can have spent the node's chance). A restart clears
//! what the engine remembers of reads, and a clock jump makes a pass's start uncertain: servers
//! with either are not judged from then on.
//!
//! And the other way round: a second chance is only for a node read since GC last considered
//! it. Each one a pass grants spends the mark a read of that node left, so by the end of a run
//! the chances a server's passes granted cannot outnumber the reads sent to it (every attempt
//! counts, answered or not: one the answer of which was lost may have marked its node too).

use std::collections::{BTreeMap, BTreeSet};

use super::Checker;
use crate::event::{Answer, Event, Op};
use crate::fault::FaultKind;

/// How far a pass's recorded start may be from its real one: it is the time its report reached
/// the world less its pause, and the report may arrive a few network steps after the pass ended.
const MARGIN_MS: u64 = 50;

#[derive(Debug, Default)]
pub struct SecondChance {
    force_skip: u64,
    /// Per server and id: when the first read of it was answered with the node (none: the first
    /// read attempt did not, so the node's chances are not known).
    first_read: BTreeMap<(u32, String), Option<u64>>,
    /// Per server: when each GC pass started (ms, simulated).
    passes: BTreeMap<u32, Vec<u64>>,
    /// Per server: the nodes GC removed since its last pass was reported.
    removed: BTreeMap<u32, Vec<String>>,
    /// Servers no longer judged (restarted or their clock jumped).
    unjudged: BTreeSet<u32>,
    /// Per server: reads sent to it, and second chances its passes granted.
    reads: BTreeMap<u32, u64>,
    spared: BTreeMap<u32, u64>,
}

impl SecondChance {
    pub fn new(force_skip: u64) -> Self {
        Self {
            force_skip,
            ..Self::default()
        }
    }
}

fn server_of(host: &str) -> Option<u32> {
    host.strip_prefix("server-")?.parse().ok()
}

impl Checker for SecondChance {
    fn name(&self) -> &'static str {
        "gc_second_chance"
    }

    fn observe(&mut self, event: &Event) -> Result<(), String> {
        if let Event::Gc {
            server,
            spared: Some(n),
            ..
        } = event
        {
            *self.spared.entry(*server).or_default() += n;
        }
        match event {
            Event::Op {
                server,
                op: Op::Get { id },
                answer,
                done_ms,
                ..
            } => {
                let read = matches!(answer, Answer::Read { .. }).then_some(*done_ms);
                self.first_read.entry((*server, id.clone())).or_insert(read);
                *self.reads.entry(*server).or_default() += 1;
            }
            Event::Fault {
                kind:
                    FaultKind::Crash | FaultKind::Bounce | FaultKind::Terminate | FaultKind::ClockSkew,
                a: Some(a),
                ..
            } => {
                if let Some(s) = server_of(a) {
                    self.unjudged.insert(s);
                }
            }
            Event::GcRemoved { server, id, .. } => {
                self.removed.entry(*server).or_default().push(id.clone());
            }
            Event::Gc {
                server,
                started_ms: Some(start),
                ..
            } => {
                let removed = self.removed.remove(server).unwrap_or_default();
                let starts = self.passes.entry(*server).or_default();
                let judged = self.force_skip > 0 && !self.unjudged.contains(server);
                for id in removed.iter().filter(|_| judged) {
                    let Some(Some(read_ms)) = self.first_read.get(&(*server, id.clone())) else {
                        continue;
                    };
                    // Surely after the read, and surely the first: no other pass may have
                    // started after it (pass starts are known to within `MARGIN_MS`). A pass
                    // reported earlier counts even when it started in the same millisecond
                    // (a pass that left excess is followed at once by the next).
                    let first_after = read_ms + MARGIN_MS < *start
                        && !starts
                            .iter()
                            .any(|s| s + MARGIN_MS > *read_ms && s <= start);
                    if first_after {
                        return Err(format!(
                            "server-{server}: the GC pass that started at {start} ms took {id}, read by its owner at {read_ms} ms; the first pass after a read must spare it (GC_FORCE_SKIP {})",
                            self.force_skip
                        ));
                    }
                }
                starts.push(*start);
            }
            _ => {}
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), String> {
        for (server, spared) in &self.spared {
            let reads = self.reads.get(server).copied().unwrap_or(0);
            if *spared > reads {
                return Err(format!(
                    "server-{server}'s GC passes spared {spared} nodes for a second chance, but only {reads} reads were sent to it: a second chance is for a node read since GC last considered it"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hand::{get, op, read, run};
    use serde_json::json;

    fn pass(started_ms: u64) -> Event {
        Event::Gc {
            server: 0,
            pause_ms: 1.0,
            budget_ms: 25,
            collected: 1,
            excess: Some(1),
            started_ms: Some(started_ms),
            spared: None,
        }
    }

    fn removed(id: &str) -> Event {
        Event::GcRemoved {
            server: 0,
            id: id.into(),
            tenant: None,
        }
    }

    #[test]
    fn the_first_pass_after_a_read_must_spare_the_node() {
        let read_at = |t| op(get("a"), read(json!(1)), t);
        // Read at 11 ms (answered), the next pass starts at 100 and takes it.
        let e = run(
            &mut SecondChance::new(3),
            &[read_at(10), removed("a"), pass(100)],
        )
        .unwrap_err();
        assert!(e.contains("took a, read by its owner at 11 ms"), "{e}");
        // A pass in between (reported first, even from the same millisecond) — or one that may
        // have started after the read — may have spent the
        // chance.
        for between in [80, 30, 100] {
            run(
                &mut SecondChance::new(3),
                &[read_at(10), pass(between), removed("a"), pass(100)],
            )
            .unwrap();
        }
        // No second chances configured, or a pass that may have begun before the read.
        run(
            &mut SecondChance::new(0),
            &[read_at(10), removed("a"), pass(100)],
        )
        .unwrap();
        run(
            &mut SecondChance::new(3),
            &[read_at(10), removed("a"), pass(40)],
        )
        .unwrap();
    }

    #[test]
    fn second_chances_cannot_outnumber_the_reads() {
        let sparing = |n| Event::Gc {
            server: 0,
            pause_ms: 1.0,
            budget_ms: 25,
            collected: 1,
            excess: Some(1),
            started_ms: Some(100),
            spared: Some(n),
        };
        let read_at = |t| op(get("a"), read(json!(1)), t);
        // Two reads, two chances (over two passes): fine; a third chance had no read to spend.
        run(
            &mut SecondChance::new(3),
            &[read_at(10), read_at(20), sparing(1), sparing(1)],
        )
        .unwrap();
        let e = run(
            &mut SecondChance::new(3),
            &[read_at(10), read_at(20), sparing(1), sparing(2)],
        )
        .unwrap_err();
        assert!(
            e.contains("spared 3 nodes for a second chance, but only 2 reads were sent to it"),
            "{e}"
        );
        // A read whose answer was lost counts: it may have marked its node.
        let lost = op(
            get("b"),
            Answer::Lost {
                error: "closed".into(),
            },
            30,
        );
        run(&mut SecondChance::new(3), &[read_at(10), lost, sparing(2)]).unwrap();
    }
}
