//! A CRM-style socket client: connects, heartbeats every 60 s, prints every
//! event, and reconnects with exponential backoff (1 s doubling to 60 s).
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

async fn run_once(url: &str, token: &str) -> End {
    let (mut ws, _) = match tokio_tungstenite::connect_async(url).await {
        Ok(c) => c,
        Err(e) => return End::Retry(format!("connect failed: {e}")),
    };
    let connect = json!({"cmd": "connect", "token": token}).to_string();
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
                        Some("connected") => eprintln!("connected"),
                        Some("heartbeat") => {}
                        Some(cmd) if v["ok"] == 0 => {
                            eprintln!("error on {cmd}: {} ({})", v["error"], v["errorCode"]);
                            if matches!(v["errorCode"].as_u64(), Some(1000 | 1001)) {
                                return End::Fatal("token refused".into());
                            }
                        }
                        _ => println!("{text}"),
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
    loop {
        let started = tokio::time::Instant::now();
        match run_once(&url, &token).await {
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
