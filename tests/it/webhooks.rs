//! Webhook delivery against real receivers on loopback (wiremock): signatures,
//! retries, Retry-After, 410, redirects, address checks, rotation, replay,
//! isolation between organizations, and a SIGKILL crash.

use crate::helpers::*;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

/// Waits until `server` has received at least `n` requests (10 s at most).
async fn received(server: &MockServer, n: usize) -> Vec<Request> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = server.received_requests().await.unwrap_or_default();
        for r in &got {
            validate_message(&body(r));
        }
        if got.len() >= n || Instant::now() > deadline {
            assert!(got.len() >= n, "expected {n} deliveries, got {}", got.len());
            return got;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn header<'a>(r: &'a Request, name: &str) -> &'a str {
    r.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

fn body(r: &Request) -> Value {
    serde_json::from_slice(&r.body).expect("JSON body")
}

async fn private_gateway(tweak: impl FnOnce(&mut convgate::config::Config)) -> TestGateway {
    spawn_with(|c| {
        c.allow_private_webhooks = true;
        tweak(c);
    })
    .await
}

async fn set_webhook(gw: &TestGateway, url: String) -> String {
    let (s, r) = gw.cmd("SetWebhook", json!({"url": url})).await;
    assert_eq!(s, 200, "{r}");
    r["data"]["secret"].as_str().unwrap().to_string()
}

/// Polls `GetDeliveries` until the delivery of `seq` has `status`.
async fn delivery_with_status(gw: &TestGateway, seq: u64, status: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, r) = gw
            .cmd("GetDeliveries", json!({"since": seq, "until": seq}))
            .await;
        if let Some(d) = r["data"].as_array().and_then(|a| a.first()) {
            if d["status"] == status {
                return d.clone();
            }
        }
        assert!(
            Instant::now() < deadline,
            "delivery {seq} never became {status}: {r}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn deliveries_are_signed_and_verify_with_a_standard_webhooks_library() {
    let gw = private_gateway(|_| {}).await;
    let server = receiver(200).await;
    let secret = set_webhook(&gw, format!("{}/hook", server.uri())).await;
    assert!(secret.starts_with("whsec_"));
    let mut ws = gw.socket().await;
    gw.seed_user(3941, "+447922029419", "Billy Bob").await;
    let event = ws.event().await;

    let reqs = received(&server, 1).await;
    let r = &reqs[0];
    assert_eq!(r.url.path(), "/hook");
    assert_eq!(header(r, "content-type"), "application/json");
    assert_eq!(header(r, "webhook-id"), event["eventId"].as_str().unwrap());
    assert_eq!(body(r), event, "the body is exactly the socket's event");
    let ts: i64 = header(r, "webhook-timestamp").parse().unwrap();
    assert!((ts - chrono::Utc::now().timestamp()).abs() < 10);
    let wh = standardwebhooks::Webhook::new(&secret).unwrap();
    wh.verify(&r.body, &r.headers).expect("signature verifies");
    let other = standardwebhooks::Webhook::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
    assert!(
        other.verify(&r.body, &r.headers).is_err(),
        "another secret does not verify"
    );

    let d = delivery_with_status(&gw, 1, "delivered").await;
    assert_eq!(
        (d["attempts"].as_u64(), d["lastStatus"].as_u64()),
        (Some(1), Some(200))
    );
    let (_, hook) = gw.cmd("GetWebhook", json!({})).await;
    assert!(
        hook["data"].get("secret").is_none(),
        "GetWebhook never shows the secret"
    );

    let metrics = gw.metrics().await;
    assert!(
        metrics.contains("convgate_webhook_delivered_total 1"),
        "{metrics}"
    );
    assert!(metrics.contains("convgate_webhook_pending 0"), "{metrics}");
}

