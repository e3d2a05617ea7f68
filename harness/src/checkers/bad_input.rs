//! Bad input: a malformed frame is answered with an error envelope and the connection stays up
//! (the next operation works); a connection flood is refused at the cap (`SPIRAL_MAX_CONNECTIONS`).

use super::{Checker, Obs, error_code};

pub struct BadInput;

impl Checker for BadInput {
    fn name(&self) -> &'static str {
        "bad_input"
    }

    fn observe(&mut self, obs: &Obs) -> Result<(), String> {
        match obs {
            Obs::BadFrame {
                client,
                server,
                frame,
                answer,
                alive,
            } => {
                if error_code(answer).is_none() {
                    return Err(format!(
                        "client-{client}: server-{server} answered the malformed frame {frame:?} with {answer}, not an error envelope"
                    ));
                }
                if !alive {
                    return Err(format!(
                        "client-{client}: server-{server} dropped the connection after the malformed frame {frame:?}"
                    ));
                }
            }
            Obs::Flood {
                client,
                server,
                accepted,
                cap,
                ..
            } if *accepted as usize > *cap => {
                return Err(format!(
                    "client-{client}: server-{server} accepted {accepted} connections of one flood; the cap is {cap}"
                ));
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkers::test_support::run;
    use serde_json::json;

    #[test]
    fn swallowed_frames_dropped_connections_and_floods_are_caught() {
        let frame = |answer, alive| Obs::BadFrame {
            client: 0,
            server: 0,
            frame: "{".into(),
            answer,
            alive,
        };
        let err = json!({"type": "error", "error": {"code": "bad_request"}});
        run(&mut BadInput, &[frame(err.clone(), true)]).unwrap();
        assert!(run(&mut BadInput, &[frame(err, false)]).is_err());
        assert!(run(&mut BadInput, &[frame(json!({"type": "result"}), true)]).is_err());
        let flood = |accepted| Obs::Flood {
            client: 0,
            server: 0,
            accepted,
            refused_503: true,
            cap: 64,
        };
        run(&mut BadInput, &[flood(60)]).unwrap();
        assert!(run(&mut BadInput, &[flood(68)]).is_err());
    }
}
