//! GC keeps up: once the workload is over, a GC pass asked for on demand can start on every
//! server (none is marked running forever, as one abandoned mid-pass would leave it) and brings
//! the engine back within its capacity (`max_nodes`; no slack: at quiescence nothing competes);
//! and a store that takes an engine at capacity over it runs a pass before it is answered (the
//! capacity trigger: without it the engine overshoots until the interval trigger comes round).

use crate::event::Event;

/// The property, judged on each event alone.
pub fn judge(event: &Event) -> Result<(), String> {
    match event {
        Event::GcQuiescent {
            server,
            started: false,
            total,
            ..
        } => Err(format!(
            "server-{server}: no GC pass could start at quiescence (one is marked running and never ends); {total} nodes"
        )),
        Event::GcQuiescent {
            server,
            total,
            max_nodes,
            ..
        } if total > max_nodes => Err(format!(
            "server-{server}: {total} nodes after GC at quiescence; capacity {max_nodes}"
        )),
        Event::GcCapacityTrigger {
            server,
            before,
            max_nodes,
            ran: false,
            after,
        } if before >= max_nodes => Err(format!(
            "server-{server}: a store took the engine from {before} nodes (capacity {max_nodes}) to {after} and no GC pass ran"
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hand::run_each;

    fn q(started: bool, total: u64) -> Event {
        Event::GcQuiescent {
            server: 0,
            started,
            total,
            max_nodes: 64,
        }
    }

    #[test]
    fn a_stuck_or_lagging_gc_is_caught() {
        run_each(judge, &[q(true, 64), q(true, 3)]).unwrap();
        let e = run_each(judge, &[q(false, 10)]).unwrap_err();
        assert!(e.contains("never ends"), "{e}");
        assert!(run_each(judge, &[q(true, 65)]).is_err());
    }

    fn probe(before: u64, ran: bool) -> Event {
        Event::GcCapacityTrigger {
            server: 1,
            before,
            max_nodes: 64,
            ran,
            after: if ran { 64 } else { before + 1 },
        }
    }

    #[test]
    fn a_store_over_capacity_without_a_pass_is_caught() {
        run_each(
            judge,
            &[probe(64, true), probe(63, false), probe(10, false)],
        )
        .unwrap();
        let e = run_each(judge, &[probe(64, false)]).unwrap_err();
        assert!(
            e.contains("server-1") && e.contains("no GC pass ran"),
            "{e}"
        );
    }
}
