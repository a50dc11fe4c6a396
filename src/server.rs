//! The server: opens the store, bootstraps the first organization, binds the
//! listener, and runs the accept loop until shutdown.
//!
//! One port serves everything (`GET /ws`, `POST /api`, `GET /healthz`), in
//! TLS through rustls when a certificate is configured. A connection permit
//! (`max_connections`) is taken before each accept and held for the life of
//! the connection, WebSocket sessions included. On shutdown the loop stops
//! accepting, HTTP connections finish their in-flight requests, sockets are
//! closed with 1001, and the store is flushed.

use crate::bus::Bus;
use crate::config::Config;
use crate::store::{Store, StoreError};
use crate::webhook::Deliveries;
use crate::Ctx;
use axum::routing::{get, post};
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
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
/// (for the session's log span) and the connection's permit, which the
/// session holds for as long as the socket lives. Only requests that ask
/// for an upgrade carry it (a request extension costs an allocation).
#[derive(Clone)]
pub struct ConnInfo {
    /// The peer's address.
    pub peer: SocketAddr,
    /// The permit counted against `max_connections`.
    pub permit: ConnPermit,
}

/// A connection's permit, shared with the WebSocket session it may become.
#[derive(Clone)]
pub struct ConnPermit(#[allow(dead_code)] Arc<OwnedSemaphorePermit>);

/// Why the server could not start or stopped badly.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The store failed to open or flush.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Binding or another socket operation failed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// The TLS certificate or key could not be used.
    #[error("tls: {0}")]
    Tls(String),
    /// A setting could not be applied (`secrets_key`, `[[bots]]`).
    #[error("config: {0}")]
    Config(String),
}

/// A running gateway.
pub struct Gateway {
    /// The address actually bound (useful with port 0).
    pub addr: SocketAddr,
    /// The token of the `default` organization when this start created it.
    pub bootstrap_token: Option<String>,
    /// Whether TLS is on (`wss`/`https`).
    pub tls: bool,
    /// The command context (for inspection in tests and tools).
    pub ctx: Ctx,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), ServerError>>,
}

impl Gateway {
    /// The WebSocket URL, e.g. `ws://127.0.0.1:8080/ws`.
    pub fn ws_url(&self) -> String {
        format!("{}://{}/ws", if self.tls { "wss" } else { "ws" }, self.addr)
    }

    /// The POST URL, e.g. `http://127.0.0.1:8080/api`.
    pub fn api_url(&self) -> String {
        format!(
            "{}://{}/api",
            if self.tls { "https" } else { "http" },
            self.addr
        )
    }

    /// Asks the server to shut down gracefully.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Waits until the server has stopped and the store is flushed.
    pub async fn wait(self) -> Result<(), ServerError> {
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(ServerError::Io(std::io::Error::other(e))),
        }
    }
}

/// Opens the store under `config.data_dir`, bootstraps the `default`
/// organization on first start, binds `config.listen` and starts serving.
pub async fn start(config: Config) -> Result<Gateway, ServerError> {
    let config = Arc::new(config);
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Some(tls_acceptor(cert, key)?),
        _ => None,
    };
    let bus = Bus::new(config.socket_queue);
    let publisher = bus.clone();
    let store = Store::open(&config.data_dir, Arc::new(move |ev| publisher.publish(ev)))?;
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let deliveries = Deliveries::new(
        store.clone(),
        bus.clone(),
        config.clone(),
        shutdown.clone(),
        tracker.clone(),
    );
    let sealer = crate::secrets::Sealer::new(config.secrets_key.as_ref())
        .map_err(|e| ServerError::Config(e.to_string()))?;
    let callbacks = crate::callback::Callbacks::new(store.clone(), sealer.clone(), config.clone());
    let ctx = Ctx::new(store, bus, deliveries, callbacks, sealer, config.clone());
    let bootstrap_token = crate::bootstrap(&ctx).await?;
    crate::cmd::apply_config_bots(&ctx)
        .await
        .map_err(ServerError::Config)?;
    let listener = TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    ctx.deliveries.start_all()?;
    ctx.callbacks.start(shutdown.clone(), &tracker);
    crate::messages::spawn_maintenance(ctx.clone(), shutdown.clone(), &tracker);
    let app = AppState {
        ctx: Arc::new(ctx.clone()),
        shutdown: shutdown.clone(),
        tracker,
    };
    let is_tls = tls.is_some();
    let task = tokio::spawn(run(listener, app, tls));
    Ok(Gateway {
        addr,
        bootstrap_token,
        tls: is_tls,
        ctx,
        shutdown,
        task,
    })
}

