//! Load generator for convgate and its bare baselines. Each run prints one
//! line of JSON with its figures: connections, duration, operations, ops/s,
//! latency p50/p99/p99.9 (HdrHistogram, microseconds), errors, and the
//! server's peak RSS when `--pid` is given.
//!
//! Scenarios (see the README's Performance section and `examples/bench.sh`):
//! - `m1`: POST `GetUser` over `--connections` keep-alive connections
//!   (closed loop, or open loop at `--rate` requests/s in all, each
//!   request sent at its instant to within microseconds: see `Pacer`).
//!   `--target floor` sends the gateway's requests to a bare echo in
//!   `floor` mode (m1 and m2).
//! - `m2`: WebSocket `GetUser` round trips, one in flight per socket.
//! - `m3`: idle connected sockets; RSS of `--pid` per socket.
//! - `m4`: fan-out: POST `SetUserEmail`, time until `onUserUpdate` reaches
//!   every socket (one clock: this process sends and receives). With
//!   `--target bare`, an event of the same size sent through the bare echo's
//!   `fanout:` frame: what the machine allows for the fan-out alone.
//! - `m5`: durable writes: POST `SetUserNotes` from every connection; writes
//!   per flush from `/metrics`, against the `fsync` rate of `--fsync-dir`.
//! - `m6`: webhook deliveries of `--events` events to a receiver in this
//!   process; with `--target bare`, plain reqwest POSTs to the same receiver.
//! - `m7`: inbound SMS: Twilio's incoming-message form posts, signed with
//!   `X-Twilio-Signature` over `--public-base-url`, each a new message
//!   (`MessageSid`) from one of 64 numbers, applied durably before its 200;
//!   inbound messages per flush from `/metrics`. With `--target bare`, the
//!   same form posts to the bare echo.
//! - `m8`: conversation history: seeds `--conversations` closed
//!   conversations of 10 inbound SMS each and 1,000 open ones, then times
//!   `GetConversationsFlat` pages of 1,000 conversations (following
//!   `nextCursor`) and `GetOpenConversations`; reply sizes in bytes.
//! - `m9`: lossless events: a socket that missed `--events` events resumes
//!   them (time from `connect` to `resumed`, events/s of the replay); then
//!   rounds of 100 `GetEvents` long polls woken by one write: latency from
//!   the write's acknowledgement to each poll's reply (p50/p99).
//!
//! ```sh
//! cargo run --release --example loadgen -- --scenario m1 --addr 127.0.0.1:8080 --token <token>
//! ```

use bytes::Bytes;
use clap::{Parser, ValueEnum};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

/// What to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    M1,
    M2,
    M3,
    M4,
    M5,
    M6,
    M7,
    M8,
    M9,
}

/// What is being measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// convgate (commands, tokens, events).
    Gateway,
    /// A bare baseline server (echo).
    Bare,
    /// A bare baseline server in `floor` mode (m1 and m2): sent the
    /// gateway's requests, token included, with no preparation.
    Floor,
}

/// Options of one run.
#[derive(Debug, Clone, Parser)]
#[command(about = "convgate load generator")]
pub struct Opts {
    #[arg(long, value_enum)]
    pub scenario: Scenario,
    #[arg(long, value_enum, default_value = "gateway")]
    pub target: Target,
    /// Server address (host:port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: String,
    /// API token (gateway target).
    #[arg(long, default_value = "")]
    pub token: String,
    /// Connections or sockets.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Seconds of measurement (after `--warmup`).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds of warm-up, not measured.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Open-loop total rate, operations per second (m1); 0 = closed loop.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Server process id, for its RSS.
    #[arg(long)]
    pub pid: Option<u32>,
    /// Events to deliver (m6).
    #[arg(long, default_value_t = 2000)]
    pub events: usize,
    /// Directory whose disk's fsync rate is the m5 baseline.
    #[arg(long)]
    pub fsync_dir: Option<std::path::PathBuf>,
    /// The gateway's `public_base_url` (m7 and m8 sign over it); default
    /// `http://<addr>`.
    #[arg(long)]
    pub public_base_url: Option<String>,
    /// Closed conversations to seed (m8).
    #[arg(long, default_value_t = 10_000)]
    pub conversations: usize,
    /// The WebSocket client of m2: `raw` sends pre-masked frames and reads
    /// only frame headers (the cheapest possible client), `tungstenite` a
    /// full client library; `bench.sh` runs both against the bare echo to
    /// show the generator is not the bottleneck.
    #[arg(long, value_enum, default_value = "raw")]
    pub client: WsClient,
    /// m6: only serve the webhook receiver on `--addr` for warm-up plus
    /// duration and report the POSTs it answered per second (its capacity,
    /// measured with wrk by `bench.sh`).
    #[arg(long)]
    pub receiver_only: bool,
    /// More nodes of the same cluster (host:port, comma-separated): m1's
    /// connections and m4's sockets are spread over `--addr` and these,
    /// round robin (m4's POSTs still go to `--addr`).
    #[arg(long, value_delimiter = ',')]
    pub spread: Vec<String>,
    /// A name for the setup measured, copied into the report (M10's
    /// `sled`, `pg`, `pg3`).
    #[arg(long)]
    pub label: Option<String>,
}

impl Opts {
    /// The node the `i`th connection or socket goes to.
    fn node(&self, i: usize) -> &str {
        match i % (self.spread.len() + 1) {
            0 => &self.addr,
            k => &self.spread[k - 1],
        }
    }
}

/// A WebSocket client implementation (m2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WsClient {
    Raw,
    Tungstenite,
}

/// The figures of one run, printed as one JSON line.
#[derive(Debug, serde::Serialize)]
pub struct Report {
    pub scenario: Scenario,
    pub target: Target,
    pub connections: usize,
    pub duration_s: f64,
    pub operations: u64,
    pub ops_per_s: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub errors: u64,
    pub peak_rss_kib: Option<u64>,
    /// The WebSocket client (m2).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<WsClient>,
    /// The generator's CPU use during the measured window, in cores
    /// (scenarios whose workers run through `run_workers`).
    pub gen_cpu: Option<f64>,
    /// The server's (`--pid`), in cores; `None` without `--pid`.
    pub server_cpu: Option<f64>,
    /// What `bench.sh` calls this setup (`--label`), e.g. `pg` or `pg3`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, Value>,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

/// `VmHWM` (peak) or `VmRSS` of `pid` in KiB, from /proc.
pub fn rss_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

struct Totals {
    hist: Histogram<u64>,
    ops: u64,
    errors: u64,
    elapsed: Duration,
    gen_cpu: Option<f64>,
    server_cpu: Option<f64>,
}

impl Totals {
    fn report(self, o: &Opts, extra: serde_json::Map<String, Value>) -> Report {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        Report {
            scenario: o.scenario,
            target: o.target,
            connections: o.connections,
            duration_s: (secs * 1000.0).round() / 1000.0,
            operations: self.ops,
            ops_per_s: (self.ops as f64 / secs * 10.0).round() / 10.0,
            p50_us: self.hist.value_at_quantile(0.5),
            p99_us: self.hist.value_at_quantile(0.99),
            p999_us: self.hist.value_at_quantile(0.999),
            errors: self.errors,
            peak_rss_kib: o.pid.and_then(|p| rss_kib(p, "VmHWM:")),
            client: (o.scenario == Scenario::M2).then_some(o.client),
            gen_cpu: self.gen_cpu,
            server_cpu: self.server_cpu,
            label: o.label.clone(),
            extra,
        }
    }
}

/// CPU seconds (user + system) this process has used so far.
fn own_cpu_s() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// CPU seconds (user + system) process `pid` has used so far.
fn proc_cpu_s(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command's closing parenthesis; utime and stime are
    // the 14th and 15th of the line.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(ticks / hz)
}

/// Samples the generator's and the server's CPU use over the measured
/// window: `(generator, server)` in cores (1.0 = one core busy).
struct CpuMeter {
    pid: Option<u32>,
    at: Instant,
    own: f64,
    server: Option<f64>,
}

impl CpuMeter {
    fn start(pid: Option<u32>) -> CpuMeter {
        CpuMeter {
            pid,
            at: Instant::now(),
            own: own_cpu_s(),
            server: pid.and_then(proc_cpu_s),
        }
    }

