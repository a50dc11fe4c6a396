//! A CRM-style socket client: connects, heartbeats every 60 s, prints every
//! event, and reconnects with exponential backoff (1 s doubling to 60 s),
//! resuming where it left off so that no event is missed: it remembers the
//! log's `epoch` and the last `seq` it handled, and connects with
//! `"resume": {"epoch", "seq"}`. When the gateway cannot resume (4100: the
//! events are gone or the log is another), it says so: a real CRM re-reads
//! its users (`GetUsers`) there, then goes on live.
//!
//! Run against a local gateway:
//! ```sh
//! cargo run --example crm_socket -- ws://127.0.0.1:8080/ws <token>
//! ```
//! Close codes 1008 for a bad token or a reset token stop the client: retrying
//! would not help. Every other end of the socket reconnects.

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

const HEARTBEAT: Duration = Duration::from_secs(60);

/// How one connection ended.
enum End {
    /// Reconnect after a backoff.
    Retry(String),
    /// Stop: the token is not accepted.
    Fatal(String),
}

/// Where this client is in the organization's event log.
#[derive(Default)]
struct Position {
    epoch: Option<String>,
    seq: u64,
}

async fn run_once(url: &str, token: &str, pos: &mut Position) -> End {
    let (mut ws, _) = match tokio_tungstenite::connect_async(url).await {
        Ok(c) => c,
        Err(e) => return End::Retry(format!("connect failed: {e}")),
    };
    let mut connect = json!({"cmd": "connect", "token": token});
    if let Some(epoch) = &pos.epoch {
        connect["resume"] = json!({"epoch": epoch, "seq": pos.seq});
    }
    let connect = connect.to_string();
    if let Err(e) = ws.send(Message::Text(connect.into())).await {
        return End::Retry(format!("send failed: {e}"));
    }
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    heartbeat.tick().await;
    loop {
        tokio::select! {
            _ = heartbeat.tick() => {
                let hb = json!({"cmd": "heartbeat"}).to_string();
                if let Err(e) = ws.send(Message::Text(hb.into())).await {
                    return End::Retry(format!("heartbeat failed: {e}"));
                }
            }
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(text))) => {
                    let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                    match v["cmd"].as_str() {
                        Some("connected") => {
                            eprintln!("connected at {}", v["data"]);
                            if pos.epoch.is_none() {
                                pos.epoch = v["data"]["epoch"].as_str().map(str::to_string);
                                pos.seq = v["data"]["seq"].as_u64().unwrap_or(0);
                            }
                        }
                        Some("resumed") if v["ok"] == 1 => eprintln!("resumed: {}", v["data"]),
                        Some("resumed") => {
                            // The missed events are gone: re-read state here
                            // (GetUsers), then continue from where the log is.
                            eprintln!("cannot resume ({}): re-reading state", v["error"]);
                            pos.epoch = v["data"]["epoch"].as_str().map(str::to_string);
                            pos.seq = v["data"]["oldestSeq"].as_u64().unwrap_or(1).saturating_sub(1);
                        }
                        Some("heartbeat") => {}
                        Some(cmd) if v["ok"] == 0 => {
                            eprintln!("error on {cmd}: {} ({})", v["error"], v["errorCode"]);
                            if matches!(v["errorCode"].as_u64(), Some(1000 | 1001)) {
                                return End::Fatal("token refused".into());
                            }
                        }
                        _ => {
                            println!("{text}");
                            // Events carry their place in the log.
                            if let Some(seq) = v["seq"].as_u64() {
                                pos.seq = pos.seq.max(seq);
                            }
                        }
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    let (code, reason) = frame.map(|f| (u16::from(f.code), f.reason.to_string())).unwrap_or((1005, String::new()));
                    if code == 1008 && reason != "connection reused" {
                        return End::Fatal(format!("closed {code}: {reason}"));
                    }
                    return End::Retry(format!("closed {code}: {reason}"));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return End::Retry(format!("socket error: {e}")),
                None => return End::Retry("socket ended".into()),
            }
        }
    }
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(url), Some(token)) = (args.next(), args.next()) else {
        eprintln!("usage: crm_socket <ws-url> <token>");
        std::process::exit(2);
    };
    let mut backoff = Duration::from_secs(1);
    let mut pos = Position::default();
    loop {
        let started = tokio::time::Instant::now();
        match run_once(&url, &token, &mut pos).await {
            End::Fatal(why) => {
                eprintln!("giving up: {why}");
                std::process::exit(1);
            }
            End::Retry(why) => {
                // A connection that lived a while resets the backoff.
                if started.elapsed() > Duration::from_secs(120) {
                    backoff = Duration::from_secs(1);
                }
                eprintln!("{why}; reconnecting in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(60));
            }
        }
    }
}
