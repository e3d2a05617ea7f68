//! Slow clients: a socket that never completes its request header is closed within
//! `HTTP_HEADER_TIMEOUT_MS`, an idle keep-alive connection within `HTTP_IDLE_TIMEOUT_MS`, on every
//! listener; and accepted-but-not-upgraded sockets on a WebSocket port count towards
//! `SPIRAL_MAX_CONNECTIONS`, so while they fill it no handshake gets in (SPEC §1.9).

use crate::event::Event;

/// The property, judged on each event alone.
pub fn judge(event: &Event) -> Result<(), String> {
    let Event::SlowSockets {
        client,
        server,
        port,
        kind,
        opened,
        closed,
        within_ms,
        probe,
        disturbed: false,
    } = event
    else {
        return Ok(());
    };
    let who = format!("client-{client}: server-{server} port {port}");
    if probe == &Some(true) {
        return Err(format!(
            "{who} admitted a WebSocket while {opened} accepted-but-not-upgraded sockets ({kind}) held SPIRAL_MAX_CONNECTIONS"
        ));
    }
    if closed < opened {
        return Err(format!(
            "{who} left {} of {opened} sockets ({kind}) open {within_ms} ms after they went quiet",
            opened - closed
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hand::run_each;

    fn slow(closed: u32, probe: Option<bool>) -> Event {
        Event::SlowSockets {
            client: 7,
            server: 0,
            port: 3001,
            kind: "half header".into(),
            opened: 32,
            closed,
            within_ms: 3_000,
            probe,
            disturbed: false,
        }
    }

    #[test]
    fn sockets_closed_in_time_with_the_cap_held_pass() {
        run_each(judge, &[slow(32, Some(false)), slow(32, None)]).unwrap();
    }

    #[test]
    fn under_a_link_fault_nothing_is_judged() {
        let mut cut = slow(0, Some(true));
        if let Event::SlowSockets { disturbed, .. } = &mut cut {
            *disturbed = true;
        }
        run_each(judge, &[cut]).unwrap();
    }

    #[test]
    fn a_socket_left_open_fails() {
        let e = run_each(judge, &[slow(30, Some(false))]).unwrap_err();
        assert!(
            e.contains("left 2 of 32 sockets (half header) open 3000 ms"),
            "{e}"
        );
    }

    #[test]
    fn a_handshake_admitted_past_a_cap_of_waiting_sockets_fails() {
        let e = run_each(judge, &[slow(32, Some(true))]).unwrap_err();
        assert!(e.contains("admitted a WebSocket while 32"), "{e}");
    }
}
