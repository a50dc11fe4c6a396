//! Bare baseline for scenario M1: a hyper server, built like the gateway
//! (hyper-util's auto builder on tokio, TCP_NODELAY), that answers every
//! request with a small fixed JSON body the size of a `GetUser` reply.
//! With a second argument `floor`, it answers each request as the
//! protocol's floor does instead (`common/floor.rs`: the envelope read, the
//! token and the user looked up, the reply written).
//!
//! ```sh
//! cargo run --release --example bare_http_echo -- 127.0.0.1:9001 [floor]
//! ```

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::sync::Arc;
use tokio::net::TcpListener;

// Both bare echoes include the floor; the smoke test includes both echoes.
#[allow(clippy::duplicate_mod)]
#[path = "common/floor.rs"]
pub mod floor;

/// A reply shaped like a `GetUser` reply (about 300 bytes).
pub const BODY: &str = r#"{"cmd":"GetUser","ok":1,"data":{"uid":"3941-wa3-447922029419","name":"Billy Bob","first_name":"Billy","last_name":"Bob","email":"","phone":"+447922029419","bot":"WA3","botID":3941,"lang":"en","created":"2026-11-22T01:14:04.233Z","notes":"","url":""}}"#;

async fn answer(req: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    // Read the request body, as the gateway must.
    let _ = req.into_body().collect().await;
    Ok(Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(BODY.as_bytes())))
        .expect("static response"))
}

/// [`answer`] as the protocol's floor: the body read and answered by
/// [`floor::Floor`] (400 for an error reply).
async fn answer_floor(
    floor: Arc<floor::Floor>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let (status, reply) = match floor.answer(&body, None) {
        Ok(reply) => (200, reply),
        Err(reply) => (400, reply),
    };
    Ok(Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(reply)))
        .expect("response"))
}

/// Serves until the process ends.
pub async fn serve(listener: TcpListener) {
    serve_as(listener, None).await
}

/// [`serve`], answering as `floor` when given.
pub async fn serve_as(listener: TcpListener, floor: Option<Arc<floor::Floor>>) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let floor = floor.clone();
        tokio::spawn(async move {
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let io = TokioIo::new(tcp);
            let _ = match floor {
                None => {
                    builder
                        .serve_connection(io, hyper::service::service_fn(answer))
                        .await
                }
                Some(floor) => {
                    let service =
                        hyper::service::service_fn(move |req| answer_floor(floor.clone(), req));
                    builder.serve_connection(io, service).await
                }
            };
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
        .unwrap_or_else(|| "127.0.0.1:9001".into());
    let floor = (std::env::args().nth(2).as_deref() == Some("floor"))
        .then(|| Arc::new(floor::Floor::default()));
    let listener = TcpListener::bind(&addr).await.expect("bind");
    eprintln!("bare_http_echo on {}", listener.local_addr().unwrap());
    serve_as(listener, floor).await;
}
