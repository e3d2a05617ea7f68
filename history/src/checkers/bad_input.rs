//! Bad input: a malformed frame is answered with an error envelope and the connection stays up
//! (the next operation works); a connection flood is refused at the cap (`SPIRAL_MAX_CONNECTIONS`).

use crate::event::Event;

/// The property, judged on each event alone.
pub fn judge(event: &Event) -> Result<(), String> {
    match event {
        Event::BadFrame {
            client,
            server,
            frame,
            answer,
            alive,
            disturbed,
        } => {
            if *disturbed && answer.as_ref().is_none_or(|a| a.error_code().is_some()) {
                // The network may have eaten the answer or the connection: nothing to judge.
                return Ok(());
            }
            if answer.as_ref().and_then(|a| a.error_code()).is_none() {
                return Err(format!(
                    "client-{client}: server-{server} answered the malformed frame {frame:?} with {answer:?}, not an error envelope"
                ));
            }
            if !alive {
                return Err(format!(
                    "client-{client}: server-{server} dropped the connection after the malformed frame {frame:?}"
                ));
            }
        }
        Event::Flood {
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
        Event::Flood {
            client,
            server,
            places: Some(places),
            cap,
            ..
        } if *places > *cap as u64 => {
            return Err(format!(
                "client-{client}: server-{server} held {places} places at the end of a flood; the cap is {cap}"
            ));
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hand::run_each;
    use serde_json::{Value, json};
    use spiral_server::protocol::{ErrorBody, ErrorCode, Reply};

    #[test]
    fn swallowed_frames_dropped_connections_and_floods_are_caught() {
        let frame = |answer, alive| Event::BadFrame {
            client: 0,
            server: 0,
            frame: "{".into(),
            answer,
            alive,
            disturbed: false,
        };
        let cut = |answer| Event::BadFrame {
            client: 0,
            server: 0,
            frame: "{".into(),
            answer,
            alive: false,
            disturbed: true,
        };
        let err = Reply::Error {
            id: Value::Null,
            error: ErrorBody {
                code: ErrorCode::BadRequest,
                message: "malformed message".into(),
                retry_after_ms: None,
            },
        };
        let result = Reply::Result {
            id: Value::Null,
            data: json!({}),
        };
        run_each(judge, &[frame(Some(err.clone()), true)]).unwrap();
        assert!(run_each(judge, &[frame(Some(err.clone()), false)]).is_err());
        assert!(run_each(judge, &[frame(Some(result.clone()), true)]).is_err());
        assert!(run_each(judge, &[frame(None, true)]).is_err());
        // Under a link fault a lost answer or a dead connection is not judged; a result is.
        run_each(judge, &[cut(None), cut(Some(err.clone()))]).unwrap();
        assert!(run_each(judge, &[cut(Some(result.clone()))]).is_err());
        let flood = |accepted| Event::Flood {
            client: 0,
            server: 0,
            accepted,
            refused_503: true,
            cap: 64,
            places: Some(64),
        };
        run_each(judge, &[flood(60)]).unwrap();
        assert!(run_each(judge, &[flood(68)]).is_err());
        let over = Event::Flood {
            client: 0,
            server: 0,
            accepted: 30,
            refused_503: true,
            cap: 64,
            places: Some(65),
        };
        let e = run_each(judge, &[over]).unwrap_err();
        assert!(e.contains("held 65 places"), "{e}");
    }
}
