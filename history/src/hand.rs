//! Helpers for writing a history by hand: the checkers' unit tests and `tests/hand_made.rs` use
//! them to build the histories that must pass and the ones that must fail.

use serde_json::Value;
use spiral_server::protocol::ErrorCode;

use crate::checkers::Checker;
use crate::event::{Answer, Event, Op};

/// An operation of client 0 (user-0, tenant-0, server 0) sent at `t` ms, answered at `t + 1`.
pub fn op(op: Op, answer: Answer, t: u64) -> Event {
    Event::Op {
        client: 0,
        user: "user-0".into(),
        tenant: "tenant-0".into(),
        server: 0,
        op,
        sent_ms: t,
        done_ms: t + 1,
        answer,
    }
}

/// A refresh by `client` (user-`client`, server 0) whose chain began at 1000 s: a new token
/// `jti` expiring at `exp`.
pub fn refresh(client: u32, jti: &str, exp: u64) -> Event {
    Event::Refresh {
        client,
        server: 0,
        user: format!("user-{client}"),
        chain_start_s: 1_000,
        jti: Some(jti.into()),
        exp: Some(exp),
        status: Some(200),
    }
}

pub fn store(content: Value) -> Op {
    Op::Store {
        content,
        priority: None,
    }
}

pub fn get(id: &str) -> Op {
    Op::Get { id: id.into() }
}

pub fn collect(id: &str) -> Op {
    Op::Collect { id: id.into() }
}

pub fn stored(id: &str) -> Answer {
    Answer::Stored { id: id.into() }
}

pub fn read(content: Value) -> Answer {
    Answer::Read { content }
}

pub fn error(code: ErrorCode) -> Answer {
    Answer::Error {
        code,
        message: String::new(),
    }
}

/// A result the checkers do not look into (a list, the statistics).
pub fn listed() -> Answer {
    Answer::Listed {
        items: 0,
        ids: Vec::new(),
    }
}

/// Feed `events` to one checker in order; its first violation, if any.
pub fn run(c: &mut dyn Checker, events: &[Event]) -> Result<(), String> {
    for e in events {
        c.observe(e)?;
    }
    c.finish()
}

/// Feed `events` in order to a property judged on each event alone; its first violation.
pub fn run_each(judge: fn(&Event) -> Result<(), String>, events: &[Event]) -> Result<(), String> {
    events.iter().try_for_each(judge)
}
