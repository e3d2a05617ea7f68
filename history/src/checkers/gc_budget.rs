//! GC pause within budget: a pass, timed on the server's clock (simulated time), stops at its
//! budget; it may overrun by the delete batch in flight, bounded by `grace_ms`.

use super::Checker;
use crate::event::Event;

pub struct GcBudget {
    grace_ms: u64,
}

impl GcBudget {
    pub fn new(grace_ms: u64) -> Self {
        Self { grace_ms }
    }
}

impl Checker for GcBudget {
    fn name(&self) -> &'static str {
        "gc_budget"
    }

    fn observe(&mut self, event: &Event) -> Result<(), String> {
        match event {
            Event::Gc {
                server,
                pause_ms,
                budget_ms,
                collected,
                ..
            } if *pause_ms > (*budget_ms + self.grace_ms) as f64 => Err(format!(
                "server-{server}: a GC pass took {pause_ms:.1} ms (collected {collected}); budget {budget_ms} ms + {} ms grace",
                self.grace_ms
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hand::run;

    #[test]
    fn an_overlong_pass_is_caught() {
        let gc = |pause_ms| Event::Gc {
            server: 0,
            pause_ms,
            budget_ms: 25,
            collected: 3,
            excess: None,
            started_ms: None,
            spared: None,
        };
        run(&mut GcBudget::new(25), &[gc(49.0)]).unwrap();
        assert!(run(&mut GcBudget::new(25), &[gc(51.0)]).is_err());
    }
}
