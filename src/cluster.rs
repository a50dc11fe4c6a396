//! Several nodes as one gateway: the workers' lease ([`lead`]) and the
//! link between the nodes' buses over NATS ([`link`]).
//!
//! # The lease
//! With a shared store (PostgreSQL), one node at a time runs the
//! background workers (webhook deliveries, delivery callbacks,
//! housekeeping, route timers): the one holding lease `workers` in the
//! store. It renews it every third of `lease_timeout`; a node that fails to
//! renew stops its workers at once; when it dies, another takes the lease
//! once it has expired. Workers resume from the store (delivery cursors
//! and queues, the callback outbox, route timers), so a takeover repeats at
//! most what was in flight (at least once, with the same `webhook-id`) and
//! skips nothing.
//!
//! # The link (NATS)
//! Subjects, under `bus_prefix` (default `convgate`):
//! - `{prefix}.evt.{org}` — each event after its commit, as sent to
//!   sockets (the JSON), with headers `Convgate-Org`, `Convgate-Seq` and
//!   `Convgate-Node` (the sender). `{org}` is the organization id with
//!   bytes outside `[A-Za-z0-9_~-]` written `%XX`.
//! - `{prefix}.ctl` — a [`Remote`] as JSON with the sender's `node`: socket
//!   kicks, socket registrations (`max_sockets_per_token` counts sockets on
//!   every node), wakes and redeliveries for the node running the workers.
//!
//! Invariants: each node hands its sockets every event of an organization
//! once, in `seq` order. Its own events go to its sockets at once; another
//! node's arrive through NATS, and an event whose `seq` is past the next
//! one expected (NATS dropped one, or another node's message arrived
//! first) is preceded by the missing ones, read from the log. When the
//! connection to NATS comes back, every organization seen is caught up
//! from the log. So NATS may lose messages; sockets do not lose events.

use crate::bus::{Bus, Remote, Worker};
use crate::ctx::Ctx;
use crate::model::Event;
use crate::store::{OnDurable, Store};
use futures_util::StreamExt;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The lease the node running the background workers holds.
pub const WORKERS_LEASE: &str = "workers";

/// Events read from the log per step when filling a gap or catching up.
const CATCH_UP_BATCH: usize = 1_000;

/// A cluster link that could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// NATS did not answer or refused a subscription.
    #[error("bus: {0}")]
    Nats(String),
}

/// This process's name among the nodes: unique per start.
pub fn node_id() -> String {
    format!("{}", uuid::Uuid::now_v7().simple())
}