#[tokio::test]
async fn retries_follow_the_schedule_and_stop_at_the_last() {
    let gw = private_gateway(|c| c.webhook_retry_schedule = vec![0.0, 0.3, 0.6]).await;
    let server = receiver(500).await;
    set_webhook(&gw, server.uri()).await;
    gw.seed_user(3941, "+447922029419", "Billy Bob").await;
    let d = delivery_with_status(&gw, 1, "failed").await;
    assert_eq!(
        (d["attempts"].as_u64(), d["lastStatus"].as_u64()),
        (Some(3), Some(500))
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    let reqs = server.received_requests().await.unwrap();
    assert_eq!(reqs.len(), 3, "no attempt after the last one");
    let ids: HashSet<&str> = reqs.iter().map(|r| header(r, "webhook-id")).collect();
    assert_eq!(ids.len(), 1, "the same webhook-id on every retry");
    let (_, failed) = gw.cmd("GetDeliveries", json!({"status": "failed"})).await;
    assert_eq!(failed["data"].as_array().unwrap().len(), 1);
    let (_, pending) = gw.cmd("GetDeliveries", json!({"status": "pending"})).await;
    assert_eq!(pending["data"], json!([]));
}

#[tokio::test]
async fn retry_intervals_follow_the_schedule() {
    let gw = private_gateway(|c| c.webhook_retry_schedule = vec![0.0, 0.4, 0.8, 0.0]).await;
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(3)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&server)
        .await;
    set_webhook(&gw, server.uri()).await;
    let start = Instant::now();
    gw.seed_user(3941, "+447922029419", "Billy Bob").await;
    delivery_with_status(&gw, 1, "delivered").await;
    // 0 + 0.4 + 0.8 seconds (±10%) before the fourth, successful attempt.
    let elapsed = start.elapsed();
    assert!(elapsed >= Duration::from_millis(1080), "{elapsed:?}");
    assert_eq!(server.received_requests().await.unwrap().len(), 4);
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let gw = private_gateway(|c| c.webhook_retry_schedule = vec![0.0, 0.05, 0.05]).await;
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "1"))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    set_webhook(&gw, server.uri()).await;
    gw.seed_user(3941, "+447922029419", "Billy Bob").await;
    delivery_with_status(&gw, 1, "delivered").await;
    let reqs = server.received_requests().await.unwrap();
    assert_eq!(reqs.len(), 2);
    let t0: i64 = header(&reqs[0], "webhook-timestamp").parse().unwrap();
    let t1: i64 = header(&reqs[1], "webhook-timestamp").parse().unwrap();
    assert!(t1 - t0 >= 1, "the retry waited for Retry-After: {t0} {t1}");
}

#[tokio::test]
async fn gone_disables_the_webhook_and_tells_the_sockets() {
    let gw = private_gateway(|_| {}).await;
    let server = receiver(410).await;
    set_webhook(&gw, server.uri()).await;
    let mut ws = gw.socket().await;
    gw.seed_user(3941, "+447922029419", "Billy Bob").await;
    assert_eq!(ws.event().await["cmd"], "onUserCreate");
    let disabled = ws.event().await;
    assert_eq!(disabled["cmd"], "onWebhookDisabled");
    assert_eq!(disabled["data"]["reason"], "410 Gone");
    let (_, hook) = gw.cmd("GetWebhook", json!({})).await;
    assert_eq!(hook["data"]["enabled"], false);
    gw.seed_user(3941, "+447922029420", "Second User").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        server.received_requests().await.unwrap().len(),
        1,
        "nothing after 410"
    );

    // Setting it again resumes: the pending events go out.
    let good = receiver(200).await;
    set_webhook(&gw, good.uri()).await;
    let reqs = received(&good, 3).await;
    let cmds: HashSet<String> = reqs
        .iter()
        .map(|r| body(r)["cmd"].as_str().unwrap().to_string())
        .collect();
    assert!(
        cmds.contains("onUserCreate") && cmds.contains("onWebhookDisabled"),
        "{cmds:?}"
    );
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let gw = private_gateway(|c| c.webhook_retry_schedule = vec![0.0]).await;
    let target = receiver(200).await;
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(302)
                .insert_header("Location", format!("{}/elsewhere", target.uri())),
        )
        .mount(&server)
        .await;
    set_webhook(&gw, server.uri()).await;
    gw.seed_user(3941, "+447922029419", "Billy Bob").await;
    let d = delivery_with_status(&gw, 1, "failed").await;
    assert_eq!(d["lastStatus"], 302);
    assert_eq!(target.received_requests().await.unwrap().len(), 0);
}