    fn stop(self) -> (Option<f64>, Option<f64>) {
        let wall = self.at.elapsed().as_secs_f64().max(1e-9);
        let r = |x: f64| (x * 100.0).round() / 100.0;
        let own = r((own_cpu_s() - self.own) / wall);
        let server = match (self.server, self.pid.and_then(proc_cpu_s)) {
            (Some(a), Some(b)) => Some(r((b - a) / wall)),
            _ => None,
        };
        (Some(own), server)
    }
}

/// One request over a dedicated keep-alive HTTP/1.1 connection.
struct HttpConn {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    host: String,
}

impl HttpConn {
    async fn open(addr: &str) -> Result<HttpConn, String> {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let _ = tcp.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        Ok(HttpConn {
            sender,
            host: addr.to_string(),
        })
    }

    /// POSTs JSON `body` to `path`; returns the status and the reply body.
    async fn post(&mut self, path: &str, body: Bytes) -> Result<(u16, Bytes), String> {
        self.post_with(path, &[("content-type", "application/json")], body)
            .await
    }

    /// POSTs `body` to `path` with `headers`; returns the status and the reply body.
    async fn post_with(
        &mut self,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<(u16, Bytes), String> {
        self.sender.ready().await.map_err(|e| e.to_string())?;
        let mut req = hyper::Request::post(path).header("host", &self.host);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(body)).expect("request builds");
        let res = self
            .sender
            .send_request(req)
            .await
            .map_err(|e| e.to_string())?;
        let status = res.status().as_u16();
        let body = res
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, body))
    }
}

/// POSTs one command to the gateway and returns the reply.
async fn command(addr: &str, token: &str, mut body: Value) -> Result<Value, String> {
    body["token"] = json!(token);
    let mut conn = HttpConn::open(addr).await?;
    let (_, reply) = conn.post("/api", Bytes::from(body.to_string())).await?;
    serde_json::from_slice(&reply).map_err(|e| e.to_string())
}

const UID: &str = "3941-wa3-447922029419";

/// Creates the bot and the user the scenarios read and change.
async fn prepare_gateway(o: &Opts) -> Result<(), String> {
    command(
        &o.addr,
        &o.token,
        json!({"cmd": "CreateBot", "botID": 3941, "kind": "whatsapp"}),
    )
    .await?;
    let r = command(
        &o.addr,
        &o.token,
        json!({"cmd": "UpsertUser", "botID": 3941, "phone": "+447922029419", "name": "Billy Bob"}),
    )
    .await?;
    if r["ok"] != 1 {
        return Err(format!("cannot prepare the user: {r}"));
    }
    Ok(())
}

/// Reads a counter from the gateway's `/metrics`.
async fn metric(addr: &str, name: &str) -> Result<f64, String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(tcp))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = hyper::Request::get("/metrics")
        .header("host", addr)
        .body(Full::new(Bytes::new()))
        .expect("request builds");
    let res = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let text = res
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    String::from_utf8_lossy(&text)
        .lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .ok_or_else(|| format!("no metric {name}"))
}

/// Runs closed- or open-loop workers for warm-up plus duration; each worker
/// gets its index and returns its histogram, operations and errors.
async fn run_workers<F, Fut>(o: &Opts, worker: F) -> Totals
where
    F: Fn(usize, Instant, Instant) -> Fut,
    Fut: std::future::Future<Output = (Histogram<u64>, u64, u64)> + Send + 'static,
{
    let measure_from = Instant::now() + Duration::from_secs_f64(o.warmup);
    let until = measure_from + Duration::from_secs_f64(o.duration);
    let tasks: Vec<_> = (0..o.connections)
        .map(|i| tokio::spawn(worker(i, measure_from, until)))
        .collect();
    let pid = o.pid;
    let meter = tokio::spawn(async move {
        tokio::time::sleep_until(measure_from.into()).await;
        let m = CpuMeter::start(pid);
        tokio::time::sleep_until(until.into()).await;
        m.stop()
    });
    let mut totals = Totals {
        hist: histogram(),
        ops: 0,
        errors: 0,
        elapsed: Duration::from_secs_f64(o.duration),
        gen_cpu: None,
        server_cpu: None,
    };
    for t in tasks {
        if let Ok((h, ops, errors)) = t.await {
            totals.hist.add(h).expect("same bounds");
            totals.ops += ops;
            totals.errors += errors;
        } else {
            totals.errors += 1;
        }
    }
    (totals.gen_cpu, totals.server_cpu) = meter.await.unwrap_or((None, None));
    totals
}

/// A keep-alive HTTP/1.1 connection driven with prepared request bytes:
/// the generator writes them as they are and reads only the status line,
/// `Content-Length` and that many body bytes. A request costs it one write,
/// one or two reads and a header scan — far less than any server spends on
/// it, so the generator is never the slowest side (checked by `bench.sh`
/// against wrk).
struct RawHttp {
    tcp: TcpStream,
    buf: Vec<u8>,
    len: usize,
}

impl RawHttp {
    async fn open(addr: &str) -> Result<RawHttp, String> {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let _ = tcp.set_nodelay(true);
        Ok(RawHttp {
            tcp,
            buf: vec![0; 8192],
            len: 0,
        })
    }

    /// Sends the prepared request `req` and returns the response's status.
    async fn round_trip(&mut self, req: &[u8]) -> Result<u16, String> {
        use tokio::io::AsyncWriteExt;
        self.tcp.write_all(req).await.map_err(|e| e.to_string())?;
        loop {
            if let Some(end) = find(&self.buf[..self.len], b"\r\n\r\n") {
                let head = &self.buf[..end];
                let status = std::str::from_utf8(head.get(9..12).unwrap_or_default())
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or("bad status line")?;
                let need = end + 4 + content_length(head);
                while self.len < need {
                    if need > self.buf.len() {
                        self.buf.resize(need, 0);
                    }
                    self.fill().await?;
                }
                self.buf.copy_within(need..self.len, 0);
                self.len -= need;
                return Ok(status);
            }
            if self.len == self.buf.len() {
                self.buf.resize(self.len * 2, 0);
            }
            self.fill().await?;
        }
    }