fn tls_acceptor(cert: &std::path::Path, key: &std::path::Path) -> Result<TlsAcceptor, ServerError> {
    use std::io::BufReader;
    let read = |p: &std::path::Path| {
        std::fs::File::open(p)
            .map(BufReader::new)
            .map_err(|e| ServerError::Tls(format!("{}: {e}", p.display())))
    };
    let certs = rustls_pemfile::certs(&mut read(cert)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ServerError::Tls(format!("{}: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(ServerError::Tls(format!(
            "{}: no certificate",
            cert.display()
        )));
    }
    let key = rustls_pemfile::private_key(&mut read(key)?)
        .map_err(|e| ServerError::Tls(format!("{}: {e}", key.display())))?
        .ok_or_else(|| ServerError::Tls(format!("{}: no private key", key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ServerError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| ServerError::Tls(e.to_string()))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(cfg)))
}

/// The router of every endpoint.
pub fn router(app: AppState) -> Router {
    Router::new()
        .route("/ws", get(crate::ws::upgrade))
        .route("/api", post(crate::http::api))
        .route("/healthz", get(crate::http::healthz))
        .route("/metrics", get(crate::http::metrics))
        .route(
            "/channels/whatsapp/{bot_id}",
            get(crate::inbound::verify).post(crate::inbound::notify),
        )
        .with_state(app)
}

/// Accepts connections until `app.shutdown` is cancelled, then drains every
/// connection and session and flushes the store.
pub async fn run(
    listener: TcpListener,
    app: AppState,
    tls: Option<TlsAcceptor>,
) -> Result<(), ServerError> {
    let permits = Arc::new(Semaphore::new(app.ctx.config.max_connections));
    let router = router(app.clone());
    loop {
        let permit = tokio::select! {
            _ = app.shutdown.cancelled() => break,
            p = permits.clone().acquire_owned() => p.expect("semaphore never closed"),
        };
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
        let _ = tcp.set_nodelay(true);
        let permit = ConnPermit(Arc::new(permit));
        let router = router.clone();
        let conn_app = app.clone();
        let tls = tls.clone();
        app.tracker.spawn(async move {
            let app = conn_app;
            match tls {
                None => serve_conn(tcp, peer, app, router, permit).await,
                Some(acceptor) => {
                    match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
                    {
                        Ok(Ok(io)) => serve_conn(io, peer, app, router, permit).await,
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
/// and add nothing to that route, which takes no path parameters.
async fn serve_conn<I>(io: I, peer: SocketAddr, app: AppState, router: Router, permit: ConnPermit)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use axum::http::Method;
    use futures_util::future::Either;
    let shutdown = app.shutdown.clone();
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        if req.method() == Method::POST && req.uri().path() == "/api" {
            let app = app.clone();
            let req = req.map(axum::body::Body::new);
            return Either::Left(async move {
                Ok::<_, std::convert::Infallible>(
                    crate::http::api(axum::extract::State(app), req).await,
                )
            });
        }
        if req.headers().contains_key(axum::http::header::UPGRADE) {
            req.extensions_mut().insert(ConnInfo {
                peer,
                permit: permit.clone(),
            });
        }
        Either::Right(router.clone().oneshot(req))
    });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => if let Err(e) = r { tracing::debug!(%peer, error = %e, "connection error") },
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}