#[tokio::test]
async fn private_addresses_are_refused_unless_allowed() {
    let gw = spawn_with(|c| c.webhook_retry_schedule = vec![0.0]).await;
    let server = receiver(200).await;
    let port = server.address().port();
    for url in [
        server.uri(),
        format!("https://127.0.0.1:{port}/"),
        "https://[::1]/".to_string(),
        "ftp://example.com/".into(),
    ] {
        let (s, r) = gw.cmd("SetWebhook", json!({"url": url})).await;
        assert_eq!(
            (s, r["errorCode"].as_u64()),
            (400, Some(1017)),
            "{url}: {r}"
        );
    }
    // A name is accepted, but what it resolves to is checked at connect time.
    let (s, _) = gw
        .cmd(
            "SetWebhook",
            json!({"url": format!("https://localhost:{port}/")}),
        )
        .await;
    assert_eq!(s, 200);
    gw.seed_user(3941, "+447922029419", "Billy Bob").await;
    let d = delivery_with_status(&gw, 1, "failed").await;
    assert!(
        d["lastError"]
            .as_str()
            .unwrap()
            .contains("no public address"),
        "{d}"
    );
    assert_eq!(server.received_requests().await.unwrap().len(), 0);
}

#[tokio::test]
async fn rotated_secrets_both_sign_during_the_overlap() {
    let gw = private_gateway(|_| {}).await;
    let server = receiver(200).await;
    let old = set_webhook(&gw, server.uri()).await;
    let (_, rotated) = gw.cmd("RotateWebhookSecret", json!({})).await;
    let new = rotated["data"]["secret"].as_str().unwrap().to_string();
    assert_ne!(old, new);
    gw.seed_user(3941, "+447922029419", "Billy Bob").await;
    let r = &received(&server, 1).await[0];
    assert_eq!(header(r, "webhook-signature").split(' ').count(), 2);
    for secret in [&old, &new] {
        standardwebhooks::Webhook::new(secret)
            .unwrap()
            .verify(&r.body, &r.headers)
            .expect("both secrets verify");
    }
}

#[tokio::test]
async fn redeliver_events_replays_with_the_same_id() {
    let gw = private_gateway(|_| {}).await;
    let server = receiver(200).await;
    set_webhook(&gw, server.uri()).await;
    gw.seed_user(3941, "+447922029419", "Billy Bob").await;
    gw.seed_user(3941, "+447922029420", "Jane Doe").await;
    let first = received(&server, 2).await;
    delivery_with_status(&gw, 1, "delivered").await;
    delivery_with_status(&gw, 2, "delivered").await;
    let id = header(&first[0], "webhook-id").to_string();
    let (_, r) = gw
        .cmd(
            "RedeliverEvents",
            json!({"eventIds": [id, "evt_00000000000000000000000000000000"]}),
        )
        .await;
    assert_eq!(r["data"]["queued"], 1);
    assert_eq!(
        r["data"]["unknown"],
        json!(["evt_00000000000000000000000000000000"])
    );
    let all = received(&server, 3).await;
    assert_eq!(header(&all[2], "webhook-id"), id);
    delivery_with_status(&gw, 1, "delivered").await;
    let (_, r) = gw
        .cmd("RedeliverEvents", json!({"since": 1, "until": 2}))
        .await;
    assert_eq!(r["data"]["queued"], 2);
    received(&server, 5).await;
    let (s, r) = gw.cmd("RedeliverEvents", json!({})).await;
    assert_eq!((s, r["errorCode"].as_u64()), (400, Some(1017)));
}