    async fn fill(&mut self) -> Result<(), String> {
        use tokio::io::AsyncReadExt;
        match self.tcp.read(&mut self.buf[self.len..]).await {
            Ok(0) => Err("closed".into()),
            Ok(n) => {
                self.len += n;
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The `Content-Length` of a response head (0 when absent).
fn content_length(head: &[u8]) -> usize {
    head.split(|&b| b == b'\n')
        .find_map(|line| {
            let (name, value) = line.split_at(line.iter().position(|&b| b == b':')?);
            name.eq_ignore_ascii_case(b"content-length")
                .then(|| std::str::from_utf8(&value[1..]).ok()?.trim().parse().ok())
                .flatten()
        })
        .unwrap_or(0)
}

/// A POST of `body` to `path` as bytes ready to write.
fn prepared_post(addr: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Bytes {
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    Bytes::from(req)
}

async fn m1(o: &Opts) -> Result<Report, String> {
    let (path, body) = match o.target {
        Target::Gateway => {
            prepare_gateway(o).await?;
            (
                "/api",
                json!({"token": o.token, "cmd": "GetUser", "uid": UID}).to_string(),
            )
        }
        Target::Bare => ("/", json!({"cmd": "GetUser", "uid": UID}).to_string()),
        Target::Floor => (
            "/api",
            json!({"token": o.token, "cmd": "GetUser", "uid": UID}).to_string(),
        ),
    };
    // Every request is the same bytes, prepared once.
    let req = prepared_post(
        &o.addr,
        path,
        &[("Content-Type", "application/json")],
        &body,
    );
    let interval = (o.rate > 0.0).then(|| Duration::from_secs_f64(o.connections as f64 / o.rate));
    let nodes: Vec<String> = (0..=o.spread.len())
        .map(|i| o.node(i).to_string())
        .collect();
    let pacer = interval.map(|_| Pacer::start(o.connections));
    let lateness = Arc::new(Mutex::new(histogram()));
    let worker_pacer = pacer.clone();
    let worker_lateness = lateness.clone();
    let totals = run_workers(o, move |i, measure_from, until| {
        let addr = nodes[i % nodes.len()].clone();
        let req = req.clone();
        let pacer = worker_pacer.clone();
        let lateness = worker_lateness.clone();
        async move {
            let mut h = histogram();
            let mut late = histogram();
            let (mut ops, mut errors) = (0, 0);
            let Ok(mut conn) = RawHttp::open(&addr).await else {
                return (h, 0, 1);
            };
            // Open loop: request k is due at start + k·interval (spread over
            // connections); latency counts from when it was due.
            let start =
                Instant::now() + interval.map_or(Duration::ZERO, |iv| iv.mul_f64(i as f64 / 64.0));
            let mut k: u32 = 0;
            loop {
                let due = interval.map_or_else(Instant::now, |iv| start + iv * k);
                if due >= until {
                    break;
                }
                // Latency counts from when the request was due if this
                // connection was still busy with the previous one then
                // (no coordinated omission); but a wake-up after the due
                // instant is the generator's delay, not the server's, so
                // then it counts from the wake-up (and the delay is
                // reported as `pace_late_*`).
                let start = match &pacer {
                    Some(p) if Instant::now() < due => {
                        p.wait(i, due).await;
                        let woke = Instant::now();
                        if due >= measure_from {
                            let _ = late.record((woke - due).as_micros() as u64);
                        }
                        woke
                    }
                    _ => due,
                };
                k += 1;
                let res = conn.round_trip(&req).await;
                let done = Instant::now();
                if due < measure_from {
                    continue;
                }
                match res {
                    Ok(200) => {
                        ops += 1;
                        let _ = h.record((done - start).as_micros().max(1) as u64);
                    }
                    Ok(_) => errors += 1,
                    Err(_) => {
                        errors += 1;
                        match RawHttp::open(&addr).await {
                            Ok(c) => conn = c,
                            Err(_) => break,
                        }
                    }
                }
            }
            lateness
                .lock()
                .expect("lateness")
                .add(late)
                .expect("same bounds");
            (h, ops, errors)
        }
    })
    .await;
    if let Some(p) = pacer {
        p.stop();
    }
    let mut extra = serde_json::Map::new();
    extra.insert("rate".into(), json!(o.rate));
    if o.rate > 0.0 {
        let late = lateness.lock().expect("lateness");
        extra.insert(
            "pace_late_p50_us".into(),
            json!(late.value_at_quantile(0.5)),
        );
        extra.insert(
            "pace_late_p99_us".into(),
            json!(late.value_at_quantile(0.99)),
        );
    }
    Ok(totals.report(o, extra))
}

/// Open-loop pacing finer than tokio's 1 ms timers. Request k of a
/// connection is due at an exact instant; sleeping until it with tokio
/// wakes every connection due within the same millisecond at once, so at
/// 28k requests/s they went out in bursts of ~28 and the p99 measured the
/// burst, not the server. One task watches the clock for all connections:
/// it sleeps on a tokio timer while the next due instant is more than
/// 2 ms away and otherwise yields in a loop, waking each connection at its
/// instant (a few microseconds late at most; the report's `pace_late_*`).
/// It keeps its core busy while requests are near, as wrk2's pacing does.
struct Pacer {
    /// Per connection: the instant it waits for and its waker.
    slots: Mutex<Vec<Option<(Instant, std::task::Waker)>>>,
    /// Wakes the clock task from its timer sleep when a connection waits.
    changed: tokio::sync::Notify,
    stopped: std::sync::atomic::AtomicBool,
}

impl Pacer {
    /// Starts the clock task for `connections` connections.
    fn start(connections: usize) -> Arc<Pacer> {
        let p = Arc::new(Pacer {
            slots: Mutex::new(vec![None; connections]),
            changed: tokio::sync::Notify::new(),
            stopped: std::sync::atomic::AtomicBool::new(false),
        });
        tokio::spawn(p.clone().run());
        p
    }

    /// Ends the clock task (after every connection is done).
    fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
        self.changed.notify_one();
    }

    /// Returns at `due` or just after, for connection `i`.
    async fn wait(&self, i: usize, due: Instant) {
        let mut registered = false;
        std::future::poll_fn(|cx| {
            if Instant::now() >= due {
                return std::task::Poll::Ready(());
            }
            self.slots.lock().expect("slots")[i] = Some((due, cx.waker().clone()));
            if !registered {
                registered = true;
                self.changed.notify_one();
            }
            std::task::Poll::Pending
        })
        .await
    }

    async fn run(self: Arc<Pacer>) {
        const SPIN: Duration = Duration::from_millis(2);
        while !self.stopped.load(Ordering::Relaxed) {
            let now = Instant::now();
            let mut next: Option<Instant> = None;
            for slot in self.slots.lock().expect("slots").iter_mut() {
                match slot {
                    Some((due, _)) if *due <= now => {
                        if let Some((_, waker)) = slot.take() {
                            waker.wake();
                        }
                    }
                    Some((due, _)) => next = Some(next.map_or(*due, |n| n.min(*due))),
                    None => {}
                }
            }
            match next {
                Some(d) if d <= now + SPIN => tokio::task::yield_now().await,
                Some(d) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until((d - SPIN / 2).into()) => {}
                        _ = self.changed.notified() => {}
                    }
                }
                None => self.changed.notified().await,
            }
        }
    }
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

/// Sends the WebSocket upgrade request for `o`'s target on `tcp` and reads
/// exactly the response head (the server sends nothing after its 101 until
/// the client speaks). Errors: anything but 101.
async fn upgrade(tcp: &mut TcpStream, o: &Opts) -> Result<(), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let path = match o.target {
        Target::Gateway => "/ws",
        Target::Bare | Target::Floor => "/",
    };
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        o.addr
    );
    tcp.write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut head = Vec::with_capacity(256);
    while !head.ends_with(b"\r\n\r\n") {
        head.push(tcp.read_u8().await.map_err(|e| e.to_string())?);
        if head.len() > 8192 {
            return Err("oversized upgrade response".into());
        }
    }
    if !head.starts_with(b"HTTP/1.1 101") {
        return Err(format!(
            "upgrade refused: {}",
            String::from_utf8_lossy(&head)
        ));
    }
    Ok(())
}

/// A socket to the gateway (connected with the token) or to the bare echo.
///
/// The upgrade is done by hand so that tungstenite starts from a fresh 4 KiB
/// read buffer: after its own client handshake, it inherits the handshake's
/// buffer, and zero-filling that on every read made the generator, not the
/// server, the bottleneck of fan-out (measured with perf: 35% in memset).
async fn open_socket(o: &Opts) -> Result<Ws, String> {
    open_socket_to(o, &o.addr).await
}

/// [`open_socket`] to node `addr`.
async fn open_socket_to(o: &Opts, addr: &str) -> Result<Ws, String> {
    let mut tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let _ = tcp.set_nodelay(true);
    upgrade(&mut tcp, o).await?;
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
        tokio_tungstenite::MaybeTlsStream::Plain(tcp),
        tokio_tungstenite::tungstenite::protocol::Role::Client,
        Some(config),
    )
    .await;
    if o.target == Target::Gateway {
        let connect = json!({"cmd": "connect", "token": o.token}).to_string();
        ws.send(Message::Text(connect.into()))
            .await
            .map_err(|e| e.to_string())?;
        match ws.next().await {
            Some(Ok(Message::Text(t))) if t.contains("\"connected\"") => {}
            other => return Err(format!("connect refused: {other:?}")),
        }
    }
    Ok(ws)
}

