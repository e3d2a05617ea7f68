//! `rediss://` with `REDIS_CA` against a real TLS Redis (SPEC §1.6): a CA and a server
//! certificate are made with `openssl`, `redis-server` serves TLS only, and the adapter must work
//! with our CA and refuse a server its CA did not sign.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;
use spiral_chaos::redis_fixture::{in_ci, loud};
use spiral_server::StorageError;
use spiral_server::storage::Storage;
use spiral_server::storage::redis::{RedisConfig, RedisStorage};

/// Kills the TLS server however the test ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn sh(dir: &Path, script: &str) -> bool {
    Command::new("sh")
        .arg("-ec")
        .arg(script)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A CA, a server certificate it signs (for 127.0.0.1 and localhost), and an unrelated CA.
fn make_certificates(dir: &Path) -> bool {
    sh(
        dir,
        r#"
        openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=spiral test CA" \
          -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
          -keyout ca.key -out ca.pem
        openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=other CA" \
          -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
          -keyout other.key -out other.pem
        openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" -keyout server.key -out server.csr
        printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n' > ext.cnf
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
          -extfile ext.cnf -out server.pem
        "#,
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn skip_or_fail(why: &str) {
    assert!(!in_ci(), "redis_tls: {why}, and CI needs this test");
    loud(&format!("SKIPPED redis_tls: {why}"));
}

fn config(port: u16, ca: &Path) -> RedisConfig {
    let mut cfg = RedisConfig::new(format!("rediss://127.0.0.1:{port}"));
    cfg.ca_path = Some(ca.to_path_buf());
    cfg.connect_timeout_ms = 2_000;
    cfg.response_timeout_ms = 2_000;
    cfg
}

#[tokio::test]
async fn rediss_with_our_ca_works_and_an_unknown_ca_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    if !make_certificates(dir.path()) {
        return skip_or_fail("openssl could not make the test certificates");
    }
    let port = free_port();
    let d = dir.path();
    let spawned = Command::new("redis-server")
        .args([
            "--port",
            "0",
            "--bind",
            "127.0.0.1",
            "--tls-port",
            &port.to_string(),
        ])
        .arg("--tls-cert-file")
        .arg(d.join("server.pem"))
        .arg("--tls-key-file")
        .arg(d.join("server.key"))
        .arg("--tls-ca-cert-file")
        .arg(d.join("ca.pem"))
        .args([
            "--tls-auth-clients",
            "no",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let Ok(child) = spawned else {
        return skip_or_fail("redis-server is not installed");
    };
    let _server = Server(child);

    // Our CA: the server is ready once a call succeeds.
    let storage = RedisStorage::connect(config(port, &d.join("ca.pem")))
        .await
        .expect("adapter");
    let mut ready = false;
    for _ in 0..100 {
        if storage.init().await.is_ok() {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        ready,
        "no TLS Redis answered on port {port} with our CA (is redis-server built with TLS?)"
    );
    let value = json!({"secret": "over TLS", "n": [1, 2.5, null], "ü": true});
    storage.set("tls:a", &value).await.unwrap();
    assert_eq!(storage.get("tls:a").await.unwrap(), Some(value));
    assert_eq!(
        storage.keys("tls:").await.unwrap(),
        vec!["tls:a".to_owned()]
    );
    assert_eq!(storage.atomic_incr("tls:ctr", 5).await.unwrap(), 5);

    // A CA that did not sign the server's certificate: the handshake must fail.
    let stranger = RedisStorage::connect(config(port, &d.join("other.pem")))
        .await
        .expect("adapter");
    let err = stranger
        .get("tls:a")
        .await
        .expect_err("a server our CA did not sign was trusted");
    assert!(
        matches!(err, StorageError::Unavailable(_) | StorageError::Timeout(_)),
        "{err:?}"
    );

    // A CA file that does not exist: a configuration error naming REDIS_CA.
    let missing = RedisStorage::connect(config(port, &d.join("missing.pem"))).await;
    let err = match missing {
        Ok(s) => s
            .get("tls:a")
            .await
            .expect_err("a missing CA file was accepted"),
        Err(e) => e,
    };
    assert!(
        matches!(&err, StorageError::Config(m) if m.contains("REDIS_CA")),
        "{err:?}"
    );
}
