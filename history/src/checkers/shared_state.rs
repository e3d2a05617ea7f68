//! Durable shared state (SPEC §1.9, "shared auth state persists wherever storage does"): a
//! server without Redis keeps its used handshake `jti`s in its own storage, so after any number
//! of restarts it still knows every one it admitted — none can be replayed against it.

use crate::event::Event;

/// The property, judged on each event alone.
pub fn judge(event: &Event) -> Result<(), String> {
    match event {
        Event::SharedDurable {
            server,
            backend,
            admitted,
            forgotten_count,
            forgotten,
        } if *forgotten_count > 0 => Err(format!(
            "server-{server} ({backend} shared state) forgot {forgotten_count} of the {admitted} handshake jtis it admitted, e.g. {}: each could be replayed",
            forgotten.join(", ")
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hand::run_each;

    fn end(forgotten: &[&str]) -> Event {
        Event::SharedDurable {
            server: 0,
            backend: "storage".into(),
            admitted: 12,
            forgotten_count: forgotten.len() as u64,
            forgotten: forgotten.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    #[test]
    fn a_forgotten_jti_fails_and_none_passes() {
        run_each(judge, &[end(&[])]).unwrap();
        let e = run_each(judge, &[end(&["c1-1", "c2-1"])]).unwrap_err();
        assert!(e.contains("forgot 2 of the 12"), "{e}");
        assert!(e.contains("c1-1, c2-1"), "{e}");
    }
}
