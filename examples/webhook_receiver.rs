//! A webhook receiver for convgate's deliveries: verifies the Standard
//! Webhooks signature (with the `standardwebhooks` crate, which also rejects
//! timestamps more than 5 minutes away), drops duplicates by `webhook-id`,
//! and prints each event once.
//!
//! ```sh
//! cargo run --example webhook_receiver -- 127.0.0.1:9000 whsec_…
//! # then, with an instance that allows private webhooks:
//! # {"cmd":"SetWebhook","url":"http://127.0.0.1:9000/convgate","secret":"whsec_…"}
//! ```
//! Answer fast: convgate counts anything but a 2xx within its timeout as a
//! failure and retries. A 410 tells convgate to stop (the webhook is disabled).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};

/// Remembers the last `cap` webhook-ids seen.
struct Seen {
    set: HashSet<String>,
    order: VecDeque<String>,
    cap: usize,
}

impl Seen {
    /// True when `id` is new (and remembers it).
    fn first_time(&mut self, id: &str) -> bool {
        if !self.set.insert(id.to_string()) {
            return false;
        }
        self.order.push_back(id.to_string());
        if self.order.len() > self.cap {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }
}

struct App {
    verifier: standardwebhooks::Webhook,
    seen: Mutex<Seen>,
}

async fn receive(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    if let Err(e) = app.verifier.verify(&body, &headers) {
        eprintln!("rejected: {e}");
        return StatusCode::UNAUTHORIZED;
    }
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !app.seen.lock().unwrap().first_time(id) {
        eprintln!("duplicate {id}, already handled");
        return StatusCode::OK;
    }
    println!("{}", String::from_utf8_lossy(&body));
    StatusCode::NO_CONTENT
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(addr), Some(secret)) = (args.next(), args.next()) else {
        eprintln!("usage: webhook_receiver <listen-addr> <whsec_secret>");
        std::process::exit(2);
    };
    let app = Arc::new(App {
        verifier: standardwebhooks::Webhook::new(&secret)?,
        seen: Mutex::new(Seen {
            set: HashSet::new(),
            order: VecDeque::new(),
            cap: 100_000,
        }),
    });
    let router = Router::new()
        .route("/convgate", post(receive))
        .with_state(app);
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!("listening on http://{}/convgate", listener.local_addr()?);
    axum::serve(listener, router).await?;
    Ok(())
}
