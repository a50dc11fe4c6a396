//! Delivery-status callbacks: when a send named a `webhookURL`, every ack
//! change of its message is POSTed there (reference, "Webhook Callbacks")
//! with the send's `webhookHeaders`.
//!
//! The callback is queued in the store's durable outbox in the same atomic
//! write as the ack change, so an ack that exists is called back at least
//! once, across crashes. One worker drains the outbox with at most
//! `webhook_concurrency` requests in flight, through the delivery engine
//! shared with organization webhooks ([`super::Attempt`], [`super::next`]:
//! the guarded client, `webhook_retry_schedule`, `Retry-After`); a callback
//! that exhausts the schedule is kept as a dead letter and logged.
//! Callbacks of one message may arrive out of order: receivers compare `ack`.

use super::{next, Attempt, Next};
use crate::config::Config;
use crate::model::CallbackJob;
use crate::net::guarded_client;
use crate::secrets::Sealer;
use crate::store::{Store, StoreError};
use crate::time::now_ms;
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Callbacks queued per pass of the worker.
const BATCH: usize = 64;

/// Handle to the callback worker (cheap `Clone`).
#[derive(Clone)]
pub struct Callbacks {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    bus: crate::bus::Bus,
    /// Whether this node runs the worker (with several nodes, one does).
    running: std::sync::atomic::AtomicBool,
    sealer: Sealer,
    config: Arc<Config>,
    client: reqwest::Client,
    notify: Notify,
    in_flight: Mutex<HashSet<Vec<u8>>>,
    delivered: AtomicU64,
    failed: AtomicU64,
}

impl Callbacks {
    /// The callback engine over `store`; call [`Callbacks::start`] to run it.
    pub fn new(
        store: Store,
        bus: crate::bus::Bus,
        sealer: Sealer,
        config: Arc<Config>,
    ) -> Callbacks {
        let client = guarded_client(&config, config.webhook_timeout);
        Callbacks {
            inner: Arc::new(Inner {
                store,
                bus,
                running: Default::default(),
                sealer,
                config,
                client,
                notify: Notify::new(),
                in_flight: Mutex::new(HashSet::new()),
                delivered: AtomicU64::new(0),
                failed: AtomicU64::new(0),
            }),
        }
    }

    /// Runs the worker on `tracker` until `shutdown`; it first sends what
    /// a previous run left queued.
    pub fn start(&self, shutdown: CancellationToken, tracker: &TaskTracker) {
        let inner = self.inner.clone();
        inner.running.store(true, Ordering::Release);
        tracker.spawn(async move {
            run(inner.clone(), shutdown).await;
            inner.running.store(false, Ordering::Release);
        });
    }

    /// Tells the worker that a callback was queued (on another node, when
    /// this one does not run it).
    pub fn wake(&self) {
        match self.inner.running.load(Ordering::Acquire) {
            true => self.inner.notify.notify_one(),
            false => self.inner.bus.relay(crate::bus::Remote::Wake {
                worker: crate::bus::Worker::Callbacks,
                org: String::new(),
            }),
        }
    }

    /// [`Callbacks::wake`] from another node: ignored unless this one
    /// runs the worker.
    pub fn wake_here(&self) {
        if self.inner.running.load(Ordering::Acquire) {
            self.inner.notify.notify_one();
        }
    }

    /// `(delivered, dead letters)` since start.
    pub fn counters(&self) -> (u64, u64) {
        (
            self.inner.delivered.load(Ordering::Relaxed),
            self.inner.failed.load(Ordering::Relaxed),
        )
    }
}

async fn run(inner: Arc<Inner>, shutdown: CancellationToken) {
    let permits = Arc::new(Semaphore::new(inner.config.webhook_concurrency));
    loop {
        let now = now_ms();
        match inner.store.due_callbacks(now, BATCH) {
            Ok(due) => {
                for (key, job) in due {
                    let fresh = inner
                        .in_flight
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(key.clone());
                    if !fresh {
                        continue;
                    }
                    let inner = inner.clone();
                    let permits = permits.clone();
                    tokio::spawn(async move {
                        let _permit = permits.acquire_owned().await;
                        if let Err(e) = attempt(&inner, &key, job).await {
                            tracing::error!(error = %e, "callback bookkeeping failed");
                        }
                        inner
                            .in_flight
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .remove(&key);
                        inner.notify.notify_one();
                    });
                }
            }
            Err(e) => tracing::error!(error = %e, "reading the callback outbox failed"),
        }
        let wait = match inner.store.next_callback_due() {
            Ok(Some(due)) if due > now => Duration::from_millis((due - now) as u64),
            _ => Duration::from_secs(1),
        }
        .min(Duration::from_secs(1));
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = inner.notify.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// One POST of `job`; records the outcome durably.
async fn attempt(inner: &Inner, key: &[u8], mut job: CallbackJob) -> Result<(), StoreError> {
    let headers: Vec<(String, String)> = inner
        .sealer
        .open(&job.headers.0)
        .ok()
        .and_then(|h| serde_json::from_str(h.expose()).ok())
        .unwrap_or_default();
    let mut req = inner
        .client
        .post(&job.url)
        .header("content-type", "application/json");
    for (name, value) in &headers {
        req = req.header(name.as_str(), value.as_str());
    }
    let outcome = Attempt::post(req.body(job.body.clone())).await;
    job.attempts += 1;
    job.last_error = outcome.failure();
    match next(
        &inner.config.webhook_retry_schedule,
        job.attempts,
        &outcome,
        now_ms(),
    ) {
        Next::Delivered => {
            inner.delivered.fetch_add(1, Ordering::Relaxed);
            inner.store.settle_callback(key, &job, None, false)
        }
        Next::Dead => {
            inner.failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(mid = %job.mid, attempts = job.attempts, error = ?job.last_error,
                "delivery callback failed for good (dead letter)");
            inner.store.settle_callback(key, &job, None, true)
        }
        Next::RetryAt(t) => inner.store.settle_callback(key, &job, Some(t), false),
    }
}
