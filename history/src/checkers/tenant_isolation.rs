//! Tenant isolation: reading or collecting another tenant's id answers `not_found` — never the
//! data, never a collect, and never an error that hints the id exists (errors unrelated to the id, such as `rate_limited`, pass);
//! a list names only well-formed ids, none of them acknowledged to another tenant; and GC
//! announces each node it removes as its owner's (that announcement is what the event stream
//! tells, to that tenant only).

use std::collections::BTreeMap;

use spiral_server::protocol::ErrorCode;

use super::Checker;
use crate::event::{Answer, Event, Op};

/// Who each acknowledged id was stored for.
#[derive(Debug, Default)]
pub struct TenantIsolation {
    owner: BTreeMap<String, String>,
}

impl Checker for TenantIsolation {
    fn name(&self) -> &'static str {
        "tenant_isolation"
    }

    fn observe(&mut self, event: &Event) -> Result<(), String> {
        if let Event::GcRemoved {
            server,
            id,
            tenant: Some(tenant),
        } = event
            && let Some(owner) = self.owner.get(id).filter(|o| *o != tenant)
        {
            return Err(format!(
                "server-{server}'s GC announced the removal of {id} as {tenant:?}'s; it was acknowledged to {owner}, whose stream is not told"
            ));
        }
        if let Event::Op {
            op, answer, tenant, ..
        } = event
        {
            match (op, answer) {
                (Op::Store { .. }, Answer::Stored { id }) => {
                    self.owner.insert(id.clone(), tenant.clone());
                }
                (Op::List, Answer::Listed { ids, .. }) => {
                    for id in ids {
                        if !super::is_node_id(id) {
                            return Err(format!("{tenant}'s list named {id:?}, not an id"));
                        }
                        if let Some(other) = self.owner.get(id).filter(|o| *o != tenant) {
                            return Err(format!(
                                "{tenant}'s list named {id}, acknowledged to {other}"
                            ));
                        }
                    }
                }
                _ => {}
            }
        }
        judge(event)
    }
}

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
        op, answer, tenant, ..
    } = event
    else {
        return Ok(());
    };
    let (Op::ForeignGet { id } | Op::ForeignCollect { id }) = op else {
        return Ok(());
    };
    let doing = if matches!(op, Op::ForeignGet { .. }) {
        "reading"
    } else {
        "collecting"
    };
    if !answer.answered() {
        return Ok(());
    }
    match answer.error_code() {
        None => Err(format!(
            "{tenant} {doing} another tenant's {id} succeeded: {answer:?}"
        )),
        Some(code) if !UNRELATED.contains(&code) => Err(format!(
            "{tenant} {doing} another tenant's {id} got `{code}`, not not_found"
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
        let collect = || Op::ForeignCollect { id: "x".into() };
        run_each(c, &[op(collect(), error(ErrorCode::NotFound), 0)]).unwrap();
        let e = run_each(c, &[op(collect(), Answer::Collected, 0)]).unwrap_err();
        assert!(e.contains("collecting another tenant's x succeeded"), "{e}");
    }

    #[test]
    fn a_list_naming_another_tenants_id_or_no_id_is_caught() {
        let listed = |ids: &[&str]| Answer::Listed {
            items: ids.len(),
            ids: ids.iter().map(|s| (*s).to_owned()).collect(),
        };
        let mut theirs = op(store(json!(1)), stored("ab12"), 0);
        if let Event::Op { tenant, .. } = &mut theirs {
            *tenant = "tenant-1".into();
        }
        let mine = op(store(json!(2)), stored("cd34"), 1);
        let list = |ids: &[&str]| op(Op::List, listed(ids), 2);
        let mut t = TenantIsolation::default();
        run(
            &mut t,
            &[theirs.clone(), mine.clone(), list(&["cd34", "ef56"])],
        )
        .unwrap();
        let e = run(
            &mut TenantIsolation::default(),
            &[theirs.clone(), list(&["ab12"])],
        )
        .unwrap_err();
        assert!(e.contains("acknowledged to tenant-1"), "{e}");
        let e = run(&mut TenantIsolation::default(), &[list(&[""])]).unwrap_err();
        assert!(e.contains("not an id"), "{e}");
    }

    #[test]
    fn gc_must_announce_a_removal_as_the_owners() {
        let mine = op(store(json!(1)), stored("ab12"), 0);
        let removed = |tenant: &str| Event::GcRemoved {
            server: 0,
            id: "ab12".into(),
            tenant: Some(tenant.into()),
        };
        run(
            &mut TenantIsolation::default(),
            &[mine.clone(), removed("tenant-0")],
        )
        .unwrap();
        let e = run(
            &mut TenantIsolation::default(),
            &[mine.clone(), removed("")],
        )
        .unwrap_err();
        assert!(
            e.contains("announced the removal of ab12 as \"\"'s; it was acknowledged to tenant-0"),
            "{e}"
        );
        // A node no store was acknowledged for is not judged, nor an announcement not on record.
        run(&mut TenantIsolation::default(), &[removed("")]).unwrap();
        let unknown = Event::GcRemoved {
            server: 0,
            id: "ab12".into(),
            tenant: None,
        };
        run(&mut TenantIsolation::default(), &[mine, unknown]).unwrap();
    }
}