/// A client text frame of `payload`, masked (RFC 6455 §5.3) with a fixed
/// key: prepared once, written as it is.
fn masked_text(payload: &[u8]) -> Bytes {
    const KEY: [u8; 4] = [0x12, 0x34, 0x56, 0x78];
    let mut f = vec![0x81];
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n if n <= 0xffff => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(&KEY);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ KEY[i % 4]));
    Bytes::from(f)
}

/// The cheapest WebSocket client: writes prepared frames, reads only frame
/// headers and skips payloads.
struct RawWs {
    http: RawHttp,
}

impl RawWs {
    async fn open(o: &Opts) -> Result<RawWs, String> {
        let mut http = RawHttp::open(&o.addr).await?;
        upgrade(&mut http.tcp, o).await?;
        let mut ws = RawWs { http };
        if o.target == Target::Gateway {
            let connect = json!({"cmd": "connect", "token": o.token}).to_string();
            ws.send(&masked_text(connect.as_bytes())).await?;
            ws.next_frame().await?;
        }
        Ok(ws)
    }

    async fn send(&mut self, frame: &[u8]) -> Result<(), String> {
        use tokio::io::AsyncWriteExt;
        self.http
            .tcp
            .write_all(frame)
            .await
            .map_err(|e| e.to_string())
    }

    /// Skips the next frame; returns its opcode.
    async fn next_frame(&mut self) -> Result<u8, String> {
        let h = &mut self.http;
        while h.len < 2 {
            h.fill().await?;
        }
        let (op, short) = (h.buf[0] & 0x0f, (h.buf[1] & 0x7f) as usize);
        let hdr = match short {
            126 => 4,
            127 => 10,
            _ => 2,
        };
        while h.len < hdr {
            h.fill().await?;
        }
        let len = match short {
            126 => u16::from_be_bytes([h.buf[2], h.buf[3]]) as usize,
            127 => u64::from_be_bytes(h.buf[2..10].try_into().expect("8 bytes")) as usize,
            n => n,
        };
        let need = hdr + len;
        if need > h.buf.len() {
            h.buf.resize(need, 0);
        }
        while h.len < need {
            h.fill().await?;
        }
        h.buf.copy_within(need..h.len, 0);
        h.len -= need;
        Ok(op)
    }
}

/// One m2 client socket: the raw-frame client or tungstenite.
enum M2Socket {
    Raw(RawWs, Bytes),
    Tungstenite(Box<Ws>, String),
}

impl M2Socket {
    async fn open(o: &Opts, msg: &str) -> Result<M2Socket, String> {
        Ok(match o.client {
            WsClient::Raw => M2Socket::Raw(RawWs::open(o).await?, masked_text(msg.as_bytes())),
            WsClient::Tungstenite => {
                M2Socket::Tungstenite(Box::new(open_socket(o).await?), msg.into())
            }
        })
    }

    /// Sends the command and waits for its reply; `false` when the socket
    /// failed. No event is caused in m2: every text frame is a reply.
    async fn round_trip(&mut self) -> bool {
        match self {
            M2Socket::Raw(ws, frame) => {
                ws.send(frame).await.is_ok() && matches!(ws.next_frame().await, Ok(0x1))
            }
            M2Socket::Tungstenite(ws, msg) => {
                if ws.send(Message::Text(msg.clone().into())).await.is_err() {
                    return false;
                }
                loop {
                    match ws.next().await {
                        Some(Ok(Message::Text(_))) => return true,
                        Some(Ok(_)) => continue,
                        _ => return false,
                    }
                }
            }
        }
    }
}

async fn m2(o: &Opts) -> Result<Report, String> {
    if o.target == Target::Gateway {
        prepare_gateway(o).await?;
    }
    let msg = json!({"cmd": "GetUser", "uid": UID}).to_string();
    let o2 = o.clone();
    let totals = run_workers(o, move |_, measure_from, until| {
        let o = o2.clone();
        let msg = msg.clone();
        async move {
            let mut h = histogram();
            let (mut ops, mut errors) = (0, 0);
            let Ok(mut ws) = M2Socket::open(&o, &msg).await else {
                return (h, 0, 1);
            };
            while Instant::now() < until {
                let t0 = Instant::now();
                if !ws.round_trip().await {
                    errors += 1;
                    break;
                }
                if t0 >= measure_from {
                    ops += 1;
                    let _ = h.record(t0.elapsed().as_micros().max(1) as u64);
                }
            }
            (h, ops, errors)
        }
    })
    .await;
    Ok(totals.report(o, serde_json::Map::new()))
}

async fn m3(o: &Opts) -> Result<Report, String> {
    let pid = o.pid.ok_or("m3 needs --pid of the server")?;
    let before = rss_kib(pid, "VmRSS:").ok_or("cannot read the server's RSS")?;
    let started = Instant::now();
    let mut sockets = Vec::with_capacity(o.connections);
    let mut errors = 0;
    // Open in batches, so that the accept queue never overflows.
    for chunk in (0..o.connections).collect::<Vec<_>>().chunks(100) {
        let opened = futures_util::future::join_all(chunk.iter().map(|_| open_socket(o))).await;
        for s in opened {
            match s {
                Ok(ws) => sockets.push(ws),
                Err(_) => errors += 1,
            }
        }
    }
    let open_time = started.elapsed();
    // Hold them for the duration, heartbeating every 60 s like a CRM.
    let hold_until = Instant::now() + Duration::from_secs_f64(o.duration.max(1.0));
    let mut next_heartbeat = Instant::now() + Duration::from_secs(60);
    while Instant::now() < hold_until {
        tokio::time::sleep(Duration::from_millis(200).min(hold_until - Instant::now())).await;
        if Instant::now() >= next_heartbeat {
            for ws in &mut sockets {
                let hb = json!({"cmd": "heartbeat"}).to_string();
                let _ = ws.send(Message::Text(hb.into())).await;
            }
            next_heartbeat += Duration::from_secs(60);
        }
    }
    let after = rss_kib(pid, "VmRSS:").ok_or("cannot read the server's RSS")?;
    let live = sockets.len() as u64;
    let mut extra = serde_json::Map::new();
    extra.insert("rss_before_kib".into(), json!(before));
    extra.insert("rss_after_kib".into(), json!(after));
    extra.insert(
        "rss_per_socket_kib".into(),
        json!(((after.saturating_sub(before)) as f64 / live.max(1) as f64 * 100.0).round() / 100.0),
    );
    let totals = Totals {
        hist: histogram(),
        ops: live,
        errors,
        elapsed: open_time,
        gen_cpu: None,
        server_cpu: None,
    };
    Ok(totals.report(o, extra))
}

