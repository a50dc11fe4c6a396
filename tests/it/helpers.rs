//! Shared helpers: `spawn_gateway()` on 127.0.0.1 port 0 with a temporary
//! data dir, typed POST and WebSocket clients, and schema validation of every
//! reply and event they see against `protocol/schemas/convrs.schema.json`.

use convgate::config::{Config, Secret};
use convgate::server::Gateway;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const ADMIN_TOKEN: &str = "admin-secret-for-tests";

fn protocol_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("protocol")
}

/// Reads a JSON file under `protocol/`.
pub fn protocol_json(rel: &str) -> Value {
    let text = std::fs::read_to_string(protocol_dir().join(rel)).expect(rel);
    serde_json::from_str(&text).expect(rel)
}

fn schema_doc() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| protocol_json("schemas/convrs.schema.json"))
}

/// Validates `instance` against the definition `def` of the protocol schema.
pub fn validate(def: &str, instance: &Value) {
    let doc = schema_doc();
    assert!(
        doc["$defs"].get(def).is_some(),
        "protocol schema has no definition {def:?}"
    );
    let mut root = doc.clone();
    root["$ref"] = json!(format!("#/$defs/{def}"));
    let validator = jsonschema::validator_for(&root).expect("schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|e| e.to_string())
        .collect();
    assert!(
        errors.is_empty(),
        "{instance} does not match {def}: {errors:?}"
    );
}

/// Validates a message the server sent: an event, an error reply, or the
/// success reply of its command; and checks error codes against the table.
pub fn validate_message(msg: &Value) {
    let cmd = msg["cmd"].as_str().expect("every message has a string cmd");
    if msg["ok"] == 0 {
        validate("ErrorReply", msg);
        let code = msg["errorCode"].as_u64().unwrap();
        let table = protocol_json("error-codes.json");
        assert!(
            table["codes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["errorCode"] == code),
            "errorCode {code} missing from protocol/error-codes.json"
        );
    } else if cmd.starts_with("on") {
        validate(cmd, msg);
    } else if cmd == "connected" {
        validate("connect.reply", msg);
    } else {
        validate(&format!("{cmd}.reply"), msg);
    }
}

/// A test's state: a temporary data dir and, when `CONVGATE_TEST_STORE`
/// names a PostgreSQL server (`postgres://user@host:port`), a database of
/// its own there (and with `CONVGATE_TEST_BUS`, NATS subjects of its own);
/// both are removed when this drops.
pub struct TestDir {
    dir: tempfile::TempDir,
    /// The URL of this test's database.
    pub store: Option<String>,
}

/// The PostgreSQL server the suite runs against, if any.
pub fn test_store() -> Option<String> {
    std::env::var("CONVGATE_TEST_STORE")
        .ok()
        .filter(|s| !s.is_empty())
}

/// Runs `sql` on the server's `postgres` database (blocking, on a thread of
/// its own: the client must not run on the runtime's).
fn admin_sql(server: &str, sql: String) {
    let url = format!("{}/postgres", server.trim_end_matches('/'));
    std::thread::spawn(move || {
        let mut c = postgres::Client::connect(&url, postgres::NoTls).expect("PostgreSQL answers");
        c.batch_execute(&sql).expect("admin statement");
    })
    .join()
    .unwrap();
}

impl TestDir {
    pub fn new() -> Arc<TestDir> {
        let dir = tempfile::tempdir().unwrap();
        let store = test_store().map(|server| {
            let name = format!("cgt_{}", uuid::Uuid::now_v7().simple());
            admin_sql(&server, format!("CREATE DATABASE {name}"));
            format!("{}/{name}", server.trim_end_matches('/'))
        });
        Arc::new(TestDir { dir, store })
    }

    pub fn path(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// [`test_config`] for this dir and database; with `CONVGATE_TEST_BUS`
    /// (a NATS URL) as well, linked over it under a subject prefix of its
    /// own.
    pub fn config(&self) -> Config {
        let mut c = test_config(self.path());
        c.store = self.store.clone().map(Secret::new);
        if let (Some(store), Ok(bus)) = (&self.store, std::env::var("CONVGATE_TEST_BUS")) {
            if !bus.is_empty() {
                c.bus = Some(bus);
                c.bus_prefix = store.rsplit('/').next().unwrap().to_string();
            }
        }
        c
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if let (Some(server), Some(url)) = (test_store(), &self.store) {
            let name = url.rsplit('/').next().unwrap().to_string();
            admin_sql(
                &server,
                format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            );
        }
    }
}

/// A gateway under test, with the `default` organization's token.
pub struct TestGateway {
    pub gw: Option<Gateway>,
    pub token: String,
    /// Keeps the data dir (and database) alive as long as the gateway.
    pub _dir: Arc<TestDir>,
    pub config: Config,
    pub http: reqwest::Client,
}

/// The test configuration: port 0, a temporary dir, an admin token.
pub fn test_config(dir: &std::path::Path) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.to_path_buf(),
        admin_token: Some(Secret::new(ADMIN_TOKEN)),
        log: "warn".into(),
        ..Config::default()
    }
}

pub async fn spawn_gateway() -> TestGateway {
    spawn_with(|_| {}).await
}

pub async fn spawn_with(tweak: impl FnOnce(&mut Config)) -> TestGateway {
    let dir = TestDir::new();
    let mut config = dir.config();
    tweak(&mut config);
    let gw = convgate::server::start(config.clone())
        .await
        .expect("gateway starts");
    let token = gw
        .bootstrap_token
        .clone()
        .expect("first start prints a token");
    TestGateway {
        gw: Some(gw),
        token,
        _dir: dir,
        config,
        http: reqwest::Client::new(),
    }
}

impl TestGateway {
    pub fn gw(&self) -> &Gateway {
        self.gw.as_ref().expect("running")
    }

    pub fn api_url(&self) -> String {
        self.gw().api_url()
    }

    /// POSTs `body` as-is; returns the status and the validated reply.
    pub async fn post(&self, body: &Value) -> (u16, Value) {
        self.post_raw(body.to_string()).await
    }

    /// POSTs raw bytes; returns the status and the validated reply.
    pub async fn post_raw(&self, body: impl Into<reqwest::Body>) -> (u16, Value) {
        let res = self
            .http
            .post(self.api_url())
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("POST");
        let status = res.status().as_u16();
        let reply: Value = res.json().await.expect("reply is JSON");
        validate_message(&reply);
        let idempotency_conflict = status == 409 && reply["errorCode"] == 1017;
        if status != 413 && !idempotency_conflict {
            let expected = reply["errorCode"]
                .as_u64()
                .map_or(200, |c| convgate::error::status_of(c as u16));
            assert_eq!(status, expected, "{reply}");
        }
        (status, reply)
    }

    /// POSTs `cmd` with `fields` and the organization's token; returns the
    /// status, the response headers and the validated reply.
    pub async fn cmd_full(
        &self,
        cmd: &str,
        fields: Value,
        extra: &[(&str, &str)],
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let mut body = fields;
        body["token"] = json!(self.token);
        body["cmd"] = json!(cmd);
        let mut req = self.http.post(self.api_url()).json(&body);
        for (k, v) in extra {
            req = req.header(*k, *v);
        }
        let res = req.send().await.expect("POST");
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let reply: Value = res.json().await.expect("reply is JSON");
        validate_message(&reply);
        (status, headers, reply)
    }

    /// POSTs `cmd` with `fields` and the organization's token.
    pub async fn cmd(&self, cmd: &str, fields: Value) -> (u16, Value) {
        self.cmd_as(&self.token, cmd, fields).await
    }

    /// POSTs `cmd` with `fields` and `token`.
    pub async fn cmd_as(&self, token: &str, cmd: &str, fields: Value) -> (u16, Value) {
        let mut body = fields;
        body["token"] = json!(token);
        body["cmd"] = json!(cmd);
        self.post(&body).await
    }

    /// A socket connected with the organization's token.
    pub async fn socket(&self) -> Ws {
        self.socket_as(&self.token).await
    }

    /// A socket connected with `token` (asserts `connected`).
    pub async fn socket_as(&self, token: &str) -> Ws {
        let mut ws = self.raw_socket().await;
        ws.send(&json!({"cmd": "connect", "token": token})).await;
        let reply = ws.recv().await;
        assert_eq!(
            (reply["cmd"].clone(), reply["ok"].clone()),
            (json!("connected"), json!(1)),
            "{reply}"
        );
        ws
    }

    /// A socket that has not sent `connect`.
    pub async fn raw_socket(&self) -> Ws {
        ws_connect(&self.gw().ws_url()).await
    }

    /// Creates a bot and a user through POST; returns the uid.
    pub async fn seed_user(&self, bot_id: u64, phone: &str, name: &str) -> String {
        let (s, _) = self
            .cmd(
                "CreateBot",
                json!({"botID": bot_id, "kind": "whatsapp", "name": "bot"}),
            )
            .await;
        assert_eq!(s, 200);
        let (s, r) = self
            .cmd(
                "UpsertUser",
                json!({"botID": bot_id, "phone": phone, "name": name}),
            )
            .await;
        assert_eq!(s, 200, "{r}");
        r["uid"].as_str().unwrap().to_string()
    }

    /// The `GET /metrics` text.
    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("http://{}/metrics", self.gw().addr))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics text")
    }

    /// Shuts the gateway down gracefully and waits for it.
    pub async fn stop(&mut self) {
        let gw = self.gw.take().expect("running");
        gw.shutdown();
        tokio::time::timeout(Duration::from_secs(10), gw.wait())
            .await
            .expect("shutdown within 10 s")
            .expect("clean shutdown");
    }

    /// Starts again on the same data dir (and a new port).
    pub async fn restart(&mut self) {
        let gw = convgate::server::start(self.config.clone())
            .await
            .expect("gateway restarts");
        assert!(gw.bootstrap_token.is_none(), "no second bootstrap");
        self.gw = Some(gw);
    }
}