/// Runs `start` with a token while this node holds the workers' lease,
/// cancelling the token when it loses it; tries every third of
/// `lease_timeout` (renewing while held), until `shutdown`, when the lease
/// is given up so that another node takes over at once.
pub fn lead(
    ctx: Ctx,
    node: String,
    shutdown: CancellationToken,
    tracker: &TaskTracker,
    start: impl Fn(CancellationToken) + Send + 'static,
) {
    let ttl = Duration::from_secs_f64(ctx.config.lease_timeout);
    tracker.spawn(async move {
        let mut term: Option<CancellationToken> = None;
        loop {
            let tried = tokio::time::Instant::now();
            let (store, me) = (ctx.store.clone(), node.clone());
            // A renewal that takes longer than a third of the lease counts
            // as lost: the workers stop well before the lease can expire
            // and another node take it (never two nodes running them).
            let renew = tokio::task::spawn_blocking(move || store.lease(WORKERS_LEASE, &me, ttl));
            let held = match tokio::time::timeout(ttl / 3, renew).await {
                Ok(Ok(Ok(held))) => Ok(held),
                Ok(Ok(Err(e))) => Err(e.to_string()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("no answer within a third of lease_timeout".to_string()),
            };
            match held {
                Ok(true) if term.is_none() => {
                    tracing::info!(node = %node, "this node runs the workers");
                    let t = shutdown.child_token();
                    start(t.clone());
                    term = Some(t);
                }
                Ok(true) => {}
                Ok(false) | Err(_) => {
                    if let Err(e) = &held {
                        tracing::error!(error = %e, "renewing the workers' lease failed");
                    }
                    if let Some(t) = term.take() {
                        tracing::warn!(node = %node, "the workers' lease is lost: stopping them");
                        t.cancel();
                    }
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep_until(tried + ttl / 3) => {}
            }
        }
        if term.is_some() {
            let store = ctx.store.clone();
            let _ = tokio::task::spawn_blocking(move || store.release(WORKERS_LEASE, &node)).await;
        }
    });
}

/// The store's `on_durable` for a linked node, and the receiving end for
/// [`link`]: events go through the link (to this node's sockets and to the
/// other nodes), in commit order.
pub fn event_sink() -> (OnDurable, mpsc::UnboundedReceiver<Event>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (
        Arc::new(move |ev| {
            let _ = tx.send(ev);
        }),
        rx,
    )
}

/// Connects to NATS at `ctx.config.bus` and runs the link until
/// `shutdown`: publishes this node's `events` and bus messages, applies the
/// other nodes'. Errors when NATS does not answer (the node does not start).
pub async fn link(
    ctx: Ctx,
    node: String,
    events: mpsc::UnboundedReceiver<Event>,
    shutdown: CancellationToken,
    tracker: &TaskTracker,
) -> Result<(), ClusterError> {
    let url = ctx.config.bus.clone().unwrap_or_default();
    let prefix = ctx.config.bus_prefix.clone();
    let (reconnected_tx, reconnected) = mpsc::unbounded_channel();
    let nats = async_nats::ConnectOptions::new()
        .name(format!("convgate {node}"))
        .event_callback(move |event| {
            let tx = reconnected_tx.clone();
            async move {
                match event {
                    async_nats::Event::Connected => {
                        let _ = tx.send(());
                    }
                    async_nats::Event::Disconnected => {
                        tracing::warn!(
                            "bus: disconnected from NATS; catching up from the log when back"
                        )
                    }
                    _ => {}
                }
            }
        })
        .connect(&url);
    let nats = tokio::time::timeout(Duration::from_secs(10), nats)
        .await
        .map_err(|_| ClusterError::Nats(format!("{url} did not answer within 10 s")))?
        .map_err(|e| ClusterError::Nats(e.to_string()))?;
    let evt_sub = nats
        .subscribe(format!("{prefix}.evt.>"))
        .await
        .map_err(|e| ClusterError::Nats(e.to_string()))?;
    let ctl_sub = nats
        .subscribe(format!("{prefix}.ctl"))
        .await
        .map_err(|e| ClusterError::Nats(e.to_string()))?;
    nats.flush()
        .await
        .map_err(|e| ClusterError::Nats(e.to_string()))?;
    let (relay_tx, relay) = mpsc::unbounded_channel();
    ctx.bus.set_relay(relay_tx);
    let seq = Sequencer::default();
    let (hook_seq, hook_store) = (seq.clone(), ctx.store.clone());
    ctx.bus
        .set_on_new_channel(Box::new(move |org| hook_seq.subscribed(&hook_store, org)));
    let link = Link {
        seq,
        nats,
        prefix,
        node,
        ctx,
    };
    tracker.spawn(link.run(events, relay, evt_sub, ctl_sub, reconnected, shutdown));
    Ok(())
}

/// A control message on `{prefix}.ctl`.
#[derive(serde::Serialize, serde::Deserialize)]
struct Ctl {
    node: String,
    #[serde(flatten)]
    what: Remote,
}

struct Link {
    seq: Sequencer,
    nats: async_nats::Client,
    prefix: String,
    node: String,
    ctx: Ctx,
}

impl Link {
    async fn run(
        self,
        mut events: mpsc::UnboundedReceiver<Event>,
        mut relay: mpsc::UnboundedReceiver<Remote>,
        mut evt_sub: async_nats::Subscriber,
        mut ctl_sub: async_nats::Subscriber,
        mut reconnected: mpsc::UnboundedReceiver<()>,
        shutdown: CancellationToken,
    ) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    let _ = self.nats.flush().await;
                    return;
                }
                Some(ev) = events.recv() => {
                    self.publish_event(&ev).await;
                    self.seq.deliver(&self.ctx.store, &self.ctx.bus, ev);
                }
                Some(what) = relay.recv() => {
                    let ctl = Ctl { node: self.node.clone(), what };
                    if let Ok(body) = serde_json::to_vec(&ctl) {
                        let subject = format!("{}.ctl", self.prefix);
                        if let Err(e) = self.nats.publish(subject, body.into()).await {
                            tracing::error!(error = %e, "bus: publishing a control message failed");
                        }
                    }
                }
                Some(msg) = evt_sub.next() => {
                    if let Some(ev) = self.remote_event(&msg) {
                        self.seq.deliver(&self.ctx.store, &self.ctx.bus, ev);
                    }
                }
                Some(msg) = ctl_sub.next() => {
                    match serde_json::from_slice::<Ctl>(&msg.payload) {
                        Ok(ctl) if ctl.node != self.node => self.apply(ctl),
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "bus: unreadable control message"),
                    }
                }
                Some(()) = reconnected.recv() => {
                    self.seq.catch_up(&self.ctx.store, &self.ctx.bus);
                }
            }
        }
    }

    async fn publish_event(&self, ev: &Event) {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Convgate-Org", ev.org.as_str());
        headers.insert("Convgate-Seq", ev.seq.to_string().as_str());
        headers.insert("Convgate-Node", self.node.as_str());
        let subject = format!("{}.evt.{}", self.prefix, subject_token(&ev.org));
        if let Err(e) = self
            .nats
            .publish_with_headers(subject, headers, ev.json.clone())
            .await
        {
            // The other nodes fill the gap from the log at the next event.
            tracing::error!(error = %e, "bus: publishing an event failed");
        }
    }

    /// Another node's event, from its NATS message.
    fn remote_event(&self, msg: &async_nats::Message) -> Option<Event> {
        let h = msg.headers.as_ref()?;
        if h.get("Convgate-Node").map(|v| v.as_str()) == Some(self.node.as_str()) {
            return None;
        }
        Some(Event {
            org: h.get("Convgate-Org")?.as_str().to_string(),
            seq: h.get("Convgate-Seq")?.as_str().parse().ok()?,
            json: msg.payload.clone(),
        })
    }

    fn apply(&self, ctl: Ctl) {
        let ctx = &self.ctx;
        match ctl.what {
            Remote::Wake {
                worker: Worker::Webhooks,
                org,
            } => ctx.deliveries.wake_here(&org),
            Remote::Wake {
                worker: Worker::Callbacks,
                ..
            } => ctx.callbacks.wake_here(),
            Remote::Redeliver { org, seqs } => ctx.deliveries.redeliver_here(&org, seqs),
            what => {
                ctx.bus
                    .apply_remote(node_tag(&ctl.node), what, ctx.config.max_sockets_per_token)
            }
        }
    }
}

