//! Start, stop, restart: durability across restarts, graceful shutdown, the
//! binary's first-start token, the data dir lock, and TLS.

use crate::helpers::*;
use serde_json::json;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

#[tokio::test]
async fn everything_acknowledged_survives_a_restart() {
    let mut gw = spawn_gateway().await;
    let uid = gw.seed_user(3941, "+447922029419", "Billy Bob").await;
    gw.cmd("CreateUserTag", json!({"tag": "Customer"})).await;
    gw.cmd("SetUserTag", json!({"uid": uid, "tag": "Customer"}))
        .await;
    gw.cmd("SetUserNotes", json!({"uid": uid, "notes": "kept"}))
        .await;
    gw.cmd("SetUserData", json!({"uid": uid, "data": {"k": "v"}}))
        .await;
    let (_, org) = gw
        .cmd_as(ADMIN_TOKEN, "CreateOrganization", json!({"name": "Acme"}))
        .await;
    let acme = org["data"]["token"].as_str().unwrap().to_string();
    let (_, before) = gw.cmd("GetUser", json!({"uid": uid})).await;

    let mut ws = gw.socket().await;
    gw.stop().await;
    let frame = ws.closed().await.expect("close frame on shutdown");
    assert_eq!(u16::from(frame.code), 1001);

    gw.restart().await;
    let (_, after) = gw.cmd("GetUser", json!({"uid": uid})).await;
    assert_eq!(before, after);
    let (_, tags) = gw.cmd("GetUserTags", json!({"uid": uid})).await;
    assert_eq!(tags["data"], json!(["Customer"]));
    let (_, data) = gw.cmd("GetUserData", json!({"uid": uid})).await;
    assert_eq!(data["data"], json!({"k": "v"}));
    let (s, _) = gw.cmd_as(&acme, "GetUsers", json!({})).await;
    assert_eq!(s, 200, "organizations and tokens persist");
    // seq continues after the restart: user create 1, notes 2, next is 3.
    let mut ws = gw.socket().await;
    gw.cmd(
        "SetUserNotes",
        json!({"uid": uid, "notes": "after restart"}),
    )
    .await;
    assert_eq!(ws.event().await["seq"], 3);
}

#[tokio::test]
async fn concurrent_writers_are_all_durable_and_seq_is_gap_free() {
    let mut gw = spawn_with(|c| c.socket_queue = 4096).await;
    let uid = gw.seed_user(3941, "+447922029419", "Billy Bob").await;
    let mut ws = gw.socket().await;
    let mut tasks = Vec::new();
    for i in 0..64 {
        let http = gw.http.clone();
        let url = gw.api_url();
        let body = json!({"token": gw.token, "cmd": "UpsertUser", "botID": 3941,
            "phone": format!("+4479220295{i:02}"), "name": "Many Writers"});
        tasks.push(tokio::spawn(async move {
            http.post(url).json(&body).send().await.unwrap().status()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    let mut seqs = Vec::new();
    for _ in 0..64 {
        seqs.push(ws.event().await["seq"].as_u64().unwrap());
    }
    assert_eq!(seqs, (2..=65).collect::<Vec<_>>(), "in order, gap-free");
    gw.stop().await;
    gw.restart().await;
    let (_, all) = gw.cmd("GetUsers", json!({"botID": 3941})).await;
    assert_eq!(all["data"].as_array().unwrap().len(), 65);
    let _ = uid;
}

/// A restart in the same process (what `restart` does here) may find sled's
/// lock on the data dir not yet let go; the new store waits for it rather
/// than failing with `Locked`. Here the earlier gateway still runs when the
/// second starts, and stops 300 ms later.
#[tokio::test]
async fn a_restart_in_the_same_process_waits_for_the_earlier_stores_lock() {
    let mut gw = spawn_gateway().await;
    let uid = gw.seed_user(3941, "+447922029419", "Billy Bob").await;
    let first = gw.gw.take().expect("running");
    let stopper = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        first.shutdown();
        first.wait().await.expect("clean shutdown");
    });
    let second = convgate::server::start(gw.config.clone())
        .await
        .expect("the second start waits for the lock");
    stopper.await.unwrap();
    gw.gw = Some(second);
    let (status, user) = gw.cmd("GetUser", json!({"uid": uid})).await;
    assert_eq!(status, 200, "{user}");
    assert_eq!(user["data"]["name"], "Billy Bob");
}

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_convgate"));
    c.env_remove("CONVGATE_BOOTSTRAP_TOKEN")
        .env_remove("CONVGATE_ADMIN_TOKEN");
    c
}

/// Starts `convgate serve` on port 0, waits until it logs its endpoints, and
/// returns the child and what it printed on stdout by then.
fn serve(dir: &std::path::Path, extra: &[(&str, &str)]) -> (std::process::Child, String) {
    let mut cmd = bin();
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .env("CONVGATE_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "exited before serving"
        );
        if line.contains("API endpoints") {
            break;
        }
    }
    // Keep draining stderr so the child never blocks on a full pipe.
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    let printed = rx
        .recv_timeout(Duration::from_millis(300))
        .unwrap_or_default();
    (child, printed)
}

