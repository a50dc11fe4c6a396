//! Bare baseline for scenarios M2, M3 and M4: a tokio-tungstenite server with
//! the gateway's WebSocket settings (2 KiB read buffer, no write buffering,
//! 64 KiB message limit) that echoes every text frame. Idle sockets simply
//! stay open, which makes it the idle-server baseline too. A text frame
//! `fanout:<text>` sends `<text>` to every socket instead, through a tokio
//! broadcast channel as the gateway's event bus does (the fan-out baseline).
//! With a second argument `floor`, it answers each text frame as the
//! protocol's floor does instead (`common/floor.rs`; the socket counts as
//! authenticated, as after the gateway's `connect`).
//!
//! ```sh
//! cargo run --release --example bare_ws_echo -- 127.0.0.1:9002 [floor]
//! ```

use futures_util::{SinkExt, StreamExt};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

// Both bare echoes include the floor; the smoke test includes both echoes.
#[allow(clippy::duplicate_mod)]
#[path = "common/floor.rs"]
pub mod floor;

fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(2048)
        .write_buffer_size(0)
        .max_message_size(Some(64 * 1024))
        .max_frame_size(Some(64 * 1024))
}

/// Serves until the process ends.
pub async fn serve(listener: TcpListener) {
    serve_as(listener, None).await
}

/// [`serve`], answering text frames as `floor` when given.
pub async fn serve_as(listener: TcpListener, floor: Option<Arc<floor::Floor>>) {
    let (fanout, _) = broadcast::channel::<Message>(1024);
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let fanout = fanout.clone();
        let floor = floor.clone();
        tokio::spawn(async move {
            let Ok(mut ws) = tokio_tungstenite::accept_async_with_config(tcp, Some(config())).await
            else {
                return;
            };
            let mut events = fanout.subscribe();
            loop {
                let out = tokio::select! {
                    msg = ws.next() => match msg {
                        Some(Ok(Message::Text(t))) => match t.strip_prefix("fanout:") {
                            Some(text) => {
                                let _ = fanout.send(Message::text(text));
                                continue;
                            }
                            None => match &floor {
                                None => Message::Text(t),
                                Some(f) => Message::text(
                                    f.answer(t.as_bytes(), Some(1)).unwrap_or_else(|e| e),
                                ),
                            },
                        },
                        Some(Ok(_)) => continue,
                        _ => break,
                    },
                    event = events.recv() => match event {
                        Ok(msg) => msg,
                        Err(broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(broadcast::error::RecvError::Closed) => break,
                    },
                };
                if ws.send(out).await.is_err() {
                    break;
                }
            }
        });
    }
}

/// The gateway's allocator, so that the baseline differs from convgate only
/// by what convgate does (not compiled into the smoke test, which includes
/// this file as a module).
#[cfg(not(test))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[allow(dead_code)]
#[tokio::main]
async fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9002".into());
    let floor = (std::env::args().nth(2).as_deref() == Some("floor"))
        .then(|| Arc::new(floor::Floor::default()));
    let listener = TcpListener::bind(&addr).await.expect("bind");
    eprintln!("bare_ws_echo on {}", listener.local_addr().unwrap());
    serve_as(listener, floor).await;
}
