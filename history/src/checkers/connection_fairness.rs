//! Connection fairness (SPEC §1.9, "one user cannot take every slot"): a user that opens more
//! WebSockets at once than `SPIRAL_MAX_CONNECTIONS_PER_USER` gets no more than that many in. The
//! handshakes past the cap are refused with 429 and a `retry_after_ms` — not 503, as if the whole
//! server were full, nor 401, as if the token were bad — and once the user has closed its
//! connections it gets in again: every slot is given back. A reconnect storm leaves no slot
//! behind either, and at quiescence, once every client has finished, each live server's
//! connection table is empty again: no place under the cap and no registered subject is left
//! behind by a connection that ended.

use super::Checker;
use crate::event::Event;

/// The property, for servers whose per-user cap is `max_per_user`.
#[derive(Debug)]
pub struct ConnectionFairness {
    max_per_user: u64,
}

impl ConnectionFairness {
    /// `max_per_user`: the servers' `SPIRAL_MAX_CONNECTIONS_PER_USER`.
    pub fn new(max_per_user: u64) -> Self {
        Self { max_per_user }
    }
}

impl Checker for ConnectionFairness {
    fn name(&self) -> &'static str {
        "connection_fairness"
    }

    fn observe(&mut self, event: &Event) -> Result<(), String> {
        if let Event::Storm {
            client,
            server,
            user,
            rounds,
            accepted,
            held_after: Some(held),
            disturbed: false,
            ..
        } = event
            && *held > 0
        {
            return Err(format!(
                "client-{client}: server-{server} still held {held} connections for {user} a second after its reconnect storm ended ({accepted} of {rounds} let in, every one hung up): slots were not given back"
            ));
        }
        if let Event::ConnectionsAtRest {
            server,
            open,
            users,
            waited_ms,
        } = event
        {
            return if *open == 0 && *users == 0 {
                Ok(())
            } else {
                Err(format!(
                    "server-{server} still counted {open} places under its connection cap and \
                     {users} connected users {waited_ms} ms after every client had finished: a \
                     connection that ended was not given back"
                ))
            };
        }
        let Event::Hog {
            client,
            server,
            user,
            opened,
            accepted,
            refused_429,
            retry_after_ms,
            refused_other,
            rejoined,
            disturbed,
        } = event
        else {
            return Ok(());
        };
        let who = format!("client-{client}: server-{server}");
        let cap = self.max_per_user;
        if u64::from(*accepted) > cap {
            return Err(format!(
                "{who} let {user} open {accepted} of {opened} WebSockets at once; SPIRAL_MAX_CONNECTIONS_PER_USER is {cap}"
            ));
        }
        if *disturbed {
            // A fault stood between the hog and the server: only the cap is judged.
            return Ok(());
        }
        if !refused_other.is_empty() {
            return Err(format!(
                "{who} refused {user}'s handshakes past its cap of {cap} with {refused_other:?}, not 429"
            ));
        }
        if *refused_429 > 0 && retry_after_ms.is_none() {
            return Err(format!(
                "{who} refused {user}'s handshakes past its cap with 429 but no retry_after_ms"
            ));
        }
        if *rejoined == Some(false) {
            return Err(format!(
                "{who} kept refusing {user} after it had closed every connection: a slot was not given back"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hand::run;

    fn hog(accepted: u32, refused_429: u32, refused_other: Vec<u16>) -> Event {
        Event::Hog {
            client: 3,
            server: 0,
            user: "hog-3".into(),
            opened: 8,
            accepted,
            refused_429,
            retry_after_ms: (refused_429 > 0).then_some(1000),
            refused_other,
            rejoined: Some(true),
            disturbed: false,
        }
    }

    #[test]
    fn a_hog_held_to_its_cap_with_429s_passes() {
        run(&mut ConnectionFairness::new(4), &[hog(4, 4, vec![])]).unwrap();
        // Handshakes lost to the network are not the server's refusals.
        run(&mut ConnectionFairness::new(4), &[hog(3, 4, vec![])]).unwrap();
        // Under the cap, nothing needs refusing.
        run(&mut ConnectionFairness::new(16), &[hog(8, 0, vec![])]).unwrap();
    }

    #[test]
    fn a_hog_past_its_cap_fails() {
        let e = run(&mut ConnectionFairness::new(4), &[hog(8, 0, vec![])]).unwrap_err();
        assert!(e.contains("let hog-3 open 8 of 8"), "{e}");
        assert!(e.contains("SPIRAL_MAX_CONNECTIONS_PER_USER is 4"), "{e}");
    }

    #[test]
    fn refusals_past_the_cap_must_be_429_with_a_retry_after() {
        let e = run(
            &mut ConnectionFairness::new(4),
            &[hog(4, 2, vec![503, 503])],
        )
        .unwrap_err();
        assert!(e.contains("[503, 503], not 429"), "{e}");
        let e = run(&mut ConnectionFairness::new(4), &[hog(4, 0, vec![401; 4])]).unwrap_err();
        assert!(e.contains("not 429"), "{e}");
        let mut bare = hog(4, 4, vec![]);
        if let Event::Hog { retry_after_ms, .. } = &mut bare {
            *retry_after_ms = None;
        }
        let e = run(&mut ConnectionFairness::new(4), &[bare]).unwrap_err();
        assert!(e.contains("no retry_after_ms"), "{e}");
    }

    #[test]
    fn a_user_kept_out_after_closing_everything_fails() {
        let mut stuck = hog(4, 4, vec![]);
        if let Event::Hog { rejoined, .. } = &mut stuck {
            *rejoined = Some(false);
        }
        let e = run(&mut ConnectionFairness::new(4), &[stuck]).unwrap_err();
        assert!(e.contains("a slot was not given back"), "{e}");
        let mut unknown = hog(4, 4, vec![]);
        if let Event::Hog { rejoined, .. } = &mut unknown {
            *rejoined = None;
        }
        run(&mut ConnectionFairness::new(4), &[unknown]).unwrap();
    }

    #[test]
    fn a_storm_must_leave_no_slot_behind() {
        let storm = |held_after, disturbed| Event::Storm {
            client: 2,
            server: 0,
            user: "storm-2".into(),
            rounds: 12,
            accepted: 12,
            refused: 0,
            held_after,
            disturbed,
        };
        let mut c = ConnectionFairness::new(4);
        run(&mut c, &[storm(Some(0), false), storm(None, false)]).unwrap();
        run(&mut c, &[storm(Some(3), true)]).unwrap();
        let e = run(&mut c, &[storm(Some(2), false)]).unwrap_err();
        assert!(e.contains("still held 2 connections"), "{e}");
    }

    #[test]
    fn under_a_fault_only_the_cap_is_judged() {
        let mark = |mut e: Event| {
            if let Event::Hog { disturbed, .. } = &mut e {
                *disturbed = true;
            }
            e
        };
        // A server failing closed while Redis is away answers 503: not judged.
        run(
            &mut ConnectionFairness::new(4),
            &[mark(hog(2, 0, vec![503, 503]))],
        )
        .unwrap();
        // Past the cap is past the cap, fault or not.
        assert!(
            run(
                &mut ConnectionFairness::new(4),
                &[mark(hog(6, 0, vec![503]))]
            )
            .is_err()
        );
    }

    fn at_rest(open: usize, users: usize) -> Event {
        Event::ConnectionsAtRest {
            server: 1,
            open,
            users,
            waited_ms: 30_000,
        }
    }

    #[test]
    fn a_connection_table_left_counting_after_every_client_finished_fails() {
        run(&mut ConnectionFairness::new(4), &[at_rest(0, 0)]).unwrap();
        let e = run(&mut ConnectionFairness::new(4), &[at_rest(2, 0)]).unwrap_err();
        assert!(e.contains("server-1 still counted 2 places"), "{e}");
        // The subjects' count alone (the `ws_active_users` gauge) left behind fails too.
        let e = run(&mut ConnectionFairness::new(4), &[at_rest(0, 3)]).unwrap_err();
        assert!(e.contains("3 connected users"), "{e}");
    }
}
