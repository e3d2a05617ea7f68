//! Tenant isolation: reading another tenant's id answers `not_found` — never the data and never
//! an error that hints the id exists (errors unrelated to the id, such as `rate_limited`, pass).

use spiral_server::protocol::ErrorCode;

use super::{Checker, Obs, error_code};

pub struct TenantIsolation;

/// Errors that say nothing about the id.
const UNRELATED: [ErrorCode; 4] = [
    ErrorCode::NotFound,
    ErrorCode::RateLimited,
    ErrorCode::StorageUnavailable,
    ErrorCode::Timeout,
];

impl Checker for TenantIsolation {
    fn name(&self) -> &'static str {
        "tenant_isolation"
    }

    fn observe(&mut self, obs: &Obs) -> Result<(), String> {
        let Obs::Op {
            op,
            answer,
            target,
            tenant,
            ..
        } = obs
        else {
            return Ok(());
        };
        if op != "foreign_get" || answer.is_null() {
            return Ok(());
        }
        let id = target.as_deref().unwrap_or("?");
        match error_code(answer) {
            None => Err(format!("{tenant} read another tenant's {id}: {answer}")),
            Some(code) if !UNRELATED.contains(&code) => Err(format!(
                "{tenant} reading another tenant's {id} got `{code}`, not not_found"
            )),
            Some(_) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkers::test_support::*;
    use serde_json::json;

    #[test]
    fn foreign_reads_must_be_not_found() {
        let mut c = TenantIsolation;
        run(
            &mut c,
            &[op("foreign_get", Some("x"), None, error("not_found"), 0)],
        )
        .unwrap();
        assert!(
            run(
                &mut c,
                &[op(
                    "foreign_get",
                    Some("x"),
                    None,
                    result(json!({"content": 1})),
                    0
                )]
            )
            .is_err()
        );
        assert!(
            run(
                &mut c,
                &[op("foreign_get", Some("x"), None, error("forbidden"), 0)]
            )
            .is_err()
        );
    }
}