#[tokio::test]
async fn a_slow_receiver_delays_neither_other_orgs_nor_sockets() {
    let gw = private_gateway(|_| {}).await;
    let slow = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(5)))
        .mount(&slow)
        .await;
    let fast = receiver(200).await;
    let (_, org) = gw
        .cmd_as(ADMIN_TOKEN, "CreateOrganization", json!({"name": "B"}))
        .await;
    let b_token = org["data"]["token"].as_str().unwrap().to_string();
    set_webhook(&gw, slow.uri()).await;
    let (s, _) = gw
        .cmd_as(&b_token, "SetWebhook", json!({"url": fast.uri()}))
        .await;
    assert_eq!(s, 200);
    let mut a_socket = gw.socket().await;
    // Organization A keeps its receiver busy.
    for i in 0..10 {
        gw.seed_user(1, &format!("+4479220294{i:02}"), "Slow Org")
            .await;
    }
    let start = Instant::now();
    gw.cmd_as(&b_token, "CreateBot", json!({"botID": 2, "kind": "sms"}))
        .await;
    gw.cmd_as(
        &b_token,
        "UpsertUser",
        json!({"botID": 2, "phone": "+447922029500"}),
    )
    .await;
    received(&fast, 1).await;
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "B waited {:?}",
        start.elapsed()
    );
    let t = Instant::now();
    for _ in 0..10 {
        a_socket.event().await;
    }
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "A's socket waited {:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn disable_api_stops_the_token_and_sockets_until_enabled() {
    let gw = spawn_gateway().await;
    let (_, org) = gw
        .cmd_as(ADMIN_TOKEN, "CreateOrganization", json!({"name": "C"}))
        .await;
    let token = org["data"]["token"].as_str().unwrap().to_string();
    let org_id = org["data"]["orgID"].as_str().unwrap().to_string();
    let mut ws = gw.socket_as(&token).await;
    let (s, _) = gw.cmd_as(&token, "DisableApi", json!({})).await;
    assert_eq!(s, 200);
    let frame = ws.closed().await.unwrap();
    assert_eq!(
        (u16::from(frame.code), frame.reason.as_str()),
        (1008, "API disabled")
    );
    let (s, r) = gw.cmd_as(&token, "GetUsers", json!({})).await;
    assert_eq!((s, r["errorCode"].as_u64()), (401, Some(1001)));
    let (s, r) = gw.cmd("EnableApi", json!({"orgID": org_id})).await;
    assert_eq!(
        (s, r["errorCode"].as_u64()),
        (401, Some(1001)),
        "only the admin enables"
    );
    let (s, r) = gw
        .cmd_as(ADMIN_TOKEN, "EnableApi", json!({"orgID": "org_nope"}))
        .await;
    assert_eq!((s, r["errorCode"].as_u64()), (400, Some(1017)));
    let (s, _) = gw
        .cmd_as(ADMIN_TOKEN, "EnableApi", json!({"orgID": org_id}))
        .await;
    assert_eq!(s, 200);
    let (s, _) = gw.cmd_as(&token, "GetUsers", json!({})).await;
    assert_eq!(s, 200);
}

