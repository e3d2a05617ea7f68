//! Tenant isolation: reading another tenant's id answers `not_found` — never the data and never
//! an error that hints the id exists (errors unrelated to the id, such as `rate_limited`, pass).

use spiral_server::protocol::ErrorCode;

use crate::event::{Event, Op};

/// Errors that say nothing about the id.
const UNRELATED: [ErrorCode; 4] = [
    ErrorCode::NotFound,
    ErrorCode::RateLimited,
    ErrorCode::StorageUnavailable,
    ErrorCode::Timeout,
];

/// The property, judged on each event alone.
pub fn judge(event: &Event) -> Result<(), String> {
    let Event::Op {
        op: Op::ForeignGet { id },
        answer,
        tenant,
        ..
    } = event
    else {
        return Ok(());
    };
    if !answer.answered() {
        return Ok(());
    }
    match answer.error_code() {
        None => Err(format!("{tenant} read another tenant's {id}: {answer:?}")),
        Some(code) if !UNRELATED.contains(&code) => Err(format!(
            "{tenant} reading another tenant's {id} got `{code}`, not not_found"
        )),
        Some(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hand::*;
    use serde_json::json;

    #[test]
    fn foreign_reads_must_be_not_found() {
        let c = judge;
        let foreign = || Op::ForeignGet { id: "x".into() };
        run_each(c, &[op(foreign(), error(ErrorCode::NotFound), 0)]).unwrap();
        assert!(run_each(c, &[op(foreign(), read(json!(1)), 0)]).is_err());
        assert!(run_each(c, &[op(foreign(), error(ErrorCode::Forbidden), 0)]).is_err());
        // A lost answer says nothing.
        let lost = crate::event::Answer::Lost {
            error: "closed".into(),
        };
        run_each(c, &[op(foreign(), lost, 0)]).unwrap();
    }
}
