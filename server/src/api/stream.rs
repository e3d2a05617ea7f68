//! The event stream (SPEC §1.4): one hub task turns engine events, breaker changes and a
//! heartbeat into sanitized frames; each stream client receives its own tenant's events and the
//! global ones, at most `stream_frames_per_s` frames a second (the excess dropped and counted in
//! `ws_rate_limit_drops_total`). A client that falls behind the hub loses frames, counted in
//! `ws_backpressure_drops_total`.

use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::Router;
use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::sync::{broadcast, watch};

use super::socket::{self, Ending, Heartbeat, Outbox, Port, registry_close};
use super::{ApiError, AppState, Connections, Place, Slot};
use crate::auth::Principal;
use crate::clock::Instant;
use crate::engine::EngineEvent;
use crate::protocol::{CloseCode, Event, EventKind};
use crate::ratelimit::decide;

/// One frame for stream clients.
#[derive(Debug)]
pub struct Frame {
    /// `Some(t)`: only tenant `t`'s clients see it; `None`: everyone.
    pub tenant: Option<String>,
    /// The frame's text, one copy shared by every recipient (cloning it copies no bytes).
    pub text: Utf8Bytes,
    /// When the hub received the event behind it.
    pub since: Instant,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", any(upgrade))
        .route("/ws", any(upgrade))
        .fallback(|| async { ApiError::NotFound })
        .with_state(state)
}

