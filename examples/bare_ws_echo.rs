//! Bare baseline for scenarios M2 and M3: a tokio-tungstenite server with the
//! gateway's WebSocket settings (2 KiB read buffer, no write buffering,
//! 64 KiB message limit) that echoes every text frame. Idle sockets simply
//! stay open, which makes it the idle-server baseline too.
//!
//! ```sh
//! cargo run --release --example bare_ws_echo -- 127.0.0.1:9002
//! ```

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(2048)
        .write_buffer_size(0)
        .max_message_size(Some(64 * 1024))
        .max_frame_size(Some(64 * 1024))
}

/// Serves until the process ends.
pub async fn serve(listener: TcpListener) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        tokio::spawn(async move {
            let Ok(mut ws) = tokio_tungstenite::accept_async_with_config(tcp, Some(config())).await
            else {
                return;
            };
            while let Some(Ok(msg)) = ws.next().await {
                if let Message::Text(t) = msg {
                    if ws.send(Message::Text(t)).await.is_err() {
                        break;
                    }
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
    let listener = TcpListener::bind(&addr).await.expect("bind");
    eprintln!("bare_ws_echo on {}", listener.local_addr().unwrap());
    serve(listener).await;
}
