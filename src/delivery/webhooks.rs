//! Durable, signed webhook delivery: every event of an organization is POSTed
//! to its webhook, at least once, signed per the Standard Webhooks
//! specification (`webhook-id`, `webhook-timestamp`, `webhook-signature`).
//!
//! One worker task per organization reads the event log after its delivery
//! cursor as the queue has room for due attempts, queues a delivery record
//! per event, and attempts them with at most `webhook_concurrency` requests
//! in flight over a shared, pooled client.
//!
//! # Order policy
//! First attempts start in `seq` order. A failed delivery leaves that stream
//! at once and is retried on its own schedule, so it never holds back the
//! events behind it; receivers that need order sort by `seq`. Blocking the
//! stream behind one failing event would stall every later event of the
//! organization for up to the whole schedule (about 38 hours by default).
//!
//! # Invariants
//! - An event is in the log (durable) before its command is acknowledged; the
//!   cursor and the delivery records move together, so a crash at any moment
//!   repeats deliveries at worst, with the same `webhook-id`, and never skips one.
//! - Deliveries go through the guarded client ([`crate::net`]) and the shared
//!   attempt rules ([`super::next`]).
//! - A slow endpoint only occupies its own organization's worker.

use super::{next, Attempt, Next};
use crate::bus::{Bus, Remote};
use crate::config::{Config, Secret};
use crate::model::{Delivery, DeliveryStatus, SigningSecret, Webhook};
use crate::net::{check_url, guarded_client};
use crate::store::{Store, StoreError};
use crate::time::{iso_of_ms, now_ms};
use base64::Engine;
use bytes::Bytes;
use rand::RngCore;
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A new signing secret: `whsec_` + base64 of 32 random bytes.
pub fn new_secret() -> Secret {
    let mut key = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut key);
    Secret::new(format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(key)
    ))
}

/// The key bytes of a `whsec_` + base64 secret.
fn secret_key(s: &str) -> Result<Vec<u8>, String> {
    let b64 = s
        .strip_prefix("whsec_")
        .ok_or("secret must start with whsec_")?;
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| "secret must be whsec_ + base64".into())
}

/// Checks a given secret: `whsec_` + base64 of at least 24 bytes.
pub fn check_secret(s: &str) -> Result<(), String> {
    let key = secret_key(s)?;
    if key.len() < 24 {
        return Err("secret must hold at least 24 bytes".into());
    }
    Ok(())
}

/// Counters for `GET /metrics`, since the process started.
#[derive(Default)]
pub struct Counters {
    /// Deliveries acknowledged with a 2xx.
    pub delivered: AtomicU64,
    /// Deliveries that became dead letters.
    pub failed: AtomicU64,
    /// HTTP attempts made.
    pub attempts: AtomicU64,
}

/// Handle to the delivery workers (cheap `Clone`).
#[derive(Clone)]
pub struct Deliveries {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    config: Arc<Config>,
    bus: Bus,
    client: reqwest::Client,
    workers: Mutex<HashMap<String, Arc<Shared>>>,
    /// While this node runs the workers (with several nodes: while it
    /// holds the workers' lease), the token that ends them.
    term: Mutex<Option<CancellationToken>>,
    tracker: TaskTracker,
    counters: Counters,
}

/// What a worker shares with commands: its wake-up, the records changed
/// since its last checkpoint (so `GetDeliveries` is never stale), and the
/// deliveries `RedeliverEvents` asked for.
#[derive(Default)]
struct Shared {
    notify: Notify,
    dirty: Mutex<HashMap<u64, Delivery>>,
    requeue: Mutex<Vec<u64>>,
    /// Pending deliveries (queued or in flight), for `/metrics`.
    pending: AtomicU64,
    /// When the oldest pending delivery was queued (Unix ms; 0: none).
    oldest_queued_ms: std::sync::atomic::AtomicI64,
}

