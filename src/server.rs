//! Start-up: opens the store, bootstraps the first organization, applies
//! `[[bots]]`, starts the workers (webhook deliveries, callbacks,
//! maintenance), binds the listener and hands it to the transports
//! ([`crate::transport::run`]) until shutdown.

use crate::bus::Bus;
use crate::config::Config;
use crate::ctx::Ctx;
use crate::delivery::callbacks::Callbacks;
use crate::delivery::webhooks::Deliveries;
use crate::store::{Store, StoreError};
use crate::transport::{tls_acceptor, AppState, TlsError};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

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
    #[error(transparent)]
    Tls(#[from] TlsError),
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

    /// Waits until the server has stopped, the store is flushed and closed
    /// (a new start on the same data dir finds it unlocked; a checkpoint
    /// still running on a blocking thread is waited for, up to 10 s).
    pub async fn wait(self) -> Result<(), ServerError> {
        let Gateway { ctx, task, .. } = self;
        let closing = ctx.store.closing();
        drop(ctx);
        let result = match task.await {
            Ok(r) => r,
            Err(e) => Err(ServerError::Io(std::io::Error::other(e))),
        };
        if !closing.wait(std::time::Duration::from_secs(10)).await {
            tracing::warn!("the store was still in use 10 s after the server stopped");
        }
        result
    }
}

/// Runs the background workers (webhook deliveries, callbacks,
/// housekeeping, route timers) until `term` is cancelled.
fn start_workers(ctx: &Ctx, term: CancellationToken, tracker: &TaskTracker) {
    if let Err(e) = ctx.deliveries.start_all(term.clone()) {
        tracing::error!(error = %e, "starting the webhook workers failed");
    }
    ctx.callbacks.start(term.clone(), tracker);
    crate::maintenance::spawn(ctx.clone(), term.clone(), tracker);
    crate::cmd::route_run::spawn(ctx.clone(), term, tracker);
}

/// Opens the store under `config.data_dir`, bootstraps the `default`
/// organization on first start, binds `config.listen` and starts serving.
pub async fn start(config: Config) -> Result<Gateway, ServerError> {
    let config = Arc::new(config);
    // Everything that can fail on a bad setting or a taken port fails here,
    // before the store is touched (a first start must not create an
    // organization whose token nobody sees).
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Some(tls_acceptor(cert, key)?),
        _ => None,
    };
    let max_connections = crate::transport::conn::connection_budget(config.max_connections)
        .map_err(ServerError::Config)?;
    let listener = TcpListener::bind(config.listen).await?;
    // The monotonic clock calibrates at its first read: here, not on the
    // first connection.
    crate::time::mono_ms();
    let addr = listener.local_addr()?;
    let bus = Bus::new(config.socket_queue);
    let publisher = bus.clone();
    // Linked nodes: events reach this node's sockets through the link.
    let (on_durable, linked_events) = match &config.bus {
        Some(_) => {
            let (sink, rx) = crate::cluster::event_sink();
            (sink, Some(rx))
        }
        None => {
            let local: crate::store::OnDurable = Arc::new(move |ev| publisher.publish(ev));
            (local, None)
        }
    };
    let store = match &config.store {
        Some(url) => Store::open_postgres(url.expose(), config.store_pool, on_durable).await?,
        None => Store::open(&config.data_dir, on_durable).await?,
    };
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let deliveries = Deliveries::new(store.clone(), bus.clone(), config.clone(), tracker.clone());
    let sealer = crate::secrets::Sealer::new(config.secrets_key.as_ref())
        .map_err(|e| ServerError::Config(e.to_string()))?;
    let callbacks = Callbacks::new(store.clone(), bus.clone(), sealer.clone(), config.clone());
    let ctx = Ctx::new(
        store,
        bus,
        deliveries,
        callbacks,
        sealer,
        config.clone(),
        shutdown.clone(),
    )
    .with_tasks(tracker.clone());
    if let Some(base) = &config.public_base_url {
        let linked = ctx.store.set_console_base(base).await?;
        if linked > 0 {
            tracing::info!(users = linked, "console links given to users");
        }
    }
    let bootstrap_token = crate::bootstrap::bootstrap(&ctx).await?;
    crate::bootstrap::apply_config_bots(&ctx)
        .await
        .map_err(ServerError::Config)?;
    crate::cmd::set_route::apply_config(&ctx)
        .await
        .map_err(ServerError::Config)?;
    let node = crate::cluster::node_id();
    if let Some(events) = linked_events {
        crate::cluster::link(
            ctx.clone(),
            node.clone(),
            events,
            shutdown.clone(),
            &tracker,
        )
        .await
        .map_err(|e| ServerError::Config(e.to_string()))?;
    }
    if ctx.store.shared() {
        // Several nodes may share the store: the one holding the lease
        // runs the workers.
        let (workers_ctx, workers_tracker) = (ctx.clone(), tracker.clone());
        crate::cluster::lead(ctx.clone(), node, shutdown.clone(), &tracker, move |term| {
            start_workers(&workers_ctx, term, &workers_tracker)
        });
    } else {
        start_workers(&ctx, shutdown.child_token(), &tracker);
    }
    let app = AppState {
        ctx: Arc::new(ctx.clone()),
        shutdown: shutdown.clone(),
        tracker,
    };
    crate::bootstrap::told(&ctx).await?;
    let is_tls = tls.is_some();
    let task = tokio::spawn(async move {
        crate::transport::run(listener, app, tls, max_connections)
            .await
            .map_err(ServerError::from)
    });
    Ok(Gateway {
        addr,
        bootstrap_token,
        tls: is_tls,
        ctx,
        shutdown,
        task,
    })
}
