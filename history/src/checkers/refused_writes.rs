//! A refused store stays refused: a store answered with a clear refusal (`storage_unavailable`,
//! `bad_request`, `payload_too_large`, `rate_limited`, `unauthorized`, `forbidden`) is not in
//! durable storage at the end. SPEC §1.6: a full journal rejects the write — a rejection that
//! lands after all (and comes back with the next rebuild) is a lie to the client. `timeout`,
//! `internal` and no answer at all leave the outcome open, so they are not judged.
//!
//! And the refusal happens: the journal holds no more than `JOURNAL_MAX` writes plus those in
//! flight when the outage began, and reports that bound truly ([`Event::JournalBound`]).

use std::collections::BTreeMap;

use spiral_server::protocol::ErrorCode;

use super::Checker;
use crate::event::{Answer, Event, Op};

#[derive(Debug, Default)]
pub struct RefusedWrites {
    /// (client, seq) of each refused store → the code and when it was answered.
    refused: BTreeMap<(u64, u64), (ErrorCode, u64)>,
}

/// An answer that says the store did not happen and never will.
fn clear_refusal(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::StorageUnavailable
            | ErrorCode::BadRequest
            | ErrorCode::PayloadTooLarge
            | ErrorCode::RateLimited
            | ErrorCode::Unauthorized
            | ErrorCode::Forbidden
    )
}

impl Checker for RefusedWrites {
    fn name(&self) -> &'static str {
        "refused_writes"
    }

    fn observe(&mut self, event: &Event) -> Result<(), String> {
        if let Event::JournalBound {
            server,
            len,
            reported,
            max,
            slack,
        } = event
        {
            return Err(format!(
                "server-{server}'s degraded journal held {len} writes and reported a bound of {reported}; JOURNAL_MAX is {max}, and at most {slack} writes in flight may go past it"
            ));
        }
        match event {
            Event::Op {
                op: Op::Store { content, .. },
                answer: Answer::Error { code, .. },
                done_ms,
                ..
            } if clear_refusal(*code) => {
                if let (Some(c), Some(s)) = (content["client"].as_u64(), content["seq"].as_u64()) {
                    self.refused.insert((c, s), (*code, *done_ms));
                }
            }
            Event::UnackedAtRest {
                server,
                id,
                client: Some(c),
                seq: Some(s),
            } => {
                if let Some((code, at)) = self.refused.get(&(u64::from(*c), *s)) {
                    return Err(format!(
                        "client {c}'s store #{s}, refused with {} at {at} ms, is in server-{server}'s durable storage at the end as {id}",
                        code.as_str()
                    ));
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
    use crate::hand::*;
    use serde_json::json;

    fn at_rest(client: u32, seq: u64) -> Event {
        Event::UnackedAtRest {
            server: 0,
            id: "ab".into(),
            client: Some(client),
            seq: Some(seq),
        }
    }

    #[test]
    fn a_journal_past_its_bound_is_caught() {
        let past = Event::JournalBound {
            server: 1,
            len: 180,
            reported: 2,
            max: 2,
            slack: 128,
        };
        let e = run(&mut RefusedWrites::default(), &[past]).unwrap_err();
        assert!(
            e.contains("server-1's degraded journal held 180 writes and reported a bound of 2; JOURNAL_MAX is 2"),
            "{e}"
        );
        run(&mut RefusedWrites::default(), &[]).unwrap();
    }

    #[test]
    fn a_refused_store_found_at_rest_is_caught_and_an_open_outcome_is_not() {
        let content = json!({"client": 0, "seq": 7, "body": "x"});
        let refused = op(
            store(content.clone()),
            error(ErrorCode::StorageUnavailable),
            3,
        );
        let e = run(
            &mut RefusedWrites::default(),
            &[refused.clone(), at_rest(0, 7)],
        )
        .unwrap_err();
        assert!(e.contains("refused with storage_unavailable"), "{e}");
        // Another store of the client is no match.
        run(&mut RefusedWrites::default(), &[refused, at_rest(0, 8)]).unwrap();
        // A timeout leaves the outcome open: landing is allowed.
        let timed_out = op(store(content), error(ErrorCode::Timeout), 3);
        run(&mut RefusedWrites::default(), &[timed_out, at_rest(0, 7)]).unwrap();
    }
}