/// How often a worker writes its progress (records, queue, cursor) to the
/// store. A crash forgets at most this much progress, which only repeats
/// deliveries.
const CHECKPOINT: Duration = Duration::from_millis(100);

/// At most this many deliveries of one organization are queued in memory;
/// later events wait in the (durable) log until there is room.
const MAX_QUEUED: usize = 10_000;

/// New events are taken from the log while fewer than this many queued
/// deliveries are due (per `webhook_concurrency` slot). A healthy receiver
/// then takes each event from queue to delivered within one checkpoint, so
/// only its final record is written: taking 10,000 at once wrote every
/// record twice and each queue entry twice, a third of a delivery's cost
/// (perf, scenario M6). Deliveries waiting on a retry are not due and do not
/// count: during an outage the queue still fills to `MAX_QUEUED`.
const READY_PER_SLOT: usize = 8;

/// HMAC-SHA256, keyed once per secret (Standard Webhooks, "Signature scheme").
type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// A webhook ready to sign with: its parsed URL (or why this instance may
/// not send to it), and a MAC keyed with each secret. Built once per
/// (re)load, not per attempt: parsing the URL and keying the MAC each time
/// cost more than the POST itself.
struct Signer {
    target: Result<reqwest::Url, String>,
    keys: Vec<(HmacSha256, Option<i64>)>,
    /// The opt-in events the webhook asked for.
    events: Vec<String>,
}

impl Signer {
    fn new(hook: Webhook, allow_private: bool) -> Signer {
        use hmac::Mac;
        // The URL was checked when it was set; checked again here because
        // `allow_private_webhooks` may have changed since.
        let target = check_url(&hook.url, allow_private);
        let keys = hook
            .secrets
            .iter()
            .filter_map(|s| {
                let key = secret_key(s.secret.expose()).ok()?;
                Some((HmacSha256::new_from_slice(&key).ok()?, s.expires_ms))
            })
            .collect();
        Signer {
            target,
            keys,
            events: hook.events.clone(),
        }
    }

    /// The `webhook-signature` header: `v1,<base64 HMAC-SHA256 of
    /// "id.timestamp.body">` for each secret still active at `now_ms`,
    /// space-separated (Standard Webhooks, "Signature scheme").
    fn signature(&self, id: &str, ts: &str, body: &[u8], now_ms: i64) -> String {
        use base64::Engine;
        use hmac::Mac;
        let mut out = String::with_capacity(48 * self.keys.len());
        for (key, expires) in &self.keys {
            if expires.is_none_or(|t| t > now_ms) {
                let mut mac = key.clone();
                for part in [id.as_bytes(), b".", ts.as_bytes(), b".", body] {
                    mac.update(part);
                }
                if !out.is_empty() {
                    out.push(' ');
                }
                out.push_str("v1,");
                base64::engine::general_purpose::STANDARD
                    .encode_string(mac.finalize().into_bytes(), &mut out);
            }
        }
        out
    }
}

/// A worker's state: the queue of attempts, what is in flight, and what
/// changed since the last checkpoint.
struct Worker {
    org: String,
    shared: Arc<Shared>,
    signer: Option<Arc<Signer>>,
    active: bool,
    cursor: u64,
    /// `(due_ms, seq)` of every pending attempt, earliest first.
    queue: std::collections::BTreeSet<(i64, u64)>,
    /// The queue as last checkpointed.
    saved: std::collections::BTreeSet<(i64, u64)>,
    busy: HashSet<u64>,
    /// The current record of each delivery in `queue` or in flight, so that
    /// recording an outcome need not read it back from the store. Bounded
    /// like the queue (`MAX_QUEUED`); filled as events are queued, or read
    /// from the store once after a restart.
    records: HashMap<u64, Delivery>,
    cursor_dirty: bool,
}

type Attempts = JoinSet<(u64, i64, Attempt)>;

