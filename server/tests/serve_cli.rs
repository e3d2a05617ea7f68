//! `spiral serve`, `token`, `status` and `tail` as an operator runs them: the real binaries, real
//! sockets, SIGTERM at the end.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use axum::http::Method;
use spiral_server::api::client::request_url;
use spiral_server::test_support::SECRET;

fn spiral() -> Command {
    Command::new(env!("CARGO_BIN_EXE_spiral"))
}

/// Three free loopback ports (bound, read, released).
fn free_ports() -> [u16; 3] {
    let ls: Vec<std::net::TcpListener> = (0..3)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    [0, 1, 2].map(|i| ls[i].local_addr().unwrap().port())
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
    }
}

fn token(args: &[&str]) -> String {
    let out = spiral()
        .env("JWT_SECRET", SECRET)
        .arg("token")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_answers_health_refuses_metrics_without_a_token_and_stops_on_sigterm() {
    let [http, ws, stream] = free_ports();
    let mut child = spiral()
        .args(["serve", "--http-addr", &format!("127.0.0.1:{http}")])
        .args([
            "--ws-addr",
            &format!("127.0.0.1:{ws}"),
            "--stream-addr",
            &format!("127.0.0.1:{stream}"),
        ])
        .env("JWT_SECRET", SECRET)
        .env("SPIRAL_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for "spiral listening" in the log.
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        })
        .unwrap();
    let server = Server(child);
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("server starts within 30 s");
        if line.contains("spiral listening") {
            break;
        }
    }
    let base = format!("http://127.0.0.1:{http}");
    let health = request_url(&base, Method::GET, "/health", None, None)
        .await
        .unwrap();
    assert_eq!(
        (health.status, health.json()["status"].as_str()),
        (200, Some("ok"))
    );
    let metrics = request_url(&base, Method::GET, "/metrics", None, None)
        .await
        .unwrap();
    assert_eq!(metrics.status, 401);

    // `token --output json` carries the claims; `--output token` is the bare token.
    let json: serde_json::Value = serde_json::from_str(&token(&[
        "--user-id",
        "ada",
        "--roles",
        "user,admin",
        "--tenant",
        "t1",
        "--scope",
        "metacog.stream",
        "--expires-in",
        "1d",
        "--output",
        "json",
    ]))
    .unwrap();
    assert_eq!(
        json["claims"]["roles"],
        serde_json::json!(["user", "admin"])
    );
    let exp = json["claims"]["exp"].as_u64().unwrap() - json["claims"]["iat"].as_u64().unwrap();
    assert_eq!(exp, 86_400);
    let t = token(&[
        "--user-id",
        "ada",
        "--tenant",
        "t1",
        "--scope",
        "metacog.stream",
    ]);
    let metrics = request_url(&base, Method::GET, "/metrics", Some(&t), None)
        .await
        .unwrap();
    assert_eq!(metrics.status, 200);

    let out = spiral()
        .args(["status", "--http-url", &base, "--token", &t])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["storage"]["backend"], "memory");
    let out = spiral()
        .args([
            "status",
            "--http-url",
            &base,
            "--token",
            "forged.token.here",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));

    // `tail --limit 2` prints two stream events (heartbeats, one per second) and exits.
    let t2 = token(&[
        "--user-id",
        "bob",
        "--tenant",
        "t1",
        "--scope",
        "metacog.stream",
    ]);
    let out = spiral()
        .args([
            "tail",
            "--ws-url",
            &format!("ws://127.0.0.1:{stream}"),
            "--token",
            &t2,
            "--limit",
            "2",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert!(lines.iter().all(|l| l["type"] == "event"));

    // SIGTERM: a clean exit.
    let mut child = server;
    let pid = child.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let mut code = None;
    for _ in 0..100 {
        if let Some(s) = child.0.try_wait().unwrap() {
            code = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(code.expect("exits within 5 s of SIGTERM").success());
}

#[test]
fn a_bad_setting_stops_serve_naming_the_variable() {
    let out = spiral()
        .args(["serve"])
        .env("JWT_SECRET", "short")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("JWT_SECRET"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = spiral()
        .args(["serve"])
        .env("JWT_SECRET", SECRET)
        .env("SPIRAL_RATE_LIMIT", "lots")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("SPIRAL_RATE_LIMIT"));
    for cmd in ["serve", "token", "status", "tail", "repair"] {
        let out = spiral().args([cmd, "--help"]).output().unwrap();
        assert!(
            out.status.success() && !out.stdout.is_empty(),
            "{cmd} --help"
        );
    }
}
