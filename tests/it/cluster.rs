//! Several gateway nodes as separate processes on loopback, sharing one
//! PostgreSQL database and one NATS server (`.ci/run`'s cluster step:
//! `CONVGATE_TEST_STORE=postgres://… cargo test --test it cluster:: --
//! --ignored`). Each test has its own database and subject prefix.

use crate::helpers::*;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

const TOKEN: &str = "00112233445566778899aabbccddeeff00112233";
const NATS: &str = "nats://127.0.0.1:4222";

/// One node: a `convgate serve` child.
struct Node {
    child: Child,
    port: u16,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Node {
    fn api(&self) -> String {
        format!("http://127.0.0.1:{}/api", self.port)
    }

    /// Whether this node runs the workers (`/metrics`).
    async fn runs_workers(&self) -> bool {
        let text = reqwest::get(format!("http://127.0.0.1:{}/metrics", self.port))
            .await
            .expect("GET /metrics")
            .text()
            .await
            .unwrap();
        text.lines().any(|l| l == "convgate_runs_workers 1")
    }

    async fn post(&self, cmd: &str, fields: Value) -> (u16, Value) {
        self.post_as(TOKEN, cmd, fields).await
    }

    async fn post_as(&self, token: &str, cmd: &str, fields: Value) -> (u16, Value) {
        let mut body = fields;
        body["cmd"] = json!(cmd);
        body["token"] = json!(token);
        let r = reqwest::Client::new()
            .post(self.api())
            .json(&body)
            .send()
            .await
            .expect("POST");
        let status = r.status().as_u16();
        let v: Value = r.json().await.expect("JSON reply");
        validate_message(&v);
        (status, v)
    }

    /// A socket connected with the token (`resume` when given).
    async fn socket(&self, resume: Option<Value>) -> (Ws, Value) {
        let mut ws = ws_connect(&format!("ws://127.0.0.1:{}/ws", self.port)).await;
        let mut hello = json!({"cmd": "connect", "token": TOKEN});
        if let Some(r) = resume {
            hello["resume"] = r;
        }
        ws.send(&hello).await;
        let reply = ws.recv().await;
        assert_eq!(reply["cmd"], "connected", "{reply}");
        (ws, reply)
    }
}

/// A cluster's shared settings: its database and subject prefix.
struct Cluster {
    dir: Arc<TestDir>,
    prefix: String,
    env: Vec<(String, String)>,
}

impl Cluster {
    fn new(extra: &[(&str, &str)]) -> Cluster {
        assert!(
            test_store().is_some(),
            "cluster tests need CONVGATE_TEST_STORE (a PostgreSQL server) and NATS at {NATS}"
        );
        let dir = TestDir::new();
        Cluster {
            prefix: format!("cgt{}", uuid::Uuid::now_v7().simple()),
            dir,
            env: extra
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// Starts a node and waits until it answers.
    async fn node(&self) -> Node {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let data = tempfile::tempdir().unwrap().keep();
        let child = Command::new(env!("CARGO_BIN_EXE_convgate"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(&data)
            .env("CONVGATE_STORE", self.dir.store.as_ref().unwrap())
            .env("CONVGATE_BUS", NATS)
            .env("CONVGATE_BUS_PREFIX", &self.prefix)
            .env("CONVGATE_BOOTSTRAP_TOKEN", TOKEN)
            .env("CONVGATE_ALLOW_PRIVATE_WEBHOOKS", "true")
            .env("CONVGATE_LEASE_TIMEOUT", "3")
            .env("CONVGATE_STORE_POOL", "2")
            .env("CONVGATE_LOG", "warn")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let node = Node { child, port };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let up = reqwest::Client::new()
                .post(node.api())
                .json(&json!({"cmd": "heartbeat", "token": TOKEN}))
                .send()
                .await;
            if matches!(up, Ok(r) if r.status() == 200) {
                return node;
            }
            assert!(Instant::now() < deadline, "node did not come up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Three nodes, the first started (and holding the workers' lease)
    /// before the others.
    async fn three(&self) -> [Node; 3] {
        let a = self.node().await;
        let (b, c) = tokio::join!(self.node(), self.node());
        [a, b, c]
    }

    /// The node id holding the workers' lease, if any.
    fn lease_holder(&self) -> Option<String> {
        let url = self.dir.store.clone().unwrap();
        std::thread::spawn(move || {
            let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            c.query_opt(
                "SELECT holder FROM convgate_leases WHERE name = 'workers' AND expires_at > now()",
                &[],
            )
            .unwrap()
            .map(|r| r.get::<_, String>(0))
        })
        .join()
        .unwrap()
    }
}

/// The `seq` of the last event in the log.
async fn last_seq(node: &Node) -> u64 {
    let mut after = 0;
    loop {
        let (s, r) = node
            .post("GetEvents", json!({"after": after, "limit": 1000}))
            .await;
        assert_eq!(s, 200, "{r}");
        after = r["nextSeq"].as_u64().unwrap_or(after);
        if r["hasMore"] != true {
            return after;
        }
    }
}

async fn upsert(node: &Node, i: u32) {
    let (s, r) = node
        .post(
            "UpsertUser",
            json!({"botID": 3941, "phone": format!("+44792202{i:04}"), "name": "Many Nodes"}),
        )
        .await;
    assert_eq!(s, 200, "{r}");
}

#[tokio::test]
#[ignore = "cluster: needs PostgreSQL and NATS; run by .ci/run's cluster step"]
async fn events_reach_sockets_on_every_node_once_in_order() {
    let cluster = Cluster::new(&[("CONVGATE_MAX_SOCKETS_PER_TOKEN", "8")]);
    let nodes = cluster.three().await;
    let (s, r) = nodes[0]
        .post("CreateBot", json!({"botID": 3941, "kind": "whatsapp"}))
        .await;
    assert_eq!(s, 200, "{r}");
    let mut sockets = Vec::new();
    for n in &nodes {
        sockets.push(n.socket(None).await.0);
    }
    // Writers on every node at once: the log orders them.
    let mut writes = Vec::new();
    for (k, n) in nodes.iter().enumerate() {
        writes.push(async move {
            for i in 0..10 {
                upsert(n, k as u32 * 100 + i).await;
            }
        });
    }
    futures_util::future::join_all(writes).await;
    let last_seq = last_seq(&nodes[0]).await;
    assert!(last_seq >= 30, "{last_seq}");
    for (k, ws) in sockets.iter_mut().enumerate() {
        let mut seqs = Vec::new();
        while seqs.len() < 30 {
            let next = tokio::time::timeout(Duration::from_secs(4), ws.event()).await;
            match next {
                Ok(e) => seqs.push(e["seq"].as_u64().unwrap()),
                Err(_) => panic!("node {k}: only {seqs:?} of {last_seq}"),
            }
        }
        let want: Vec<u64> = (last_seq - 29..=last_seq).collect();
        assert_eq!(seqs, want, "node {k}: every event once, in order");
    }
}

#[tokio::test]
#[ignore = "cluster: needs PostgreSQL and NATS; run by .ci/run's cluster step"]
async fn kicks_and_resumes_cross_nodes() {
    let cluster = Cluster::new(&[]);
    let nodes = cluster.three().await;
    nodes[0]
        .post("CreateBot", json!({"botID": 3941, "kind": "whatsapp"}))
        .await;
    // A socket on A, then one with the same token on B: A's is replaced
    // (max_sockets_per_token = 1 across the cluster).
    let (mut on_a, hello) = nodes[0].socket(None).await;
    let epoch = hello["data"]["epoch"].as_str().unwrap().to_string();
    upsert(&nodes[1], 1).await;
    let seen = on_a.event().await["seq"].as_u64().unwrap();
    let (mut on_b, _) = nodes[1].socket(None).await;
    let frame = on_a.closed().await.expect("a close frame");
    assert_eq!(u16::from(frame.code), 1008, "{frame:?}");
    assert!(frame.reason.contains("reused"), "{frame:?}");
    // Events A's socket missed: a resume on C replays them, then live.
    upsert(&nodes[1], 2).await;
    upsert(&nodes[2], 3).await;
    let _ = on_b.event().await;
    let _ = on_b.event().await;
    let (mut on_c, _) = nodes[2]
        .socket(Some(json!({"epoch": epoch, "seq": seen})))
        .await;
    let mut replayed = Vec::new();
    loop {
        let m = on_c.recv().await;
        if m["cmd"] == "resumed" {
            break;
        }
        replayed.push(m["seq"].as_u64().unwrap());
    }
    assert_eq!(replayed, vec![seen + 1, seen + 2]);
    upsert(&nodes[0], 4).await;
    assert_eq!(on_c.event().await["seq"].as_u64().unwrap(), seen + 3);
    // ResetToken on A closes the socket on C.
    let (s, r) = nodes[0].post("ResetToken", json!({})).await;
    assert_eq!(s, 200, "{r}");
    let frame = on_c.closed().await.expect("a close frame");
    assert_eq!(u16::from(frame.code), 1008, "{frame:?}");
    assert_eq!(frame.reason, "token reset");
}

#[tokio::test]
#[ignore = "cluster: needs PostgreSQL and NATS; run by .ci/run's cluster step"]
async fn one_node_delivers_the_webhook_and_another_takes_over_after_kill_9() {
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        // Slow enough that the backlog outlasts the 100 writes that make
        // it, even when those are slowed by the other cluster tests (at
        // 50 ms the deliveries once kept up with them).
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_millis(100)))
        .mount(&receiver)
        .await;
    let cluster = Cluster::new(&[("CONVGATE_WEBHOOK_CONCURRENCY", "1")]);
    let [b, c, d] = cluster.three().await;
    b.post("CreateBot", json!({"botID": 3941, "kind": "whatsapp"}))
        .await;
    // Set on B: the node running the workers is told.
    let (s, r) = b.post("SetWebhook", json!({"url": receiver.uri()})).await;
    assert_eq!(s, 200, "{r}");
    for i in 0..20 {
        upsert(if i % 2 == 0 { &b } else { &c }, i).await;
    }
    // A backlog (one delivery at a time, 100 ms each), then A dies.
    for i in 20..120 {
        upsert(&c, i).await;
    }
    let total = last_seq(&b).await;
    assert!(total >= 120, "{total}");
    // Exactly one node runs the workers: kill it (`a`) mid-backlog.
    let mut nodes = vec![b, c, d];
    let deadline = Instant::now() + Duration::from_secs(5);
    let (mut a, holder) = loop {
        let mut running = Vec::new();
        for n in &nodes {
            running.push(n.runs_workers().await);
        }
        if running.iter().filter(|&&r| r).count() == 1 {
            let holder = cluster.lease_holder().expect("a node holds the lease");
            break (
                nodes.remove(running.iter().position(|&r| r).unwrap()),
                holder,
            );
        }
        assert!(Instant::now() < deadline, "{running:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    let delivered = |requests: Vec<wiremock::Request>| {
        let mut ids: HashMap<String, usize> = HashMap::new();
        for req in requests {
            let body: Value = serde_json::from_slice(&req.body).unwrap();
            *ids.entry(body["eventId"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
        ids
    };
    let before = delivered(receiver.received_requests().await.unwrap());
    let at_kill = before.len() as u64;
    assert!(
        at_kill < total,
        "the backlog was still pending: {at_kill} of {total}"
    );
    // With three nodes up, one attempt per event (the receiver answers
    // 200): none was delivered by two nodes.
    assert!(before.values().all(|&n| n == 1), "{before:?}");
    let (b, c) = (nodes.remove(0), nodes.remove(0));
    // Another node takes the lease once A's expires (lease_timeout)…
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match cluster.lease_holder() {
            Some(taker) if taker != holder => break,
            _ => assert!(Instant::now() < deadline, "nobody took over"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // …and finishes the backlog.
    let deadline = Instant::now() + Duration::from_secs(30);
    let ids = loop {
        let ids = delivered(receiver.received_requests().await.unwrap());
        if ids.len() as u64 >= total || Instant::now() > deadline {
            break ids;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Every event at least once; more than once only for what was in
    // flight or not yet checkpointed when A died.
    assert_eq!(ids.len() as u64, total, "every event delivered");
    let repeated = ids.values().filter(|&&n| n > 1).count();
    assert!(repeated <= 16, "{repeated} events delivered twice");
    drop((b, c));
}

#[tokio::test]
#[ignore = "cluster: needs PostgreSQL and NATS; run by .ci/run's cluster step"]
async fn a_migrated_data_dir_is_served_by_two_nodes() {
    // A populated embedded store…
    let gw = spawn_with(|c| {
        c.store = None;
        c.bootstrap_token = Some(convgate::config::Secret::new(TOKEN));
    })
    .await;
    gw.cmd("CreateBot", json!({"botID": 3941, "kind": "whatsapp"}))
        .await;
    for i in 0..25 {
        let (s, r) = gw
            .cmd(
                "UpsertUser",
                json!({"botID": 3941, "phone": format!("+44792202{i:04}"), "name": "Migrated"}),
            )
            .await;
        assert_eq!(s, 200, "{r}");
    }
    let (_, r) = gw
        .cmd("GetEvents", json!({"after": 0, "limit": 1000}))
        .await;
    let before = r["nextSeq"].as_u64().unwrap();
    let data_dir = gw.config.data_dir.clone();
    let mut gw = gw;
    gw.stop().await;
    // …copied into PostgreSQL by `convgate migrate`.
    let cluster = Cluster::new(&[]);
    let out = Command::new(env!("CARGO_BIN_EXE_convgate"))
        .args(["migrate", "--from"])
        .arg(&data_dir)
        .args(["--to", cluster.dir.store.as_ref().unwrap()])
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{printed} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(printed.contains("usr    25"), "{printed}");
    // A second migrate into the same database is refused.
    let again = Command::new(env!("CARGO_BIN_EXE_convgate"))
        .args(["migrate", "--from"])
        .arg(&data_dir)
        .args(["--to", cluster.dir.store.as_ref().unwrap()])
        .output()
        .unwrap();
    assert!(!again.status.success());
    let a = cluster.node().await;
    let b = cluster.node().await;
    for n in [&a, &b] {
        let (s, r) = n.post("GetUsers", json!({"botID": 3941})).await;
        assert_eq!(s, 200, "{r}");
        assert_eq!(r["data"].as_array().unwrap().len(), 25, "{r}");
    }
    // The log continues where the data dir left it.
    upsert(&b, 99).await;
    let (_, events) = a
        .post("GetEvents", json!({"after": 0, "limit": 1000}))
        .await;
    let seqs: Vec<u64> = events["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (1..=before + 1).collect::<Vec<_>>(), "{events}");
}

#[tokio::test]
#[ignore = "cluster: needs PostgreSQL and NATS; run by .ci/run's cluster step"]
async fn send_limits_hold_across_nodes() {
    let cluster = Cluster::new(&[("CONVGATE_SEND_RATE_LIMIT", "3")]);
    let (a, b) = (cluster.node().await, cluster.node().await);
    // Sandbox sends (a test key): the real send path, no provider.
    let (s, r) = a
        .post("CreateApiKey", json!({"name": "dev", "mode": "test"}))
        .await;
    assert_eq!(s, 200, "{r}");
    let key = r["data"]["key"].as_str().unwrap().to_string();
    a.post("CreateBot", json!({"botID": 7401, "kind": "sms"}))
        .await;
    let send = |phone: &str| json!({"botID": 7401, "phone": phone, "message": "x"});
    // The reference's one message per second per number: of two sends at
    // once on two nodes, one is 2007.
    let (first, second) = tokio::join!(
        a.post_as(&key, "SendSMSMessage", send("+14155552501")),
        b.post_as(&key, "SendSMSMessage", send("+14155552501"))
    );
    let mut statuses = [first.0, second.0];
    statuses.sort();
    assert_eq!(statuses, [200, 429], "{first:?} {second:?}");
    let refused = if first.0 == 429 { &first.1 } else { &second.1 };
    assert_eq!(refused["errorCode"], 2007, "{refused}");
    // send_rate_limit (3 per second per token here) counts every node's
    // sends: of six to new numbers across both, at most three more pass
    // within the second.
    let mut passed = 0;
    for (i, n) in [&a, &b, &a, &b, &a, &b].iter().enumerate() {
        let (s, r) = n
            .post_as(&key, "SendSMSMessage", send(&format!("+1415555260{i}")))
            .await;
        match s {
            200 => passed += 1,
            429 => assert_eq!(r["errorCode"], 2008, "{r}"),
            _ => panic!("{r}"),
        }
    }
    assert!((1..=3).contains(&passed), "{passed} passed");
}

#[tokio::test]
#[ignore = "cluster: needs PostgreSQL and NATS; run by .ci/run's cluster step"]
async fn telegram_flood_limits_hold_across_nodes() {
    use crate::telegram::{text_update, uid, FakeBotApi, BOT, PUBLIC, TOKEN as BOT_TOKEN};
    let fake = FakeBotApi::start().await;
    let cluster = Cluster::new(&[
        ("CONVGATE_TELEGRAM_RATE_LIMIT", "1"),
        ("CONVGATE_PUBLIC_BASE_URL", PUBLIC),
    ]);
    let (a, b) = (cluster.node().await, cluster.node().await);
    let (s, r) = a
        .post(
            "CreateBot",
            json!({"botID": BOT, "kind": "telegram", "name": "Support", "bot_token": BOT_TOKEN,
                "telegram_base_url": fake.server.uri()}),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    let secret = fake.calls("setWebhook").await.last().unwrap()["secret_token"]
        .as_str()
        .unwrap()
        .to_string();
    // Two users write in (the update reaches either node).
    for (n, chat) in [(&a, 5555501), (&b, 5555502)] {
        let status = reqwest::Client::new()
            .post(format!(
                "http://127.0.0.1:{}/channels/telegram/{BOT}",
                n.port
            ))
            .header("content-type", "application/json")
            .header("x-telegram-bot-api-secret-token", &secret)
            .body(text_update(chat, chat, 1, "hi").to_string())
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 200);
    }
    // One message per second per bot (telegram_rate_limit = 1): of two
    // sends at once on two nodes, one is 2009 and reaches no Bot API.
    let (first, second) = tokio::join!(
        a.post(
            "SendTextMessage",
            json!({"uid": uid(5555501), "message": "1"})
        ),
        b.post(
            "SendTextMessage",
            json!({"uid": uid(5555502), "message": "2"})
        )
    );
    let mut codes = [first.1["errorCode"].clone(), second.1["errorCode"].clone()];
    codes.sort_by_key(|c| c.to_string());
    assert_eq!(codes, [json!(2009), Value::Null], "{first:?} {second:?}");
    assert_eq!(fake.calls("sendMessage").await.len(), 1);
    // One idempotency key on two nodes at once: one send reaches the Bot
    // API; the other request is told it is in progress (1017, 409) or gets
    // the first one's reply.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let send = json!({"uid": uid(5555501), "message": "once", "idempotencyKey": "order-7"});
    let (first, second) = tokio::join!(
        a.post("SendTextMessage", send.clone()),
        b.post("SendTextMessage", send.clone())
    );
    for (s, r) in [&first, &second] {
        assert!(
            *s == 200 || (*s == 409 && r["errorCode"] == 1017),
            "{first:?} {second:?}"
        );
    }
    assert!(first.0 == 200 || second.0 == 200, "{first:?} {second:?}");
    assert_eq!(fake.calls("sendMessage").await.len(), 2, "one more send");
}

#[tokio::test]
#[ignore = "cluster: needs PostgreSQL and NATS; run by .ci/run's cluster step"]
async fn a_node_reconnects_after_postgresql_drops_its_connections() {
    let gw = spawn_gateway().await;
    let url = gw._dir.store.clone().expect("needs CONVGATE_TEST_STORE");
    let uid = gw.seed_user(3941, "+447922029419", "Billy Bob").await;
    // PostgreSQL ends every connection of the node (a restart, a failover).
    let db = url.rsplit('/').next().unwrap().to_string();
    let server = test_store().unwrap();
    std::thread::spawn(move || {
        let mut c =
            postgres::Client::connect(&format!("{server}/postgres"), postgres::NoTls).unwrap();
        c.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
            &[&db],
        )
        .unwrap();
    })
    .join()
    .unwrap();
    // The node connects again: commands work within a few attempts (one
    // that met a dead connection is 2004), reads and durable writes alike.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (s, r) = gw
            .cmd(
                "SetUserNotes",
                json!({"uid": uid, "notes": "after the drop"}),
            )
            .await;
        if s == 200 {
            break;
        }
        assert_eq!(r["errorCode"], 2004, "{r}");
        assert!(Instant::now() < deadline, "never reconnected: {r}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (s, r) = gw.cmd("GetUser", json!({"uid": uid})).await;
        if s == 200 {
            assert_eq!(r["data"]["notes"], "after the drop", "{r}");
            break;
        }
        assert!(Instant::now() < deadline, "reads never came back: {r}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
#[ignore = "cluster: needs PostgreSQL and NATS; run by .ci/run's cluster step"]
async fn a_node_refuses_to_start_when_nats_does_not_answer() {
    let dir = TestDir::new();
    assert!(dir.store.is_some(), "needs CONVGATE_TEST_STORE");
    let mut config = dir.config();
    // Nothing listens on port 1.
    config.bus = Some("nats://127.0.0.1:1".into());
    let started = tokio::time::timeout(Duration::from_secs(20), convgate::server::start(config))
        .await
        .expect("gives up within 20 s");
    let err = started.err().expect("refused");
    assert!(err.to_string().contains("bus"), "{err}");
}
