//! What the real world watches while the run goes on (GC removals, from each server's event
//! stream) and what it looks at when the workload is over — the simulator's final phase, asked
//! of real processes and real storage: journals replayed and breakers closed, each engine's
//! count against its storage, every acknowledged store looked up, every unacknowledged node at
//! rest named, GC on demand, and the connection tables empty.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::http::Method;
use futures_util::StreamExt;
use serde_json::Value;
use spiral_harness::scenario::StorageKind;
use spiral_harness::world::real::{self, Session};
use spiral_history::{Event, Phase};
use spiral_server::api::client;
use spiral_server::auth::{Claims, Keys, STREAM_SCOPE};
use spiral_server::engine::{NODE_PREFIX, node_key};
use spiral_server::storage::SharedStorage;
use spiral_server::storage::redis::{RedisConfig, RedisStorage};
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use super::World;

/// The harness's own instruments, running until the final checks stop them.
pub(super) struct Observers {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// A token the harness signs for itself.
fn token(sub: &str, tenant: &str, roles: &[&str], stream: bool, duration_s: u64) -> String {
    let epoch_s = real::EPOCH_UNIX_MS / 1000;
    let mut c = Claims::new(sub, tenant, epoch_s + duration_s + 3600)
        .roles(roles)
        .issued_at(epoch_s);
    if stream {
        c = c.scope(STREAM_SCOPE);
    }
    Keys::hs256(real::jwt_secret().as_bytes())
        .mint(&c)
        .unwrap_or_default()
}

/// Watch every server's event stream, one connection per tenant, straight to the server (not
/// through a proxy: the instrument is not part of the world): each GC removal is recorded, as
/// the simulator records it from the engine's channel — an acknowledged node GC removed is gone
/// legally.
pub(super) async fn observe(world: Arc<Mutex<World>>) -> Observers {
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    let w = world.lock().await;
    let sc = w.session.scenario().clone();
    for (s, server) in w.servers.iter().enumerate() {
        for t in 0..sc.workload.tenants {
            let tenant = format!("tenant-{t}");
            let tok = token(
                &format!("observer-{t}"),
                &tenant,
                &["user"],
                true,
                sc.world.duration_s,
            );
            let url = format!("ws://{}/", server.addrs[2]);
            let session = w.session.clone();
            let stop = stop.clone();
            tasks.push(tokio::spawn(async move {
                watch(&url, &tok, &tenant, s as u32, &session, &stop).await;
            }));
        }
    }
    Observers { stop, tasks }
}

/// `tenant`'s stream: the GC removals it is told of are announced as that tenant's.
async fn watch(
    url: &str,
    tok: &str,
    tenant: &str,
    server: u32,
    session: &Session,
    stop: &AtomicBool,
) {
    while !stop.load(Ordering::SeqCst) {
        let Ok(mut req) = url.into_client_request() else {
            return;
        };
        if let Ok(v) = format!("Bearer {tok}").parse() {
            req.headers_mut().insert("authorization", v);
        }
        let Ok(Ok((mut ws, _))) = tokio::time::timeout(
            Duration::from_secs(2),
            tokio_tungstenite::connect_async(req),
        )
        .await
        else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        while !stop.load(Ordering::SeqCst) {
            let next = tokio::time::timeout(Duration::from_millis(500), ws.next()).await;
            match next {
                Err(_) => continue,
                Ok(Some(Ok(Message::Text(t)))) => {
                    let v: Value = serde_json::from_str(t.as_str()).unwrap_or_default();
                    if v["event"] == "collected"
                        && v["data"]["by_gc"] == true
                        && let Some(id) = v["data"]["id"].as_str()
                    {
                        session.record(Event::GcRemoved {
                            server,
                            id: id.to_owned(),
                            tenant: Some(tenant.to_owned()),
                        });
                    }
                }
                Ok(Some(Ok(_))) => {}
                Ok(None) | Ok(Some(Err(_))) => break,
            }
        }
        let _ = ws.close(None).await;
    }
}

/// `method path` on server `s`'s HTTP port, straight (not through a proxy), as an admin user
/// of its own — a fresh one each call, so that no rate limit stands between the harness and the
/// answer.
async fn http(world: &Mutex<World>, s: usize, method: Method, path: &str) -> Result<Value, String> {
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = CALLS.fetch_add(1, Ordering::Relaxed);
    let (addr, duration_s) = {
        let w = world.lock().await;
        (w.servers[s].addrs[0], w.session.scenario().world.duration_s)
    };
    let tok = &token(
        &format!("harness-admin-{n}"),
        "tenant-0",
        &["user", "admin"],
        false,
        duration_s,
    );
    let reply = tokio::time::timeout(
        Duration::from_secs(5),
        client::request_url(&format!("http://{addr}"), method, path, Some(tok), None),
    )
    .await
    .map_err(|_| format!("{path}: no answer in 5 s"))??;
    if reply.status >= 400 {
        return Err(format!("{path}: HTTP {}", reply.status));
    }
    serde_json::from_slice(&reply.body).map_err(|e| format!("{path}: {e}"))
}

/// Each server's node storage, opened by the harness to look inside: Redis in the server's
/// namespace, or (once the servers are stopped) the embedded file. `None`: memory storage.
async fn storages(world: &Mutex<World>) -> anyhow::Result<Vec<Option<SharedStorage>>> {
    let w = world.lock().await;
    let mut out = Vec::new();
    for (s, server) in w.servers.iter().enumerate() {
        out.push(match w.storage() {
            StorageKind::Redis => {
                let r = w
                    .redis
                    .as_ref()
                    .ok_or_else(|| anyhow::anyhow!("no Redis"))?;
                let redis = RedisStorage::connect(RedisConfig::new(format!("redis://{}", r.addr)))
                    .await?
                    .with_namespace(super::namespace(s as u32))?;
                Some(Arc::new(redis) as SharedStorage)
            }
            StorageKind::Embedded => Some(Arc::new(
                spiral_server::storage::embedded::EmbeddedStorage::open(
                    server.dir.join("spiral.redb"),
                )?,
            ) as SharedStorage),
            StorageKind::Memory => None,
        });
    }
    Ok(out)
}

/// The simulator's phase 4, for real.
pub(super) async fn final_checks(
    world: &Arc<Mutex<World>>,
    session: &Session,
    observers: Observers,
) {
    let sc = session.scenario().clone();
    let n = sc.world.servers as usize;
    session.record(Event::Phase {
        phase: Phase::Final,
        at_ms: real::elapsed_ms(),
    });
    // Settle: journals replayed, breakers closed (bounded).
    for _ in 0..600 {
        let mut settled = true;
        for s in 0..n {
            match http(world, s, Method::GET, "/ready").await {
                Ok(v) if v["journal_len"] == 0 && v["degraded"] == false => {}
                _ => settled = false,
            }
        }
        if settled {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The engines' counts, while they run.
    let mut totals = Vec::new();
    for s in 0..n {
        totals.push(
            http(world, s, Method::GET, "/v1/spirals")
                .await
                .ok()
                .and_then(|v| v["total_memories"].as_u64()),
        );
    }
    let embedded = world.lock().await.storage() == StorageKind::Embedded;
    if embedded {
        // The file is the server's while it runs: stop them (gracefully) to look inside.
        let mut w = world.lock().await;
        for server in &mut w.servers {
            let _ = server.terminate(Duration::from_secs(15)).await;
        }
    }
    let stores = match storages(world).await {
        Ok(s) => s,
        Err(e) => {
            session.harness_error(format!("opening storage for the final checks: {e:#}"));
            return;
        }
    };
    for (s, store) in stores.iter().enumerate() {
        let (Some(store), Some(total)) = (store, totals[s]) else {
            continue;
        };
        let held = store.keys(NODE_PREFIX).await.map(|k| k.len() as u64);
        let (ok, detail) = match held {
            Ok(held) if held == total => (true, "invariant 1 holds".to_owned()),
            Ok(held) => (
                false,
                format!("invariant 1: engine counts {total} nodes, storage holds {held}"),
            ),
            Err(e) => (false, format!("storage unreadable: {e}")),
        };
        session.record(Event::EngineCheck {
            server: s as u32,
            ok,
            detail,
        });
    }
    // Every acknowledged store, looked up where its server keeps it.
    for (id, server) in session.acked() {
        let found = match &stores[server as usize] {
            Some(store) => store.get(&node_key(&id)).await.ok().flatten().is_some(),
            None => {
                // Memory storage lives in the server: ask it, as the node's tenant — a user of
                // its own per lookup, so that no rate limit stands between the harness and
                // the answer. Anything but 200 or 404 is the harness's failure, not a verdict.
                let tenant = session.acked_tenant(&id).unwrap_or_default();
                let reader = format!("harness-reader-{id}");
                let tok = token(&reader, &tenant, &["user"], false, sc.world.duration_s);
                let addr = world.lock().await.servers[server as usize].addrs[0];
                let path = format!("/v1/memories/{id}");
                let base = format!("http://{addr}");
                match client::request_url(&base, Method::GET, &path, Some(&tok), None).await {
                    Ok(r) if r.status == 200 => true,
                    Ok(r) if r.status == 404 => false,
                    other => {
                        session.harness_error(format!(
                            "looking {id} up on server-{server}: {:?}",
                            other.map(|r| r.status)
                        ));
                        return;
                    }
                }
            }
        };
        if !found {
            session.record(Event::Durable { id, server, found });
        }
    }
    // Nodes at rest that no store was acknowledged for.
    let acked: std::collections::BTreeSet<String> =
        session.acked().into_iter().map(|(id, _)| id).collect();
    for (s, store) in stores.iter().enumerate() {
        let Some(store) = store else { continue };
        for (key, v) in store.scan_prefix(NODE_PREFIX).await.unwrap_or_default() {
            let id = key[NODE_PREFIX.len()..].to_owned();
            if acked.contains(&id) {
                continue;
            }
            let content = &v["content"];
            session.record(Event::UnackedAtRest {
                server: s as u32,
                id,
                client: content["client"].as_u64().map(|c| c as u32),
                seq: content["seq"].as_u64(),
            });
        }
    }
    if embedded {
        // Back up, for GC on demand and the connection tables.
        drop(stores);
        let mut w = world.lock().await;
        for server in &mut w.servers {
            if let Err(e) = server.start().await {
                session.harness_error(format!("restarting for the final checks: {e:#}"));
                return;
            }
        }
    }
    // GC on demand: a pass must start and bring each engine within capacity.
    for (s, counted) in totals.iter().enumerate() {
        let mut started = false;
        let mut total = counted.unwrap_or(0);
        for _ in 0..50 {
            match http(world, s, Method::POST, "/admin/gc").await {
                Ok(v) if v["ran"] == true => {
                    started = true;
                    total = http(world, s, Method::GET, "/v1/spirals")
                        .await
                        .ok()
                        .and_then(|v| v["total_memories"].as_u64())
                        .unwrap_or(total);
                    if total <= sc.world.max_nodes {
                        break;
                    }
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        session.record(Event::GcQuiescent {
            server: s as u32,
            started,
            total,
            max_nodes: sc.world.max_nodes,
        });
    }
    // The instruments go, then every connection table must empty.
    observers.stop.store(true, Ordering::SeqCst);
    for t in observers.tasks {
        let _ = t.await;
    }
    let wait_ms = 3 * sc.world.ws_ping_interval_ms + 5_000;
    for s in 0..n {
        let t0 = real::elapsed_ms();
        let (mut open, mut users) = (0, 0);
        while real::elapsed_ms() - t0 < wait_ms {
            if let Ok(v) = http(world, s, Method::GET, "/status").await {
                open = v["connections"].as_u64().unwrap_or(0) as usize;
                users = v["users"].as_u64().unwrap_or(0) as usize;
                if open + users == 0 {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        session.record(Event::ConnectionsAtRest {
            server: s as u32,
            open,
            users,
            waited_ms: real::elapsed_ms() - t0,
        });
    }
}