impl Deliveries {
    /// The delivery engine; workers run on `tracker` from
    /// [`Deliveries::start_all`].
    pub fn new(store: Store, bus: Bus, config: Arc<Config>, tracker: TaskTracker) -> Deliveries {
        let client = guarded_client(&config, config.webhook_timeout);
        Deliveries {
            inner: Arc::new(Inner {
                store,
                config,
                bus,
                client,
                workers: Mutex::new(HashMap::new()),
                term: Mutex::new(None),
                tracker,
                counters: Counters::default(),
            }),
        }
    }

    /// Runs the workers of every organization that has a webhook (and of
    /// those that get one) until `term` is cancelled: at shutdown, or when
    /// another node takes the workers' lease. Each resumes from its last
    /// checkpoint.
    pub fn start_all(&self, term: CancellationToken) -> Result<(), StoreError> {
        self.inner
            .workers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        *self.inner.term.lock().unwrap_or_else(|p| p.into_inner()) = Some(term);
        for org in self.inner.store.orgs_with_webhooks()? {
            self.wake(&org);
        }
        Ok(())
    }

    /// Whether this node runs the workers now.
    pub fn running(&self) -> bool {
        self.term().is_some()
    }

    /// The token of the running term, if this node runs the workers.
    fn term(&self) -> Option<CancellationToken> {
        self.inner
            .term
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .filter(|t| !t.is_cancelled())
    }

    /// Wakes the worker of `org`, starting it if needed (after `SetWebhook`,
    /// `RotateWebhookSecret`, `DeleteWebhook`, `RedeliverEvents`, `EnableApi`):
    /// it reloads the webhook and the organization. On a node that does
    /// not run the workers, the node that does is told.
    pub fn wake(&self, org: &str) {
        match self.term() {
            Some(term) => self.shared(org, term).notify.notify_one(),
            None => self.inner.bus.relay(Remote::Wake {
                worker: crate::bus::Worker::Webhooks,
                org: org.to_string(),
            }),
        }
    }

    /// [`Deliveries::wake`] from another node: ignored unless this one
    /// runs the workers.
    pub fn wake_here(&self, org: &str) {
        if let Some(term) = self.term() {
            self.shared(org, term).notify.notify_one();
        }
    }

    /// [`Deliveries::redeliver`] from another node: ignored unless this
    /// one runs the workers.
    pub fn redeliver_here(&self, org: &str, seqs: Vec<u64>) {
        if self.term().is_some() {
            self.redeliver(org, seqs);
        }
    }

    fn shared(&self, org: &str, term: CancellationToken) -> Arc<Shared> {
        let mut workers = self.inner.workers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = workers.get(org) {
            return s.clone();
        }
        let shared = Arc::new(Shared::default());
        workers.insert(org.to_string(), shared.clone());
        let me = self.clone();
        let worker_shared = shared.clone();
        let org = org.to_string();
        self.inner.tracker.spawn(async move {
            let span = tracing::info_span!("webhook", %org);
            let run = me.run(org, worker_shared, term);
            tracing::Instrument::instrument(run, span).await;
        });
        shared
    }

    /// The deliveries of `org` changed since its worker's last checkpoint.
    pub fn unsaved(&self, org: &str) -> Vec<Delivery> {
        let workers = self.inner.workers.lock().unwrap_or_else(|p| p.into_inner());
        workers.get(org).map_or_else(Vec::new, |s| {
            s.dirty
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .values()
                .cloned()
                .collect()
        })
    }