async fn m4(o: &Opts) -> Result<Report, String> {
    if o.target == Target::Gateway {
        prepare_gateway(o).await?;
    }
    let mut sockets = Vec::with_capacity(o.connections);
    for chunk in (0..o.connections).collect::<Vec<_>>().chunks(100) {
        let opened = chunk.iter().map(|&i| open_socket_to(o, o.node(i)));
        for s in futures_util::future::join_all(opened).await {
            sockets.push(s?);
        }
    }
    // Round k sets the email r<k>@example.com; sent[k] is when its POST left.
    let sent: Arc<Mutex<Vec<Instant>>> = Arc::new(Mutex::new(Vec::new()));
    let received = Arc::new(AtomicU64::new(0));
    let hist = Arc::new(Mutex::new(histogram()));
    let stop = tokio_util::sync::CancellationToken::new();
    let mut readers = Vec::new();
    for mut ws in sockets {
        let (sent, received, hist, stop) =
            (sent.clone(), received.clone(), hist.clone(), stop.clone());
        readers.push(tokio::spawn(async move {
            loop {
                let msg = tokio::select! {
                    _ = stop.cancelled() => break,
                    m = ws.next() => m,
                };
                let Some(Ok(Message::Text(t))) = msg else {
                    if matches!(msg, Some(Ok(_))) {
                        continue;
                    }
                    break;
                };
                let now = Instant::now();
                // The round number is in the update's email, r<k>@example.com.
                // Found by substring, not a full parse: the generator must
                // not be what the fan-out waits for.
                let round = t
                    .find("\"update\":{\"email\":\"r")
                    .map(|at| &t[at + 20..])
                    .and_then(|rest| rest.split('@').next()?.parse::<usize>().ok());
                if let Some(k) = round {
                    let t0 = sent.lock().unwrap().get(k).copied();
                    if let Some(t0) = t0 {
                        let _ = hist
                            .lock()
                            .unwrap()
                            .record((now - t0).as_micros().max(1) as u64);
                        received.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    // Gateway: the change goes in by POST. Bare: one more socket sends the
    // events (it receives them too, unread).
    let (mut conn, mut sender) = match o.target {
        Target::Gateway => (Some(HttpConn::open(&o.addr).await?), None),
        Target::Bare | Target::Floor => (None, Some(open_socket(o).await?)),
    };
    let started = Instant::now();
    let until = started + Duration::from_secs_f64(o.duration);
    let mut rounds = 0u64;
    let mut errors = 0;
    // The POST's own round trip: the change made durable (flushed) and
    // acknowledged. The fan-out cannot start before that point.
    let mut acks = histogram();
    while Instant::now() < until {
        let k = rounds as usize;
        let email = format!("r{k}@example.com");
        let t0 = Instant::now();
        sent.lock().unwrap().push(t0);
        if let Some(ws) = &mut sender {
            // The gateway's onUserUpdate for this change, byte for byte in size.
            let event = json!({"cmd": "onUserUpdate", "ok": 1, "data": {"user": {
                "uid": UID, "name": "Billy Bob", "first_name": "Billy", "last_name": "Bob",
                "email": email, "phone": "+447922029419", "bot": "WA3", "botID": 3941,
                "lang": "en", "created": "2026-11-22T01:14:04.233Z", "notes": "", "url": ""},
                "update": {"email": email}}, "seq": k + 3, "eventId": "0193b5f2-7d1c-7c4e-9f1a-6b2d3e4f5a6b"});
            let frame = format!("fanout:{event}");
            if ws.send(Message::Text(frame.into())).await.is_err() {
                errors += 1;
            }
        } else if let Some(conn) = &mut conn {
            let body = json!({"token": o.token, "cmd": "SetUserEmail", "uid": UID, "email": email});
            match conn.post("/api", Bytes::from(body.to_string())).await {
                Ok((200, _)) => {
                    let _ = acks.record(t0.elapsed().as_micros().max(1) as u64);
                }
                _ => errors += 1,
            }
        }
        rounds += 1;
        // Wait until every socket has it (2 s at most), then a pause.
        let want = rounds * o.connections as u64;
        let wait_until = Instant::now() + Duration::from_secs(2);
        while received.load(Ordering::Relaxed) < want && Instant::now() < wait_until {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.cancel();
    for r in readers {
        let _ = r.await;
    }
    let got = received.load(Ordering::Relaxed);
    let expected = rounds * o.connections as u64;
    let hist = Arc::try_unwrap(hist)
        .map_err(|_| "readers still hold the histogram")?
        .into_inner()
        .unwrap();
    let mut extra = serde_json::Map::new();
    extra.insert("rounds".into(), json!(rounds));
    extra.insert("ack_p50_us".into(), json!(acks.value_at_quantile(0.5)));
    extra.insert("ack_p99_us".into(), json!(acks.value_at_quantile(0.99)));
    extra.insert("missing".into(), json!(expected.saturating_sub(got)));
    let totals = Totals {
        hist,
        ops: got,
        errors: errors + expected.saturating_sub(got),
        elapsed: started.elapsed(),
        gen_cpu: None,
        server_cpu: None,
    };
    Ok(totals.report(o, extra))
}

/// fsync()s per second of a 4 KiB write on the disk of `dir`, over 2 s.
pub fn fsync_rate(dir: &std::path::Path) -> Result<f64, String> {
    use std::io::Write;
    let path = dir.join(".loadgen-fsync-probe");
    let mut f = std::fs::File::create(&path).map_err(|e| e.to_string())?;
    let block = [7u8; 4096];
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < Duration::from_secs(2) {
        f.write_all(&block).map_err(|e| e.to_string())?;
        f.sync_data().map_err(|e| e.to_string())?;
        n += 1;
    }
    let _ = std::fs::remove_file(&path);
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

async fn m5(o: &Opts) -> Result<Report, String> {
    if o.target != Target::Gateway {
        return Err("m5 runs against the gateway only".into());
    }
    prepare_gateway(o).await?;
    let fsync = o.fsync_dir.as_deref().map(fsync_rate).transpose()?;
    let addr = o.addr.clone();
    let token = o.token.clone();
    let flushes_0 = Arc::new(Mutex::new(None::<(f64, f64)>));
    let warm = Duration::from_secs_f64(o.warmup);
    {
        // Read the counters as measurement starts.
        let (addr, flushes_0) = (addr.clone(), flushes_0.clone());
        tokio::spawn(async move {
            tokio::time::sleep(warm).await;
            let f = metric(&addr, "convgate_store_flushes_total")
                .await
                .unwrap_or(0.0);
            let w = metric(&addr, "convgate_store_writes_total")
                .await
                .unwrap_or(0.0);
            *flushes_0.lock().unwrap() = Some((f, w));
        });
    }
    let totals = run_workers(o, move |i, measure_from, until| {
        let addr = addr.clone();
        let token = token.clone();
        async move {
            let mut h = histogram();
            let (mut ops, mut errors) = (0, 0);
            let Ok(mut conn) = HttpConn::open(&addr).await else {
                return (h, 0, 1);
            };
            let mut k = 0u64;
            while Instant::now() < until {
                k += 1;
                let body = json!({"token": token, "cmd": "SetUserNotes", "uid": UID, "notes": format!("caller {i} write {k}")});
                let t0 = Instant::now();
                let res = conn.post("/api", Bytes::from(body.to_string())).await;
                if t0 < measure_from {
                    continue;
                }
                match res {
                    Ok((200, _)) => {
                        ops += 1;
                        let _ = h.record(t0.elapsed().as_micros().max(1) as u64);
                    }
                    _ => errors += 1,
                }
            }
            (h, ops, errors)
        }
    })
    .await;
    let f1 = metric(&o.addr, "convgate_store_flushes_total").await?;
    let w1 = metric(&o.addr, "convgate_store_writes_total").await?;
    let (f0, w0) = flushes_0.lock().unwrap().unwrap_or((0.0, 0.0));
    let mut extra = serde_json::Map::new();
    let per_flush = (w1 - w0) / (f1 - f0).max(1.0);
    extra.insert(
        "writes_per_flush".into(),
        json!((per_flush * 10.0).round() / 10.0),
    );
    extra.insert(
        "flushes_per_s".into(),
        json!(((f1 - f0) / o.duration * 10.0).round() / 10.0),
    );
    if let Some(f) = fsync {
        extra.insert("fsync_per_s".into(), json!((f * 10.0).round() / 10.0));
    }
    Ok(totals.report(o, extra))
}

/// The SMS bot M7 posts to, and its Twilio auth token.
const SMS_BOT: u64 = 7000;
const SMS_AUTH_TOKEN: &str = "bench-twilio-auth-token";

/// Twilio's `X-Twilio-Signature` of a form post to `url`.
fn twilio_signature(url: &str, params: &[(String, String)]) -> String {
    use base64::Engine;
    use hmac::Mac;
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(SMS_AUTH_TOKEN.as_bytes())
        .expect("any key length");
    mac.update(url.as_bytes());
    for (k, v) in sorted {
        mac.update(k.as_bytes());
        mac.update(v.as_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

async fn m7(o: &Opts) -> Result<Report, String> {
    let path = match o.target {
        Target::Gateway => {
            let r = command(
                &o.addr,
                &o.token,
                json!({"cmd": "CreateBot", "botID": SMS_BOT, "kind": "sms",
                    "account_sid": "ACbench0000000000000000000000000000",
                    "auth_token": SMS_AUTH_TOKEN, "from": "+15557122661"}),
            )
            .await?;
            if r["ok"] != 1 {
                return Err(format!("cannot create the SMS bot: {r}"));
            }
            format!("/channels/sms/{SMS_BOT}")
        }
        Target::Bare | Target::Floor => "/".to_string(),
    };
    let base = o
        .public_base_url
        .clone()
        .unwrap_or_else(|| format!("http://{}", o.addr));
    let url = format!("{}{path}", base.trim_end_matches('/'));
    let counters_0 = Arc::new(Mutex::new(None::<(f64, f64)>));
    if o.target == Target::Gateway {
        let (addr, counters_0) = (o.addr.clone(), counters_0.clone());
        let warm = Duration::from_secs_f64(o.warmup);
        tokio::spawn(async move {
            tokio::time::sleep(warm).await;
            let f = metric(&addr, "convgate_store_flushes_total")
                .await
                .unwrap_or(0.0);
            let w = metric(&addr, "convgate_store_writes_total")
                .await
                .unwrap_or(0.0);
            *counters_0.lock().unwrap() = Some((f, w));
        });
    }
    let addr = o.addr.clone();
    let target = o.target;
    let totals = run_workers(o, move |i, measure_from, until| {
        let (addr, path, url) = (addr.clone(), path.clone(), url.clone());
        async move {
            let mut h = histogram();
            let (mut ops, mut errors) = (0, 0);
            let Ok(mut conn) = RawHttp::open(&addr).await else {
                return (h, 0, 1);
            };
            let from = format!("+1415555{:04}", i % 10_000);
            // Each post to the gateway is a new message (its own
            // `MessageSid`, signed); the bare echo dedupes nothing, so it
            // gets a ring of 64 posts prepared before the run.
            let sms = |k: u64| {
                let sid = format!("SM{i:08x}{k:024x}");
                let params: Vec<(String, String)> = [
                    ("ToCountry", "US"),
                    ("SmsMessageSid", &sid),
                    ("NumMedia", "0"),
                    ("SmsSid", &sid),
                    ("SmsStatus", "received"),
                    ("Body", "Is my order on its way?"),
                    ("FromCountry", "US"),
                    ("To", "+15557122661"),
                    ("NumSegments", "1"),
                    ("MessageSid", &sid),
                    ("AccountSid", "ACbench0000000000000000000000000000"),
                    ("From", &from),
                    ("ApiVersion", "2010-04-01"),
                ]
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect();
                let sig = twilio_signature(&url, &params);
                let body = url::form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(&params)
                    .finish();
                prepared_post(
                    &addr,
                    &path,
                    &[
                        ("Content-Type", "application/x-www-form-urlencoded"),
                        ("X-Twilio-Signature", sig.as_str()),
                    ],
                    &body,
                )
            };
            let ring: Vec<Bytes> = match target {
                Target::Bare | Target::Floor => (0..64).map(sms).collect(),
                Target::Gateway => Vec::new(),
            };
            let mut k = 0u64;
            while Instant::now() < until {
                k += 1;
                let req = match target {
                    Target::Bare | Target::Floor => ring[k as usize % ring.len()].clone(),
                    Target::Gateway => sms(k),
                };
                let t0 = Instant::now();
                let res = conn.round_trip(&req).await;
                if t0 < measure_from {
                    continue;
                }
                match res {
                    Ok(200) => {
                        ops += 1;
                        let _ = h.record(t0.elapsed().as_micros().max(1) as u64);
                    }
                    Ok(_) => errors += 1,
                    Err(_) => {
                        errors += 1;
                        match RawHttp::open(&addr).await {
                            Ok(c) => conn = c,
                            Err(_) => break,
                        }
                    }
                }
            }
            (h, ops, errors)
        }
    })
    .await;
    let mut extra = serde_json::Map::new();
    if o.target == Target::Gateway {
        let f1 = metric(&o.addr, "convgate_store_flushes_total").await?;
        let w1 = metric(&o.addr, "convgate_store_writes_total").await?;
        let (f0, w0) = counters_0.lock().unwrap().unwrap_or((0.0, 0.0));
        let per_flush = (w1 - w0) / (f1 - f0).max(1.0);
        extra.insert(
            "writes_per_flush".into(),
            json!((per_flush * 10.0).round() / 10.0),
        );
    }
    Ok(totals.report(o, extra))
}

/// Posts one signed inbound SMS from `from` with `body` to the M7/M8 bot.
async fn post_sms(
    conn: &mut HttpConn,
    url: &str,
    path: &str,
    sid: &str,
    from: &str,
    body: &str,
) -> Result<u16, String> {
    let params: Vec<(String, String)> = [
        ("MessageSid", sid),
        ("SmsSid", sid),
        ("SmsStatus", "received"),
        ("NumMedia", "0"),
        ("Body", body),
        ("To", "+15557122661"),
        ("AccountSid", "ACbench0000000000000000000000000000"),
        ("From", from),
        ("ApiVersion", "2010-04-01"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    let sig = twilio_signature(url, &params);
    let form = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(&params)
        .finish();
    let headers = [
        ("content-type", "application/x-www-form-urlencoded"),
        ("x-twilio-signature", sig.as_str()),
    ];
    conn.post_with(path, &headers, Bytes::from(form))
        .await
        .map(|(status, _)| status)
}

async fn m8(o: &Opts) -> Result<Report, String> {
    if o.target != Target::Gateway {
        return Err("m8 runs against the gateway only".into());
    }
    let r = command(
        &o.addr,
        &o.token,
        json!({"cmd": "CreateBot", "botID": SMS_BOT, "kind": "sms",
            "account_sid": "ACbench0000000000000000000000000000",
            "auth_token": SMS_AUTH_TOKEN, "from": "+15557122661"}),
    )
    .await?;
    if r["ok"] != 1 {
        return Err(format!("cannot create the SMS bot: {r}"));
    }
    let path = format!("/channels/sms/{SMS_BOT}");
    let base = o
        .public_base_url
        .clone()
        .unwrap_or_else(|| format!("http://{}", o.addr));
    let url = format!("{}{path}", base.trim_end_matches('/'));
    // Seed: closed conversations of 10 messages, then 1,000 open ones.
    let closed = o.conversations;
    let workers = 64.min(closed.max(1));
    let mut seeders = tokio::task::JoinSet::new();
    for w in 0..workers {
        let (addr, token, url, path) = (o.addr.clone(), o.token.clone(), url.clone(), path.clone());
        seeders.spawn(async move {
            let mut conn = HttpConn::open(&addr).await?;
            for i in (w..closed + 1000).step_by(workers) {
                // 415-2xx-xxxx: valid NANP numbers for every i below 8,000,000.
                let from = format!("+1415{}", 2_000_000 + i);
                let n = if i < closed { 10 } else { 1 };
                for k in 0..n {
                    let sid = format!("SM{i:016x}{k:016x}");
                    let status =
                        post_sms(&mut conn, &url, &path, &sid, &from, "Where is my order?").await?;
                    if status != 200 {
                        return Err(format!("seeding: HTTP {status}"));
                    }
                }
                if i < closed {
                    let body = json!({"token": token, "cmd": "CloseConversation",
                        "uid": format!("{SMS_BOT}-cms-1415{}", 2_000_000 + i)});
                    let (status, reply) = conn.post("/api", Bytes::from(body.to_string())).await?;
                    if status != 200 {
                        return Err(format!("closing: {}", String::from_utf8_lossy(&reply)));
                    }
                }
            }
            Ok::<_, String>(())
        });
    }
    while let Some(r) = seeders.join_next().await {
        r.map_err(|e| e.to_string())??;
    }
    // Measure: pages of GetConversationsFlat (following nextCursor, from the
    // start again at the end), and GetOpenConversations.
    let mut conn = HttpConn::open(&o.addr).await?;
    let (mut flat, mut open) = (histogram(), histogram());
    let (mut flat_bytes, mut open_bytes) = (0usize, 0usize);
    let (mut ops, mut errors) = (0u64, 0u64);
    let mut cursor: Option<String> = None;
    let warm_until = Instant::now() + Duration::from_secs_f64(o.warmup);
    let until = warm_until + Duration::from_secs_f64(o.duration);
    while Instant::now() < until {
        let mut body = json!({"token": o.token, "cmd": "GetConversationsFlat"});
        if let Some(c) = &cursor {
            body["cursor"] = json!(c);
        }
        let t0 = Instant::now();
        let (status, reply) = conn.post("/api", Bytes::from(body.to_string())).await?;
        let took = t0.elapsed();
        let v: Value = serde_json::from_slice(&reply).map_err(|e| e.to_string())?;
        let rows = v["data"].as_array().map_or(0, Vec::len);
        cursor = if rows == 0 {
            None
        } else {
            v["nextCursor"].as_str().map(str::to_string)
        };
        if t0 < warm_until {
            continue;
        }
        if status != 200 {
            errors += 1;
            continue;
        }
        if rows > 0 {
            ops += 1;
            let _ = flat.record(took.as_micros().max(1) as u64);
            flat_bytes = flat_bytes.max(reply.len());
        }
        let t1 = Instant::now();
        let body = json!({"token": o.token, "cmd": "GetOpenConversations"});
        let (status, reply) = conn.post("/api", Bytes::from(body.to_string())).await?;
        if status == 200 {
            let _ = open.record(t1.elapsed().as_micros().max(1) as u64);
            open_bytes = reply.len();
        } else {
            errors += 1;
        }
    }
    let totals = Totals {
        hist: flat,
        ops,
        errors,
        elapsed: Duration::from_secs_f64(o.duration),
        gen_cpu: None,
        server_cpu: None,
    };
    let mut extra = serde_json::Map::new();
    extra.insert("closed_conversations".into(), json!(closed));
    extra.insert("flat_page_bytes".into(), json!(flat_bytes));
    extra.insert("open_p50_us".into(), json!(open.value_at_quantile(0.5)));
    extra.insert("open_p99_us".into(), json!(open.value_at_quantile(0.99)));
    extra.insert("open_reply_bytes".into(), json!(open_bytes));
    Ok(totals.report(o, extra))
}

/// `SetUserNotes` from 64 connections until `n` events were made.
async fn make_events(o: &Opts, n: usize) -> Result<(), String> {
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..64usize {
        let (addr, token) = (o.addr.clone(), o.token.clone());
        tasks.spawn(async move {
            let mut conn = HttpConn::open(&addr).await?;
            for k in (w..n).step_by(64) {
                let body = json!({"token": token, "cmd": "SetUserNotes", "uid": UID, "notes": format!("note {k}")});
                let (status, reply) = conn.post("/api", Bytes::from(body.to_string())).await?;
                if status != 200 {
                    return Err(String::from_utf8_lossy(&reply).into_owned());
                }
            }
            Ok::<_, String>(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.map_err(|e| e.to_string())??;
    }
    Ok(())
}

async fn m9(o: &Opts) -> Result<Report, String> {
    if o.target != Target::Gateway {
        return Err("m9 runs against the gateway only".into());
    }
    prepare_gateway(o).await?;
    let url = format!("ws://{}/ws", o.addr);
    let text = |m: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>| -> Result<Value, String> {
        match m {
            Some(Ok(Message::Text(t))) => serde_json::from_str(&t).map_err(|e| e.to_string()),
            other => Err(format!("socket: {other:?}")),
        }
    };
    // Where the log stands, then the events the socket will miss.
    let (mut ws, _) = tokio_tungstenite::connect_async(&url)
        .await
        .map_err(|e| e.to_string())?;
    ws.send(Message::Text(
        json!({"cmd": "connect", "token": o.token})
            .to_string()
            .into(),
    ))
    .await
    .map_err(|e| e.to_string())?;
    let hello = text(ws.next().await)?;
    drop(ws);
    let epoch = hello["data"]["epoch"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let from = hello["data"]["seq"].as_u64().unwrap_or(0);
    make_events(o, o.events).await?;
    // The resume.
    let t0 = Instant::now();
    let (mut ws, _) = tokio_tungstenite::connect_async(&url)
        .await
        .map_err(|e| e.to_string())?;
    let connect =
        json!({"cmd": "connect", "token": o.token, "resume": {"epoch": epoch, "seq": from}});
    ws.send(Message::Text(connect.to_string().into()))
        .await
        .map_err(|e| e.to_string())?;
    let mut replayed = 0u64;
    let last = loop {
        let v = text(ws.next().await)?;
        match v["cmd"].as_str() {
            Some("resumed") if v["ok"] == 1 => break v["data"]["to"].as_u64().unwrap_or(from),
            Some("resumed") => return Err(format!("resume refused: {v}")),
            Some("connected") => {}
            _ => replayed += 1,
        }
    };
    let replay = t0.elapsed();
    drop(ws);
    // Long polls woken by one write, in rounds of 100 pollers.
    let mut wake = histogram();
    let mut after = last;
    let until = Instant::now() + Duration::from_secs_f64(o.duration);
    let mut rounds = 0;
    while rounds < 3 || Instant::now() < until {
        rounds += 1;
        let mut pollers = Vec::with_capacity(100);
        for _ in 0..100 {
            let mut conn = HttpConn::open(&o.addr).await?;
            let body = json!({"token": o.token, "cmd": "GetEvents", "after": after, "wait": 10});
            pollers.push(tokio::spawn(async move {
                let r = conn.post("/api", Bytes::from(body.to_string())).await;
                (r, Instant::now())
            }));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let body = json!({"token": o.token, "cmd": "SetUserNotes", "uid": UID, "notes": format!("wake {rounds}")});
        let mut conn = HttpConn::open(&o.addr).await?;
        conn.post("/api", Bytes::from(body.to_string())).await?;
        let acked = Instant::now();
        for p in pollers {
            let (r, at) = p.await.map_err(|e| e.to_string())?;
            let (status, reply) = r?;
            let v: Value = serde_json::from_slice(&reply).map_err(|e| e.to_string())?;
            if status != 200 || v["data"].as_array().is_none_or(Vec::is_empty) {
                return Err(format!("a long poll was not woken: {v}"));
            }
            let _ = wake.record(at.saturating_duration_since(acked).as_micros().max(1) as u64);
        }
        after += 1;
    }
    let totals = Totals {
        hist: wake,
        ops: replayed,
        errors: 0,
        elapsed: replay,
        gen_cpu: None,
        server_cpu: None,
    };
    let mut extra = serde_json::Map::new();
    extra.insert("replay_ms".into(), json!(replay.as_millis() as u64));
    extra.insert(
        "replay_events_per_s".into(),
        json!((replayed as f64 / replay.as_secs_f64()).round()),
    );
    extra.insert("wake_rounds".into(), json!(rounds));
    Ok(totals.report(o, extra))
}

/// A receiver that answers 200 once `gate` opens, counting deliveries.
struct Receiver {
    addr: std::net::SocketAddr,
    total: Arc<AtomicU64>,
    ids: Arc<Mutex<HashSet<String>>>,
    gate: Arc<tokio::sync::watch::Sender<bool>>,
}

async fn start_receiver(bind: &str) -> Result<Receiver, String> {
    let listener = TcpListener::bind(bind).await.map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let total = Arc::new(AtomicU64::new(0));
    let ids = Arc::new(Mutex::new(HashSet::new()));
    let (gate, _) = tokio::sync::watch::channel(false);
    let gate = Arc::new(gate);
    let (t, i, g) = (total.clone(), ids.clone(), gate.clone());
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (t, i, g) = (t.clone(), i.clone(), g.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let (t, i) = (t.clone(), i.clone());
                        let mut open = g.subscribe();
                        async move {
                            let id = req
                                .headers()
                                .get("webhook-id")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_string();
                            let _ = req.into_body().collect().await;
                            let _ = open.wait_for(|o| *o).await;
                            t.fetch_add(1, Ordering::Relaxed);
                            i.lock().unwrap().insert(id);
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                                Bytes::new(),
                            )))
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    Ok(Receiver {
        addr,
        total,
        ids,
        gate,
    })
}

async fn m6(o: &Opts) -> Result<Report, String> {
    if o.receiver_only {
        let rx = start_receiver(&o.addr).await?;
        rx.gate.send_replace(true);
        tokio::time::sleep(Duration::from_secs_f64(o.warmup)).await;
        let (n0, cpu) = (rx.total.load(Ordering::Relaxed), CpuMeter::start(None));
        tokio::time::sleep(Duration::from_secs_f64(o.duration)).await;
        let ops = rx.total.load(Ordering::Relaxed) - n0;
        let totals = Totals {
            hist: histogram(),
            ops,
            errors: 0,
            elapsed: Duration::from_secs_f64(o.duration),
            gen_cpu: cpu.stop().0,
            server_cpu: None,
        };
        let mut extra = serde_json::Map::new();
        extra.insert("receiver_only".into(), json!(true));
        return Ok(totals.report(o, extra));
    }
    let rx = start_receiver("127.0.0.1:0").await?;
    let n = o.events as u64;
    let body = Bytes::from(
        json!({"cmd":"onUserUpdate","ok":1,"data":{"user":{"uid":UID},"update":{"notes":"x"}},"seq":1,"eventId":"evt_0"})
            .to_string(),
    );
    let started;
    match o.target {
        Target::Gateway => {
            prepare_gateway(o).await?;
            let r = command(
                &o.addr,
                &o.token,
                json!({"cmd": "SetWebhook", "url": format!("http://{}/hook", rx.addr)}),
            )
            .await?;
            if r["ok"] != 1 {
                return Err(format!("SetWebhook refused (allow_private_webhooks?): {r}"));
            }
            // Produce the backlog while the receiver holds its answers.
            let per = n.div_ceil(o.connections as u64);
            let tasks: Vec<_> = (0..o.connections as u64)
                .map(|c| {
                    let (addr, token) = (o.addr.clone(), o.token.clone());
                    tokio::spawn(async move {
                        let mut conn = HttpConn::open(&addr).await?;
                        for k in 0..per {
                            let notes = format!("event {c}/{k}");
                            let body = json!({"token": token, "cmd": "SetUserNotes", "uid": UID, "notes": notes});
                            conn.post("/api", Bytes::from(body.to_string())).await?;
                        }
                        Ok::<_, String>(())
                    })
                })
                .collect();
            for t in tasks {
                t.await.map_err(|e| e.to_string())??;
            }
            started = Instant::now();
            rx.gate.send_replace(true);
            let want = per * o.connections as u64;
            let deadline = started + Duration::from_secs(120);
            while (rx.ids.lock().unwrap().len() as u64) < want && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        Target::Bare | Target::Floor => {
            rx.gate.send_replace(true);
            started = Instant::now();
            let client = reqwest::Client::new();
            let url = format!("http://{}/hook", rx.addr);
            let next = Arc::new(AtomicU64::new(0));
            let tasks: Vec<_> = (0..8)
                .map(|_| {
                    let (client, url, next, body) =
                        (client.clone(), url.clone(), next.clone(), body.clone());
                    tokio::spawn(async move {
                        loop {
                            let k = next.fetch_add(1, Ordering::Relaxed);
                            if k >= n {
                                break;
                            }
                            let _ = client
                                .post(&url)
                                .header("content-type", "application/json")
                                .header("webhook-id", format!("evt_{k}"))
                                .body(body.clone())
                                .send()
                                .await;
                        }
                    })
                })
                .collect();
            for t in tasks {
                let _ = t.await;
            }
        }
    }
    let elapsed = started.elapsed();
    let total = rx.total.load(Ordering::Relaxed);
    let distinct = rx.ids.lock().unwrap().len() as u64;
    let mut extra = serde_json::Map::new();
    extra.insert("received".into(), json!(total));
    extra.insert("distinct_ids".into(), json!(distinct));
    let totals = Totals {
        hist: histogram(),
        ops: distinct,
        errors: total.saturating_sub(distinct),
        elapsed,
        gen_cpu: None,
        server_cpu: None,
    };
    Ok(totals.report(o, extra))
}

/// Runs one scenario and returns its figures.
pub async fn run(o: &Opts) -> Result<Report, String> {
    if o.target == Target::Floor && !matches!(o.scenario, Scenario::M1 | Scenario::M2) {
        return Err("--target floor is for m1 and m2 only".into());
    }
    match o.scenario {
        Scenario::M1 => m1(o).await,
        Scenario::M2 => m2(o).await,
        Scenario::M3 => m3(o).await,
        Scenario::M4 => m4(o).await,
        Scenario::M5 => m5(o).await,
        Scenario::M6 => m6(o).await,
        Scenario::M7 => m7(o).await,
        Scenario::M8 => m8(o).await,
        Scenario::M9 => m9(o).await,
    }
}

#[allow(dead_code)]
// Pinned to one core by bench.sh: one thread, no work stealing.
#[tokio::main(flavor = "current_thread")]
async fn main() {
    let opts = Opts::parse();
    match run(&opts).await {
        Ok(report) => println!(
            "{}",
            serde_json::to_string(&report).expect("report serialises")
        ),
        Err(e) => {
            eprintln!("loadgen: {e}");
            std::process::exit(1);
        }
    }
}