/// A nonzero number naming another node in the bus's registry.
fn node_tag(node: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    node.hash(&mut h);
    h.finish().max(1)
}

/// `org` as one NATS subject token: bytes outside `[A-Za-z0-9_~-]` as `%XX`.
fn subject_token(org: &str) -> String {
    let mut out = String::with_capacity(org.len());
    for b in org.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'~' | b'-' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Hands this node's bus each organization's events once, in `seq` order,
/// reading from the log what did not arrive. Cheap to clone (shared).
#[derive(Clone, Default)]
struct Sequencer {
    /// The last `seq` handed to the bus (or committed before the first
    /// socket here subscribed), by organization.
    last: Arc<std::sync::Mutex<HashMap<String, u64>>>,
}

impl Sequencer {
    fn last(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        self.last.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A first socket of `org` subscribed here: events committed before
    /// now are not owed to it; every later one is, even if it arrives
    /// after a later one (the gap is filled from the log).
    fn subscribed(&self, store: &Store, org: &str) {
        if self.last().contains_key(org) {
            return;
        }
        match store.last_seq(org) {
            Ok(seq) => {
                self.last().entry(org.to_string()).or_insert(seq);
            }
            Err(e) => tracing::error!(error = %e, org, "bus: reading the log's position failed"),
        }
    }

    fn deliver(&self, store: &Store, bus: &Bus, ev: Event) {
        let last = *self
            .last()
            .entry(ev.org.clone())
            .or_insert(ev.seq.saturating_sub(1));
        if ev.seq <= last {
            return;
        }
        if ev.seq > last + 1 {
            self.fill(store, bus, &ev.org, ev.seq - 1);
        }
        self.last().insert(ev.org.clone(), ev.seq);
        bus.publish(ev);
    }

    /// Hands the bus the events of `org` after the last handed, up to `upto`.
    fn fill(&self, store: &Store, bus: &Bus, org: &str, upto: u64) {
        let mut last = self.last().get(org).copied().unwrap_or(upto);
        while last < upto {
            let want = ((upto - last) as usize).min(CATCH_UP_BATCH);
            let events = match store.events_after(org, last, want) {
                Ok(e) => e,
                Err(e) => {
                    tracing::error!(error = %e, org, "bus: reading missed events failed");
                    return;
                }
            };
            if events.is_empty() {
                // Trimmed from the log: a socket that needs them resumes.
                last = upto;
            }
            for ev in events.into_iter().take_while(|e| e.seq <= upto) {
                last = ev.seq;
                bus.publish(ev);
            }
            self.last().insert(org.to_string(), last);
        }
    }

    /// After a reconnect: every organization seen is caught up to its log.
    fn catch_up(&self, store: &Store, bus: &Bus) {
        let orgs: Vec<String> = self.last().keys().cloned().collect();
        for org in orgs {
            match store.last_seq(&org) {
                Ok(upto) => self.fill(store, bus, &org, upto),
                Err(e) => tracing::error!(error = %e, org, "bus: catching up failed"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::subject_token;

    #[test]
    fn organization_ids_become_one_subject_token() {
        assert_eq!(subject_token("default"), "default");
        assert_eq!(subject_token("acme~test"), "acme~test");
        assert_eq!(subject_token("a.b*c >"), "a%2Eb%2Ac%20%3E");
    }
}