/// Remove `reflection` and `insight.content` at any depth.
pub fn sanitize(v: &mut Value) {
    match v {
        Value::Object(map) => {
            map.remove("reflection");
            // `insight` is an object, or an array of them: `content` goes from each.
            match map.get_mut("insight") {
                Some(Value::Object(insight)) => {
                    insight.remove("content");
                }
                Some(Value::Array(insights)) if !crate::planted!(InsightArrayLeaks) => {
                    for insight in insights.iter_mut().filter_map(Value::as_object_mut) {
                        insight.remove("content");
                    }
                }
                _ => {}
            }
            for child in map.values_mut() {
                sanitize(child);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(sanitize),
        _ => {}
    }
}

/// An engine event as a frame: `{"type":"event","event":…,"data":…}`, sanitized.
pub fn render(event: &EngineEvent) -> (Option<String>, Value) {
    let mut v = serde_json::to_value(event).unwrap_or(Value::Null);
    sanitize(&mut v);
    let tenant = match event {
        EngineEvent::Stored { tenant, .. } | EngineEvent::Collected { tenant, .. } => {
            Some(tenant.clone())
        }
        EngineEvent::Gc(_) | EngineEvent::Rebuild(_) => None,
    };
    if let Some(data) = v.get_mut("data").and_then(Value::as_object_mut) {
        data.remove("tenant");
    }
    v["type"] = json!("event");
    (tenant, v)
}

/// A frame's message for one recipient: the frame's one copy of its text, shared.
fn message(text: &Utf8Bytes) -> Message {
    if crate::planted!(QueueUnboundedBytes) {
        // Planted: a copy of the frame for each recipient.
        return Message::Text(Utf8Bytes::from(text.as_str()));
    }
    Message::Text(text.clone())
}

/// The hub: relay engine events, report breaker changes, beat once a period, until `stop`.
pub async fn hub(st: AppState, mut stop: watch::Receiver<bool>) {
    let mut events = st.engine.subscribe();
    let period = Duration::from_millis(st.cfg.heartbeat_interval_ms.max(1));
    let mut beat = tokio::time::interval_at(st.clock.now() + period, period);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seq = 0u64;
    let mut breaker = st.storage.status().breaker_state;
    let publish = |tenant: Option<String>, v: Value, since: Instant| {
        let _ = st.hub.send(Arc::new(Frame {
            tenant,
            text: v.to_string().into(),
            since,
        }));
    };
    loop {
        tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break,
            ev = events.recv() => match ev {
                Ok(ev) => {
                    if let EngineEvent::Gc(r) = &ev {
                        st.metrics.gc_pause_ms.observe(r.pause_ms);
                    }
                    // Rendering costs a JSON round trip per event: only when someone listens.
                    if st.hub.receiver_count() > 0 {
                        let (tenant, v) = render(&ev);
                        publish(tenant, v, st.clock.now());
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    st.metrics.ws_backpressure_drops.add(n);
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
            scheduled = beat.tick() => {
                let now = st.clock.now();
                let skew = now.saturating_duration_since(scheduled).as_millis() as i64;
                st.metrics.heartbeat_skew_ms.set(skew);
                let status = st.storage.status();
                if status.breaker_state != breaker {
                    breaker = status.breaker_state;
                    let data = json!({
                        "state": super::breaker_name(breaker),
                        "opens_total": status.opens_total,
                        "journal_len": status.journal_len,
                    });
                    publish(None, Event { event: EventKind::Breaker, data }.to_value(), now);
                }
                seq += 1;
                let data = json!({"seq": seq, "time_ms": st.now_ms(), "skew_ms": skew});
                publish(None, Event { event: EventKind::Heartbeat, data }.to_value(), now);
            }
        }
    }
}

async fn upgrade(
    State(st): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    place: Option<Extension<Place>>,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let Ok(upgrade) = upgrade else {
        return ApiError::BadRequest("expected a WebSocket upgrade".into()).into_response();
    };
    match socket::admit(
        &st,
        &headers,
        query.as_deref(),
        Port::Stream,
        place.as_deref(),
    )
    .await
    {
        Err(e) => e.into_response(),
        Ok(a) => {
            let st2 = st.clone();
            socket::configure(upgrade, &st, a.protocol)
                .on_upgrade(move |socket| run(st2, socket, a.who, a.slot))
        }
    }
}

async fn run(st: AppState, socket: WebSocket, who: Principal, slot: Slot) {
    let mut frames = st.hub.subscribe();
    let mut reg = Connections::register(&st, slot, &who);
    let (sink, mut incoming) = socket.split();
    let out = Outbox::spawn(sink, &st);
    out.send_json(&socket::welcome(
        reg.id,
        &who,
        json!({
            "stream": true,
            "heartbeat_ms": st.cfg.heartbeat_interval_ms,
            "max_frames_per_s": st.cfg.stream_frames_per_s,
        }),
    ));
    let limit = st.cfg.stream_limit();
    let mut bucket = None;
    let mut beat = Heartbeat::new(&st);
    let slow = out.too_slow();
    tokio::pin!(slow);
    let ending = loop {
        tokio::select! {
            biased;
            changed = reg.closed.changed() => {
                let code = if changed.is_ok() { *reg.closed.borrow() } else { None };
                break registry_close(code);
            }
            () = &mut slow => break Ending::Close(CloseCode::PolicyViolation),
            msg = incoming.next() => match msg {
                None | Some(Ok(Message::Close(_))) => break Ending::Gone,
                Some(Err(e)) if socket::is_oversized(&e) => break Ending::Close(CloseCode::TooBig),
                Some(Err(_)) => break Ending::Gone,
                Some(Ok(Message::Pong(_))) => beat.missed = 0,
                // The stream is one-way; anything the client sends is ignored.
                Some(Ok(_)) => {}
            },
            frame = frames.recv() => match frame {
                Ok(f) => {
                    if f.tenant.as_deref().is_some_and(|t| t != who.tenant()) {
                        continue;
                    }
                    let (d, b) = decide(bucket, st.now_ms(), &limit);
                    bucket = Some(b);
                    if !d.allowed {
                        st.metrics.ws_rate_limit_drops.inc();
                        continue;
                    }
                    out.send(message(&f.text), Some(f.since));
                }
                Err(broadcast::error::RecvError::Lagged(n)) => st.metrics.ws_backpressure_drops.add(n),
                Err(broadcast::error::RecvError::Closed) => break Ending::Close(CloseCode::GoingAway),
            },
            _ = beat.ticker.tick() => {
                if let Some(end) = beat.tick(&st, &who, &out).await {
                    break end;
                }
            }
        }
    };
    match ending {
        Ending::Close(code) => {
            out.close(code).await;
            socket::await_client_close(&mut incoming).await;
        }
        Ending::Gone => out.finish().await,
    }
    drop(reg);
}

#[cfg(test)]
#[cfg(not(spiral_loom))]
mod tests {
    use super::*;

    #[test]
    fn reflection_and_insight_content_go_at_any_depth() {
        let mut v = json!({
            "reflection": "secret",
            "keep": 1,
            "insight": {"content": "secret", "score": 2},
            "nested": [{"deep": {"reflection": "x", "insight": {"content": "y", "id": 3}}}],
            "content": "kept: only insight.content goes",
        });
        sanitize(&mut v);
        assert_eq!(
            v,
            json!({
                "keep": 1,
                "insight": {"score": 2},
                "nested": [{"deep": {"insight": {"id": 3}}}],
                "content": "kept: only insight.content goes",
            })
        );
    }

    #[test]
    fn insight_content_goes_from_an_array_of_insights_too() {
        let mut v = json!({
            "insight": [{"content": "secret", "score": 1}, {"content": "also", "id": 2}, "text"],
            "deep": {"insight": [{"content": "x"}]},
        });
        sanitize(&mut v);
        assert_eq!(
            v,
            json!({
                "insight": [{"score": 1}, {"id": 2}, "text"],
                "deep": {"insight": [{}]},
            })
        );
    }

    #[test]
    fn every_recipient_of_a_frame_shares_its_one_copy() {
        let text: Utf8Bytes = "x".repeat(1 << 20).into();
        let (a, b) = (message(&text), message(&text));
        let (Message::Text(a), Message::Text(b)) = (a, b) else {
            panic!("text frames");
        };
        assert_eq!(a.as_str().as_ptr(), text.as_str().as_ptr());
        assert_eq!(b.as_str().as_ptr(), text.as_str().as_ptr());
    }

    #[test]
    fn a_stored_event_names_no_tenant_but_is_routed_by_it() {
        let ev = EngineEvent::Stored {
            id: "abc".into(),
            tenant: "t1".into(),
            spiral_id: "s".into(),
            content: json!({"reflection": "r", "text": "hi"}),
        };
        let (tenant, v) = render(&ev);
        assert_eq!(tenant.as_deref(), Some("t1"));
        assert_eq!(v["type"], "event");
        assert_eq!(v["event"], "stored");
        assert_eq!(v["data"]["content"], json!({"text": "hi"}));
        assert!(v["data"].get("tenant").is_none());
    }
}
