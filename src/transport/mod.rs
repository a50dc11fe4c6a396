//! The transports: everything that touches a socket. One port serves
//! them all, in TLS through rustls when a certificate is configured:
//!
//! - [`ws`]: `GET /ws`, the CRM's WebSocket session.
//! - [`http`]: `POST /api`, stateless commands.
//! - [`inbound`]: `GET`/`POST /channels/{kind}/{botID}`, providers' webhooks.
//! - [`health`]: `GET /healthz` and `GET /metrics`.
//! - [`console`]: `/console…`, the agent console's page, sign-in and socket.
//!
//! Transports only move bytes: commands go to [`crate::cmd::execute_now`],
//! provider webhooks to their channel and [`crate::messages`]. A connection
//! permit (`max_connections`) is taken before each accept and held for the
//! life of the connection, WebSocket sessions included. On shutdown the
//! loop stops accepting, HTTP connections finish their in-flight requests,
//! sockets are closed with 1001, and the store is flushed.

pub mod conn;
pub mod console;
pub mod health;
pub mod http;
pub mod inbound;
pub mod side;
pub mod socket;
pub mod ws;

use crate::ctx::Ctx;
use axum::routing::{get, post};
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_rustls::rustls;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// Shared state of the routes: the command context, the shutdown signal, and
/// the tracker that shutdown waits on.
#[derive(Clone)]
pub struct AppState {
    /// The command context, shared: axum clones the state for every
    /// request, so it is one reference count rather than a field-by-field copy.
    pub ctx: Arc<Ctx>,
    /// Cancelled when the server shuts down.
    pub shutdown: CancellationToken,
    /// Every connection and session; shutdown waits until it is empty.
    pub tracker: TaskTracker,
}

/// What a WebSocket upgrade takes from its connection: the peer address
/// (for the session's log span), the connection's permit, which the
/// session holds for as long as the socket lives, and how to take the
/// connection's stream back from hyper. Only requests that ask for an
/// upgrade carry it (a request extension costs an allocation).
#[derive(Clone)]
pub struct ConnInfo {
    /// The peer's address.
    pub peer: SocketAddr,
    /// The permit counted against `max_connections`.
    pub permit: ConnPermit,
    /// Takes the upgraded connection's stream back from hyper.
    pub take: socket::Take,
}