/// A child gateway is killed with SIGKILL while events are produced and
/// delivered; after a restart every acknowledged event has been delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_acknowledged_event() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/hook"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_millis(5)))
        .mount(&server)
        .await;
    let dir = TestDir::new();
    let token = "00112233445566778899aabbccddeeff00112233";
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let spawn = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_convgate"))
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--data-dir",
            ])
            .arg(dir.path())
            .envs(dir.store.iter().map(|s| ("CONVGATE_STORE", s)))
            .env("CONVGATE_BOOTSTRAP_TOKEN", token)
            .env("CONVGATE_ALLOW_PRIVATE_WEBHOOKS", "true")
            .env("CONVGATE_LOG", "warn")
            .env(
                "CONVGATE_WEBHOOK_RETRY_SCHEDULE",
                "0,0.2,0.2,0.2,0.2,0.2,0.2,0.2",
            )
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let api = format!("http://127.0.0.1:{port}/api");
    let http = reqwest::Client::new();
    let post = move |body: Value| {
        let http = http.clone();
        let api = api.clone();
        async move {
            let mut body = body;
            body["token"] = json!(token);
            http.post(&api).json(&body).send().await
        }
    };
    let wait_up = || async {
        for _ in 0..200 {
            if post(json!({"cmd": "heartbeat"})).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("gateway did not come up");
    };
    let mut child = spawn();
    wait_up().await;
    post(json!({"cmd": "SetWebhook", "url": format!("{}/hook", server.uri())}))
        .await
        .unwrap();
    post(json!({"cmd": "CreateBot", "botID": 7, "kind": "sms"}))
        .await
        .unwrap();

    // Four writers, each acknowledging what the gateway acknowledged, until the kill.
    let progress = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut writers = Vec::new();
    for w in 0..4u32 {
        let post = post.clone();
        let progress = progress.clone();
        writers.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..10_000u32 {
                let phone = format!("+4479{:08}", w * 100_000 + i);
                match post(json!({"cmd": "UpsertUser", "botID": 7, "phone": phone})).await {
                    Ok(r) if r.status() == 200 => {
                        let v: Value = r.json().await.unwrap();
                        acked.push(v["uid"].as_str().unwrap().to_string());
                        progress.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    _ => break,
                }
            }
            acked
        }));
    }
    // Kill mid-stream: once a few hundred writes were acknowledged (however
    // slow the machine), then a little later so that some are in flight.
    let deadline = Instant::now() + Duration::from_secs(30);
    while progress.load(std::sync::atomic::Ordering::Relaxed) < 200 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(37)).await;
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let mut acked = HashSet::new();
    for w in writers {
        acked.extend(w.await.unwrap());
    }
    assert!(
        acked.len() > 20,
        "the writers made progress before the kill: {}",
        acked.len()
    );

    let mut child = spawn();
    wait_up().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let delivered = loop {
        let reqs = server.received_requests().await.unwrap();
        let mut by_id: HashMap<String, String> = HashMap::new();
        for r in &reqs {
            let b = body(r);
            if b["cmd"] == "onUserCreate" {
                by_id.insert(
                    header(r, "webhook-id").to_string(),
                    b["data"]["uid"].as_str().unwrap().to_string(),
                );
            }
        }
        let uids: HashSet<String> = by_id.into_values().collect();
        if acked.is_subset(&uids) || Instant::now() > deadline {
            break uids;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let _ = child.kill();
    let _ = child.wait();
    let missing: Vec<_> = acked.difference(&delivered).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged events never delivered: {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
}

#[tokio::test]
async fn a_backlog_beyond_the_read_window_is_listed_during_an_outage_then_delivered() {
    // One slot: the worker reads new events while fewer than 8 are due.
    let gw = private_gateway(|c| {
        c.webhook_concurrency = 1;
        // Attempts 0.3 s apart for a minute: none exhausts its schedule
        // while the listing below waits, however slow the machine.
        let mut schedule = vec![0.3; 200];
        schedule[0] = 0.0;
        c.webhook_retry_schedule = schedule;
    })
    .await;
    let server = receiver(503).await;
    set_webhook(&gw, server.uri()).await;
    let n = 30;
    for i in 0..n {
        gw.seed_user(3941, &format!("+4479220294{i:02}"), "Billy Bob")
            .await;
    }
    // Waiting on retries is not "due": the whole outage backlog gets records.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, r) = gw
            .cmd("GetDeliveries", json!({"status": "pending", "limit": 1000}))
            .await;
        let listed = r["data"].as_array().unwrap().len();
        if listed == n {
            break;
        }
        assert!(Instant::now() < deadline, "{listed} of {n} listed pending");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.reset().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    for seq in 1..=n as u64 {
        delivery_with_status(&gw, seq, "delivered").await;
    }
    let ok: HashSet<String> = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| header(r, "webhook-id").to_string())
        .collect();
    assert_eq!(ok.len(), n, "every event delivered after the outage");
}