/// A socket to `url` that has not sent `connect`.
pub async fn ws_connect(url: &str) -> Ws {
    let (stream, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("ws connect");
    Ws {
        stream,
        events: VecDeque::new(),
    }
}

/// A WebSocket client that validates every message and keeps events that
/// arrive while waiting for a reply.
pub struct Ws {
    pub stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub events: VecDeque<Value>,
}

impl Ws {
    pub async fn send(&mut self, v: &Value) {
        self.stream
            .send(Message::Text(v.to_string().into()))
            .await
            .expect("ws send");
    }

    pub async fn send_msg(&mut self, m: Message) {
        self.stream.send(m).await.expect("ws send");
    }

    /// The next message from the server (5 s at most), validated.
    pub async fn recv(&mut self) -> Value {
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(5), self.stream.next())
                .await
                .expect("a message within 5 s")
                .expect("socket open")
                .expect("no socket error");
            match msg {
                Message::Text(t) => {
                    let v: Value = serde_json::from_str(&t).expect("server sends JSON");
                    validate_message(&v);
                    return v;
                }
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// Sends `cmd` with `fields` and returns its reply; events on the way are kept.
    pub async fn cmd(&mut self, cmd: &str, fields: Value) -> Value {
        let mut body = fields;
        body["cmd"] = json!(cmd);
        self.send(&body).await;
        self.reply().await
    }

    /// The next message that is not an event.
    pub async fn reply(&mut self) -> Value {
        loop {
            let v = self.recv().await;
            if v.get("seq").is_some() {
                self.events.push_back(v);
            } else {
                return v;
            }
        }
    }

    /// The next event (kept or new).
    pub async fn event(&mut self) -> Value {
        if let Some(e) = self.events.pop_front() {
            return e;
        }
        let v = self.recv().await;
        assert!(v.get("seq").is_some(), "expected an event, got {v}");
        v
    }

    /// Waits for the close frame (skipping other messages) and returns it.
    pub async fn closed(&mut self) -> Option<CloseFrame> {
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(10), self.stream.next())
                .await
                .expect("closed within 10 s");
            match msg {
                Some(Ok(Message::Close(frame))) => return frame,
                Some(Ok(_)) => continue,
                Some(Err(e)) => panic!("socket error instead of a close frame: {e}"),
                None => return None,
            }
        }
    }

    /// Asserts nothing arrives within `ms` milliseconds.
    pub async fn silent_for(&mut self, ms: u64) {
        assert!(self.events.is_empty(), "unexpected {:?}", self.events);
        if let Ok(m) = tokio::time::timeout(Duration::from_millis(ms), self.stream.next()).await {
            panic!("expected silence, got {m:?}");
        }
    }
}

/// A receiver on loopback (wiremock) answering every POST with `status`.
pub async fn receiver(status: u16) -> wiremock::MockServer {
    let server = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .respond_with(wiremock::ResponseTemplate::new(status))
        .mount(&server)
        .await;
    server
}

/// Every file under `dir`, recursively (tests that check what reaches disk).
/// Everything a gateway stored: each file under the data dir and, with a
/// database, each row of it (`kv:<key>`, key and value together), by name.
pub fn stored(dir: &TestDir) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = walk(dir.path())
        .into_iter()
        .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
        .collect();
    if let Some(url) = dir.store.clone() {
        let rows = std::thread::spawn(move || {
            let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            c.query("SELECT k, v FROM kv", &[])
                .unwrap()
                .iter()
                .map(|r| {
                    let (k, v): (Vec<u8>, Vec<u8>) = (r.get(0), r.get(1));
                    (
                        format!("kv:{}", String::from_utf8_lossy(&k)),
                        [k, v].concat(),
                    )
                })
                .collect::<Vec<_>>()
        })
        .join()
        .unwrap();
        out.extend(rows);
    }
    out
}

pub fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