/// A connection's permit, shared with the WebSocket session it may become.
#[derive(Clone)]
pub struct ConnPermit(#[allow(dead_code)] Arc<conn::Slot>);

/// The TLS certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
#[error("tls: {0}")]
pub struct TlsError(String);

/// A TLS acceptor for the PEM certificate chain `cert` and key `key`
/// (rustls with ring, TLS 1.2 and 1.3, ALPN `http/1.1`).
pub fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<TlsAcceptor, TlsError> {
    use std::io::BufReader;
    let read = |p: &std::path::Path| {
        std::fs::File::open(p)
            .map(BufReader::new)
            .map_err(|e| TlsError(format!("{}: {e}", p.display())))
    };
    let certs = rustls_pemfile::certs(&mut read(cert)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError(format!("{}: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(TlsError(format!("{}: no certificate", cert.display())));
    }
    let key = rustls_pemfile::private_key(&mut read(key)?)
        .map_err(|e| TlsError(format!("{}: {e}", key.display())))?
        .ok_or_else(|| TlsError(format!("{}: no private key", key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError(e.to_string()))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(cfg)))
}

/// The router of every endpoint.
pub fn router(app: AppState) -> Router {
    Router::new()
        .route("/ws", get(ws::upgrade))
        .route("/api", post(http::api_routed))
        .route("/console", get(console::page))
        .route("/console/u/{link}", get(console::page))
        .route("/console/assets/{file}", get(console::asset))
        .route(
            "/console/session",
            get(console::whoami)
                .post(console::sign_in)
                .delete(console::sign_out),
        )
        .route("/console/links/{link}", get(console::link))
        .route("/console/ws", get(console::ws))
        .route("/healthz", get(health::healthz))
        .route("/metrics", get(health::metrics))
        .route(
            "/channels/{kind}/{bot_id}",
            get(inbound::handshake).post(inbound::notify),
        )
        .with_state(app)
}

/// Accepts connections until `app.shutdown` is cancelled, then drains every
/// connection and session and flushes the store.
/// Accepts connections until `app.shutdown` is cancelled (at most
/// `max_connections`, see [`conn`]), then drains every connection and
/// session and flushes the store.
pub async fn run(
    listener: TcpListener,
    app: AppState,
    tls: Option<TlsAcceptor>,
    max_connections: usize,
) -> Result<(), crate::store::StoreError> {
    let admission = conn::Admission::new(max_connections, app.ctx.config.max_connections_per_ip);
    let router = router(app.clone());
    let tls_timeout = crate::config::Config::secs(app.ctx.config.tls_handshake_timeout);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = app.shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // EMFILE and friends: back off rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let (slot, reserve) = match admission.admit(peer.ip()) {
            conn::Admitted::Full(slot) => (slot, false),
            conn::Admitted::Reserve(slot) => (slot, true),
            conn::Admitted::Refused => continue,
        };
        let _ = tcp.set_nodelay(true);
        let permit = ConnPermit(Arc::new(slot));
        let router = router.clone();
        let conn_app = app.clone();
        let tls = tls.clone();
        app.tracker.spawn(async move {
            let app = conn_app;
            match tls {
                None => serve_conn(tcp, peer, app, router, permit, reserve).await,
                Some(acceptor) => {
                    match tokio::time::timeout(tls_timeout, acceptor.accept(tcp)).await {
                        Ok(Ok(io)) => serve_conn(io, peer, app, router, permit, reserve).await,
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
    drop(listener);
    // Live sockets wait on their kick cell alone (one wait per frame rather
    // than two): shutdown reaches them through it.
    app.ctx.bus.kick_everyone(crate::bus::Kick::ShuttingDown);
    app.tracker.close();
    app.tracker.wait().await;
    app.ctx.store.flush().await?;
    tracing::info!("shut down");
    Ok(())
}

/// Serves one connection. `POST /api`, the hot path, goes straight to its
/// handler; everything else through `router`. The router's matching and
/// per-request layers cost about 5% of a POST `GetUser` (perf, scenario M1)
/// and add nothing to that route, which takes no path parameters. A
/// `reserve` connection (admitted at the cap) answers only `/healthz` and
/// `/metrics`. The connection's [`conn::Watch`] closes it when it
/// overstays a phase. HTTP/2 with prior knowledge or HTTP/1 is told from
/// the first bytes ([`socket::sniff`]): hyper's HTTP/1 connection then
/// serves over a stream whose type [`socket::take`] knows, so a WebSocket
/// gets its socket back without hyper's layers.
async fn serve_conn<I: socket::Accepted>(
    io: I,
    peer: SocketAddr,
    app: AppState,
    router: Router,
    permit: ConnPermit,
    reserve: bool,
) {
    use axum::http::Method;
    use futures_util::future::Either;
    use futures_util::FutureExt;
    let shutdown = app.shutdown.clone();
    let header = crate::config::Config::secs(app.ctx.config.header_read_timeout);
    let keepalive = crate::config::Config::secs(app.ctx.config.keepalive_timeout);
    let watch = conn::Watch::new(header, keepalive);
    let mut io = conn::Watched::new(io, watch.clone());
    let w = watch.clone();
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        w.busy();
        let upgrade = req.headers().contains_key(axum::http::header::UPGRADE);
        let inner = if reserve && !matches!(req.uri().path(), "/healthz" | "/metrics") {
            Either::Left(Either::Right(std::future::ready(Ok(
                at_capacity().map(Answer::Right)
            ))))
        } else if req.method() == Method::POST && req.uri().path() == "/api" {
            // The context alone (one reference count, not the whole state).
            // Boxed: hyper moves the service's future into place.
            let api = http::api(app.ctx.clone(), req, peer);
            Either::Left(Either::Left(Box::pin(api.map(|res| {
                Ok::<_, std::convert::Infallible>(res.map(Answer::Left))
            }))))
        } else {
            if upgrade {
                req.extensions_mut().insert(ConnInfo {
                    peer,
                    permit: permit.clone(),
                    take: socket::take::<I>,
                });
            } else {
                req.extensions_mut().insert(http::Peer(peer));
            }
            let routed = router.clone().oneshot(req);
            Either::Right(Box::pin(
                routed.map(|r| r.map(|res| res.map(Answer::Right))),
            ))
        };
        let w = w.clone();
        async move {
            let res = inner.await;
            if upgrade {
                w.handed_over();
            } else {
                w.idle();
            }
            res
        }
    });
    // The watchdog and the shutdown signal wait in a task of their own
    // (aborted with the connection): in this task's `select!` both would
    // be polled again on every wake-up of the connection, several per
    // request (callgrind: ~1.5k instructions per POST), where a join
    // handle's poll reads its task's state.
    let mut guard = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(async move {
        tokio::select! {
            what = watch.overstayed() => Stop::Overstayed(what),
            _ = shutdown.cancelled() => Stop::Shutdown,
        }
    }));
    let h2 = tokio::select! {
        biased;
        r = socket::sniff(&mut io) => match r {
            Ok(h2) => h2,
            Err(e) => return tracing::debug!(%peer, error = %e, "connection error"),
        },
        stop = &mut guard => return stopped(stop, peer),
    };
    let io = TokioIo::new(io);
    if h2 {
        let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(io, svc);
        drive(conn, |c| c.graceful_shutdown(), guard, peer).await
    } else {
        let conn = hyper::server::conn::http1::Builder::new()
            .serve_connection(io, svc)
            .with_upgrades();
        drive(conn, |c| c.graceful_shutdown(), guard, peer).await
    }
}

/// Why a connection's watchdog ended it.
enum Stop {
    Overstayed(&'static str),
    Shutdown,
}

/// Logs why a connection was closed before hyper served it.
fn stopped(stop: Result<Stop, tokio::task::JoinError>, peer: SocketAddr) {
    match stop {
        Ok(Stop::Overstayed(what)) => {
            tracing::debug!(%peer, what, "connection closed: it overstayed its phase");
        }
        Ok(Stop::Shutdown) => {}
        Err(e) => {
            tracing::error!(%peer, error = %e, "connection watchdog failed: connection closed")
        }
    }
}

/// Runs hyper's connection `conn` until it ends or its watchdog `guard`
/// stops it: closed at once when it overstayed a phase, `graceful` (its
/// in-flight requests finish) on shutdown.
async fn drive<C, E>(
    conn: C,
    graceful: impl FnOnce(std::pin::Pin<&mut C>),
    mut guard: tokio_util::task::AbortOnDropHandle<Stop>,
    peer: SocketAddr,
) where
    C: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    use std::future::Future;
    use std::task::Poll;
    tokio::pin!(conn);
    // The watchdog is polled only when it fired, not on every wake-up of
    // the connection (see [`side`]).
    let side = side::Side::new();
    let ended = std::future::poll_fn(|cx| {
        if let Some(mut side_cx) = side.woken(cx) {
            if let Poll::Ready(stop) = std::pin::Pin::new(&mut guard).poll(&mut side_cx) {
                return Poll::Ready(Err(stop));
            }
        }
        conn.as_mut().poll(cx).map(Ok)
    })
    .await;
    match ended {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "connection error"),
        Err(Ok(Stop::Shutdown)) => {
            graceful(conn.as_mut());
            let _ = conn.await;
        }
        Err(other) => stopped(other, peer),
    }
}

/// The body of an answer: `POST /api`'s JSON in one piece, or whatever
/// the router's handlers answer.
type Answer = http_body_util::Either<http_body_util::Full<bytes::Bytes>, axum::body::Body>;

/// The answer of a connection admitted at the cap to anything but health
/// and metrics.
fn at_capacity() -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        [
            (axum::http::header::CONNECTION, "close"),
            (axum::http::header::RETRY_AFTER, "1"),
        ],
        "at capacity: max_connections reached\n",
    )
        .into_response()
}