    /// The delivery of `seq` of `org` as it stands now (unsaved or stored).
    pub fn delivery(&self, org: &str, seq: u64) -> Result<Option<Delivery>, StoreError> {
        let shared = self
            .inner
            .workers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(org)
            .cloned();
        if let Some(d) = shared.and_then(|s| {
            s.dirty
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&seq)
                .cloned()
        }) {
            return Ok(Some(d));
        }
        self.inner.store.delivery(org, seq)
    }

    /// Queues the deliveries of `seqs` again (`RedeliverEvents`), on the
    /// node that runs the workers.
    pub fn redeliver(&self, org: &str, seqs: Vec<u64>) {
        let Some(term) = self.term() else {
            return self.inner.bus.relay(Remote::Redeliver {
                org: org.to_string(),
                seqs,
            });
        };
        let shared = self.shared(org, term);
        shared
            .requeue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(seqs);
        shared.notify.notify_one();
    }

    /// The counters since start.
    pub fn counters(&self) -> &Counters {
        &self.inner.counters
    }

    /// Pending deliveries of every organization, and when the oldest of them
    /// was queued (Unix ms).
    pub fn pending(&self) -> (u64, Option<i64>) {
        let workers = self.inner.workers.lock().unwrap_or_else(|p| p.into_inner());
        let mut count = 0;
        let mut oldest: Option<i64> = None;
        for s in workers.values() {
            count += s.pending.load(Ordering::Relaxed);
            let t = s.oldest_queued_ms.load(Ordering::Relaxed);
            if t > 0 {
                oldest = Some(oldest.map_or(t, |o| o.min(t)));
            }
        }
        (count, oldest)
    }

    /// Publishes the worker's queue length for `/metrics`, and the age of
    /// its oldest entry when `oldest` (a scan of the queue and a read: done
    /// on each checkpoint tick, not after every attempt, which made a large
    /// backlog quadratic) or when the queue is empty.
    fn publish_pending(&self, w: &Worker, oldest: bool) {
        w.shared
            .pending
            .store(w.queue.len() as u64, Ordering::Relaxed);
        if !oldest && !w.queue.is_empty() {
            return;
        }
        let oldest_seq = w.queue.iter().map(|&(_, seq)| seq).min();
        let oldest = oldest_seq
            .and_then(|seq| self.delivery(&w.org, seq).ok().flatten())
            .map_or(0, |d| d.queued_ms);
        w.shared.oldest_queued_ms.store(oldest, Ordering::Relaxed);
    }

    async fn run(self, org: String, shared: Arc<Shared>, term: CancellationToken) {
        let inner = &self.inner;
        let mut w = match self.load(org, shared) {
            Ok(w) => w,
            Err(e) => {
                tracing::error!(error = %e, "cannot start the delivery worker");
                return;
            }
        };
        let mut wakeups = inner.bus.subscribe(&w.org);
        let mut attempts: Attempts = JoinSet::new();
        let mut checkpoint = tokio::time::interval(CHECKPOINT);
        checkpoint.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let next_wake = match self.step(&mut w, &mut attempts) {
                Ok(t) => t,
                Err(e) => {
                    tracing::error!(error = %e, "delivery step failed");
                    Some(now_ms() + 1000)
                }
            };
            self.publish_pending(&w, false);
            let sleep_for = next_wake.map(|t| Duration::from_millis((t - now_ms()).max(0) as u64));
            tokio::select! {
                _ = term.cancelled() => {
                    attempts.abort_all();
                    if let Err(e) = self.checkpoint(&mut w) {
                        tracing::error!(error = %e, "final delivery checkpoint failed");
                    }
                    return;
                }
                Some(done) = attempts.join_next(), if !attempts.is_empty() => {
                    let mut results = vec![done];
                    while let Some(more) = attempts.try_join_next() {
                        results.push(more);
                    }
                    for (seq, due, outcome) in results.into_iter().flatten() {
                        w.busy.remove(&seq);
                        if let Err(e) = self.record(&mut w, seq, due, outcome).await {
                            tracing::error!(error = %e, seq, "recording a delivery failed");
                        }
                    }
                }
                _ = w.shared.notify.notified() => self.reload(&mut w),
                r = wakeups.recv() => {
                    if let Err(tokio::sync::broadcast::error::RecvError::Closed) = r {
                        wakeups = inner.bus.subscribe(&w.org);
                    }
                }
                _ = checkpoint.tick() => {
                    if let Err(e) = self.checkpoint(&mut w) {
                        tracing::error!(error = %e, "delivery checkpoint failed");
                    }
                    self.publish_pending(&w, true);
                }
                _ = tokio::time::sleep(sleep_for.unwrap_or(Duration::from_secs(3600))), if sleep_for.is_some() => {}
            }
        }
    }

    /// A worker from the last checkpoint: its cursor and pending attempts.
    fn load(&self, org: String, shared: Arc<Shared>) -> Result<Worker, StoreError> {
        let store = &self.inner.store;
        let queue: std::collections::BTreeSet<(i64, u64)> = store
            .pending_deliveries(&org)?
            .into_iter()
            .map(|(due, seq, _)| (due, seq))
            .collect();
        let mut w = Worker {
            cursor: store.delivery_cursor(&org)?,
            org,
            shared,
            signer: None,
            active: false,
            saved: queue.clone(),
            queue,
            busy: HashSet::new(),
            records: HashMap::new(),
            cursor_dirty: false,
        };
        self.reload(&mut w);
        Ok(w)
    }

    /// Reloads the webhook and whether deliveries are on, and takes the
    /// deliveries asked for again.
    fn reload(&self, w: &mut Worker) {
        let store = &self.inner.store;
        let hook = store.webhook(&w.org).ok().flatten();
        let org_enabled = store
            .org(crate::model::live_id(&w.org))
            .ok()
            .flatten()
            .is_some_and(|o| !o.disabled);
        w.active = org_enabled && hook.as_ref().is_some_and(|h| h.enabled);
        let allow_private = self.inner.config.allow_private_webhooks;
        w.signer = hook.map(|h| Arc::new(Signer::new(h, allow_private)));
        let requeue: Vec<u64> =
            std::mem::take(&mut *w.shared.requeue.lock().unwrap_or_else(|p| p.into_inner()));
        let now = now_ms();
        for seq in requeue {
            if let Ok(Some(mut d)) = self.delivery(&w.org, seq) {
                if d.status != DeliveryStatus::Pending {
                    d.status = DeliveryStatus::Pending;
                    d.attempts = 0;
                    d.next_attempt = Some(iso_of_ms(now));
                    w.queue.insert((now, seq));
                    w.records.insert(seq, d.clone());
                    self.set_dirty(w, d);
                }
            }
        }
    }

    fn set_dirty(&self, w: &Worker, d: Delivery) {
        w.shared
            .dirty
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(d.seq, d);
    }

    /// Queues new events and starts due attempts; returns when the next
    /// attempt falls due.
    fn step(&self, w: &mut Worker, attempts: &mut Attempts) -> Result<Option<i64>, StoreError> {
        let inner = &self.inner;
        let Some(signer) = w.signer.clone().filter(|_| w.active) else {
            return Ok(None);
        };
        let window = READY_PER_SLOT * inner.config.webhook_concurrency.max(1);
        let ready = w.queue.range(..(now_ms() + 1, 0)).take(window).count();
        let room = MAX_QUEUED.saturating_sub(w.queue.len()).min(window - ready);
        // Read in batches of at least half the window: a range read per
        // finished attempt cost more than the reads themselves.
        if room >= window.div_ceil(2) && inner.store.last_seq(&w.org)? > w.cursor {
            let events = inner.store.events_after(&w.org, w.cursor, room.min(1024))?;
            let now = now_ms();
            let next_attempt = Some(iso_of_ms(now));
            for e in &events {
                // Opt-in extension events go only to webhooks that asked.
                if !crate::events::wanted(&e.json, &signer.events) {
                    continue;
                }
                w.queue.insert((now, e.seq));
                let d = Delivery {
                    event_id: event_id_of(&e.json),
                    seq: e.seq,
                    status: DeliveryStatus::Pending,
                    attempts: 0,
                    last_status: None,
                    last_error: None,
                    next_attempt: next_attempt.clone(),
                    queued_ms: now,
                };
                w.records.insert(e.seq, d.clone());
                self.set_dirty(w, d);
            }
            if let Some(last) = events.last() {
                w.cursor = last.seq;
                w.cursor_dirty = true;
            }
        }
        let now = now_ms();
        let limit = inner.config.webhook_concurrency;
        let mut next_wake = None;
        let mut start = Vec::new();
        for &(due, seq) in &w.queue {
            if attempts.len() + start.len() >= limit {
                break;
            }
            if w.busy.contains(&seq) {
                continue;
            }
            if due > now {
                next_wake = Some(due);
                break;
            }
            start.push((due, seq));
        }
        for (due, seq) in start {
            let Some(body) = inner.store.event(&w.org, seq)? else {
                w.queue.remove(&(due, seq));
                w.records.remove(&seq);
                continue;
            };
            w.busy.insert(seq);
            let event_id = match w.records.get(&seq) {
                Some(d) => d.event_id.clone(),
                None => event_id_of(&body),
            };
            let attempt = self.attempt(signer.clone(), event_id, body);
            attempts.spawn(async move { (seq, due, attempt.await) });
        }
        Ok(next_wake)
    }

    /// One signed POST of `body` to the webhook.
    fn attempt(
        &self,
        signer: Arc<Signer>,
        event_id: String,
        body: Bytes,
    ) -> impl std::future::Future<Output = Attempt> {
        let inner = self.inner.clone();
        async move {
            inner.counters.attempts.fetch_add(1, Ordering::Relaxed);
            let url = match &signer.target {
                Ok(url) => url.clone(),
                Err(e) => return Attempt::failed(e.clone()),
            };
            let now = now_ms();
            let ts = (now / 1000).to_string();
            let signature = signer.signature(&event_id, &ts, &body, now);
            let req = inner
                .client
                .post(url)
                .header("content-type", "application/json")
                .header("webhook-id", &event_id)
                .header("webhook-timestamp", ts)
                .header("webhook-signature", signature)
                .body(body);
            Attempt::post(req).await
        }
    }

    /// Records the outcome of the attempt of `seq` that was due at `due`, and
    /// schedules what follows.
    async fn record(
        &self,
        w: &mut Worker,
        seq: u64,
        due: i64,
        outcome: Attempt,
    ) -> Result<(), StoreError> {
        let inner = &self.inner;
        w.queue.remove(&(due, seq));
        let cached = w.records.remove(&seq);
        let Some(mut d) = cached.map_or_else(|| self.delivery(&w.org, seq), |d| Ok(Some(d)))?
        else {
            return Ok(());
        };
        d.attempts += 1;
        d.last_status = outcome.status;
        d.last_error = outcome.error.clone();
        let now = now_ms();
        let schedule = &inner.config.webhook_retry_schedule;
        let next = if outcome.gone() {
            // 410 Gone: the receiver asks to stop. The event stays pending
            // and goes out when a webhook is set again.
            self.disable(&w.org, "410 Gone").await?;
            w.active = false;
            Some(now)
        } else {
            match next(schedule, d.attempts, &outcome, now) {
                Next::Delivered => {
                    d.status = DeliveryStatus::Delivered;
                    inner.counters.delivered.fetch_add(1, Ordering::Relaxed);
                    None
                }
                Next::Dead => {
                    d.status = DeliveryStatus::Failed;
                    inner.counters.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        seq,
                        attempts = d.attempts,
                        "delivery failed for good (dead letter)"
                    );
                    None
                }
                Next::RetryAt(t) => Some(t),
            }
        };
        d.next_attempt = next.map(iso_of_ms);
        if let Some(t) = next {
            w.queue.insert((t, seq));
            w.records.insert(seq, d.clone());
        }
        self.set_dirty(w, d);
        Ok(())
    }

    /// Writes the changes since the last checkpoint in one batch.
    fn checkpoint(&self, w: &mut Worker) -> Result<(), StoreError> {
        let records: Vec<Delivery> = {
            let dirty = w.shared.dirty.lock().unwrap_or_else(|p| p.into_inner());
            if dirty.is_empty() && !w.cursor_dirty && w.queue == w.saved {
                return Ok(());
            }
            dirty.values().cloned().collect()
        };
        let queued: HashMap<u64, i64> = records.iter().map(|d| (d.seq, d.queued_ms)).collect();
        let queued_ms = |seq: u64| queued.get(&seq).copied().unwrap_or_else(now_ms);
        let add: Vec<(i64, u64, i64)> = w
            .queue
            .difference(&w.saved)
            .map(|&(due, seq)| (due, seq, queued_ms(seq)))
            .collect();
        let remove: Vec<(i64, u64)> = w.saved.difference(&w.queue).copied().collect();
        self.inner
            .store
            .checkpoint_deliveries(&w.org, &records, &add, &remove, w.cursor)?;
        w.saved = w.queue.clone();
        w.cursor_dirty = false;
        // Drop only what was written: records changed meanwhile stay dirty.
        let mut dirty = w.shared.dirty.lock().unwrap_or_else(|p| p.into_inner());
        for d in &records {
            if dirty.get(&d.seq) == Some(d) {
                dirty.remove(&d.seq);
            }
        }
        Ok(())
    }

    /// Disables the webhook of `org` for `reason` and emits `onWebhookDisabled`.
    async fn disable(&self, org: &str, reason: &str) -> Result<(), StoreError> {
        self.inner
            .store
            .write(org, |tx| {
                let Some(mut hook) = tx.store().webhook(org)? else {
                    return Ok(());
                };
                if !hook.enabled {
                    return Ok(());
                }
                hook.enabled = false;
                hook.disabled_reason = Some(reason.to_string());
                tx.put_webhook(&hook);
                let body = json!({"cmd": "onWebhookDisabled", "ok": 1, "data": {"url": hook.url, "reason": reason}});
                if let serde_json::Value::Object(m) = body {
                    tx.emit(m)?;
                }
                Ok::<_, StoreError>(())
            })
            .await?;
        tracing::warn!(reason, "webhook disabled");
        Ok(())
    }
}