fn sigterm(child: &mut std::process::Child) -> std::process::ExitStatus {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    for _ in 0..100 {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    panic!("no exit within 5 s of SIGTERM");
}

#[test]
fn binary_prints_the_token_once_and_locks_the_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let (mut first, line) = serve(dir.path(), &[]);
    let token = line
        .trim()
        .strip_prefix("API token: ")
        .expect("token line")
        .to_string();
    assert!(convgate::config::is_token_shaped(&token), "{token}");

    let second = bin()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!second.status.success());
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("locked by another convgate process"), "{err}");

    assert!(sigterm(&mut first).success());
    // Stored only as a hash: the token appears nowhere in the data dir.
    for entry in walk(dir.path()) {
        let bytes = std::fs::read(&entry).unwrap();
        assert!(
            !bytes.windows(40).any(|w| w == token.as_bytes()),
            "{} holds the token",
            entry.display()
        );
    }
    // A restart prints no token.
    let (mut again, line) = serve(dir.path(), &[]);
    assert!(!line.contains("API token"), "{line}");
    assert!(sigterm(&mut again).success());
}

#[test]
fn bootstrap_token_comes_from_the_environment_and_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let token = "0123456789abcdef0123456789abcdef01234567";
    let (mut child, line) = serve(dir.path(), &[("CONVGATE_BOOTSTRAP_TOKEN", token)]);
    assert_eq!(line.trim(), format!("API token: {token}"));
    assert!(sigterm(&mut child).success());

    let bad = bin()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(tempfile::tempdir().unwrap().path())
        .env("CONVGATE_BOOTSTRAP_TOKEN", "short")
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("40 lowercase hex"));

    let public = bin()
        .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(tempfile::tempdir().unwrap().path())
        .output()
        .unwrap();
    assert!(!public.status.success());
    assert!(String::from_utf8_lossy(&public.stderr).contains("refusing plain text"));
}

#[tokio::test]
async fn tls_serves_https_on_the_same_port() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.key_pair.serialize_pem()).unwrap();
    let gw = spawn_with(|c| {
        c.tls_cert = Some(cert_path.clone());
        c.tls_key = Some(key_path.clone());
    })
    .await;
    assert!(gw.api_url().starts_with("https://"));
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).unwrap())
        .resolve("localhost", gw.gw().addr)
        .build()
        .unwrap();
    let url = format!("https://localhost:{}/api", gw.gw().addr.port());
    let res = client
        .post(&url)
        .json(&json!({"token": gw.token, "cmd": "GetUsers"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["ok"], 1);
    let health = client
        .get(format!("https://localhost:{}/healthz", gw.gw().addr.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
}
