//! Close codes: the server ends a connection with the code its cause calls for — 4001 when the
//! peer stops answering pings, 4000 when it sends no data for the idle timeout, 1009 for an
//! oversized frame, 4003 when its subject is revoked.

use crate::event::Event;

/// The property, judged on each event alone.
pub fn judge(event: &Event) -> Result<(), String> {
    match event {
        Event::Closed {
            client,
            server,
            why,
            expected,
            got,
            after_ms,
            disturbed: false,
        } if !got.is_some_and(|g| expected.contains(&g)) => {
            let got = got.map_or("no close frame".to_owned(), |g| format!("close code {g}"));
            Err(format!(
                "client-{client} ({why}) on server-{server}: expected close code {expected:?}, got {got} after {after_ms} ms"
            ))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hand::run_each;

    #[test]
    fn a_wrong_or_missing_close_code_is_caught() {
        let closed = |got| Event::Closed {
            client: 0,
            server: 0,
            why: "silent".into(),
            expected: vec![4001],
            got,
            after_ms: 15_000,
            disturbed: false,
        };
        run_each(judge, &[closed(Some(4001))]).unwrap();
        assert!(run_each(judge, &[closed(Some(1000))]).is_err());
        assert!(run_each(judge, &[closed(None)]).is_err());
        // A link fault stood in the way: not judged.
        let mut cut = closed(None);
        if let Event::Closed { disturbed, .. } = &mut cut {
            *disturbed = true;
        }
        run_each(judge, &[cut]).unwrap();
    }
}