/// A new webhook for `url` whose current secret is `secret`.
pub fn new_webhook(url: String, secret: Secret) -> Webhook {
    Webhook {
        url,
        secrets: vec![SigningSecret {
            secret,
            expires_ms: None,
        }],
        enabled: true,
        disabled_reason: None,
        created: crate::time::now_iso(),
        events: Vec::new(),
    }
}

fn event_id_of(json: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Ids<'a> {
        #[serde(rename = "eventId", borrow)]
        event_id: std::borrow::Cow<'a, str>,
    }
    serde_json::from_slice::<Ids>(json)
        .map(|i| i.event_id.into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A signer over `secrets` (with their expiry, Unix ms).
    fn signer(secrets: &[(&str, Option<i64>)]) -> Signer {
        let mut hook = new_webhook("https://example.com/".into(), Secret::new(secrets[0].0));
        hook.secrets = secrets
            .iter()
            .map(|(s, expires_ms)| SigningSecret {
                secret: Secret::new(*s),
                expires_ms: *expires_ms,
            })
            .collect();
        Signer::new(hook, false)
    }

    /// The Standard Webhooks specification's published test vector.
    #[test]
    fn spec_test_vector_signs_and_verifies() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let sig = signer(&[(secret, None)]).signature(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            "1614265330",
            br#"{"test": 2432232314}"#,
            0,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn two_secrets_give_two_signatures_until_the_old_expires() {
        let a = new_secret();
        let b = new_secret();
        let s = signer(&[(a.expose(), None), (b.expose(), Some(1_000))]);
        let sig = s.signature("evt_1", "1", b"{}", 999);
        assert_eq!(sig.split(' ').count(), 2);
        assert!(sig.split(' ').all(|p| p.starts_with("v1,")));
        let later = s.signature("evt_1", "1", b"{}", 1_000);
        assert_eq!(later.split(' ').count(), 1);
        assert!(check_secret(a.expose()).is_ok());
        assert!(check_secret("whsec_c2hvcnQ=").is_err());
    }
}
