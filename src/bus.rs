//! The event bus: fans durable events out to the live sockets of their
//! organization, and keeps the registry of live sockets so that a newer
//! socket, a token reset or a disabled organization can close older ones.
//!
//! With several nodes ([`crate::cluster`]), what one node's bus does that
//! others must see (a kick, a socket registered or ended, a worker to
//! wake) is also handed to the cluster link as a [`Remote`], and what other
//! nodes send is applied with [`Bus::apply_remote`]. The bus itself knows
//! nothing of NATS.
//!
//! Invariants: an event is only ever sent on its own organization's channel;
//! each subscriber's queue is bounded by `capacity` events (a subscriber that
//! falls further behind sees `Lagged` and is closed by its session, it never
//! grows memory); the event JSON is shared (`Bytes`), never copied per socket.

use crate::model::Event;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::AtomicU8;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{broadcast, Notify};

/// Why a session is told to close by someone else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[repr(u8)]
pub enum Kick {
    /// A newer socket connected with the same token (error 1018).
    Replaced,
    /// The organization's token was reset (`ResetToken`).
    TokenReset,
    /// The organization's API access was disabled (`DisableApi`).
    Disabled,
    /// The server is shutting down (close code 1001).
    ShuttingDown,
    /// An agent's console session ended: signed out, expired, or the
    /// agent's password changed or the agent was deleted (close 1008).
    SignedOut,
}

/// A background worker another node may have to wake: the one holding
/// the workers' lease runs them all ([`crate::cluster`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Worker {
    /// An organization's webhook deliveries (reload its webhook).
    Webhooks,
    /// The delivery callbacks' outbox (a callback was queued).
    Callbacks,
}

/// What one node's bus tells the other nodes, and applies when they tell
/// it ([`Bus::apply_remote`]). Serialised as JSON on the cluster link.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
pub enum Remote {
    /// Close every socket of the groups starting with `prefix`.
    KickPrefix { prefix: String, why: Kick },
    /// Close every socket of `group`.
    KickGroup { group: String, why: Kick },
    /// A socket of `group` registered on the sending node (counts toward
    /// `max_sockets_per_token` everywhere).
    Registered { group: String, id: u64 },
    /// That socket ended.
    Ended { group: String, id: u64 },
    /// Wake `worker` (of `org`, for webhooks) on the node that runs it.
    Wake { worker: Worker, org: String },
    /// Queue the webhook deliveries of `seqs` of `org` again.
    Redeliver { org: String, seqs: Vec<u64> },
}

/// Cheap, cloneable handle to the bus.
#[derive(Clone)]
pub struct Bus {
    inner: Arc<Inner>,
}

struct Inner {
    capacity: usize,
    channels: Mutex<HashMap<String, broadcast::Sender<Event>>>,
    sessions: Mutex<HashMap<String, VecDeque<LiveSocket>>>,
    next_session: AtomicU64,
    /// The cluster link, once connected: what other nodes must see.
    relay: std::sync::OnceLock<tokio::sync::mpsc::UnboundedSender<Remote>>,
    /// Called with an organization when its channel is made (its first
    /// live subscriber here), after the channel exists.
    on_new_channel: std::sync::OnceLock<NewChannelHook>,
}

/// See [`Bus::set_on_new_channel`].
pub type NewChannelHook = Box<dyn Fn(&str) + Send + Sync>;

/// A registered socket: `(node, id)` (node 0: this one) and, for this
/// node's sockets, where to tell it to close.
type LiveSocket = ((u64, u64), Option<Arc<KickCell>>);

/// Where a live socket is told to close: the first reason wins. Smaller
/// than a channel, which matters with thousands of idle sockets.
pub struct KickCell {
    why: AtomicU8,
    notify: Notify,
}

impl KickCell {
    fn kick(&self, why: Kick) {
        if self
            .why
            .compare_exchange(0, why as u8 + 1, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.notify.notify_one();
        }
    }

    /// Waits until the socket is told to close, and says why.
    pub async fn kicked(&self) -> Kick {
        loop {
            let notified = self.notify.notified();
            match self.why.load(Ordering::Acquire) {
                1 => return Kick::Replaced,
                2 => return Kick::TokenReset,
                3 => return Kick::Disabled,
                4 => return Kick::ShuttingDown,
                5 => return Kick::SignedOut,
                _ => notified.await,
            }
        }
    }
}

/// A live socket's place in the registry; removes itself on drop.
pub struct Registration {
    bus: Bus,
    org: String,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut sessions = self
            .bus
            .inner
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(list) = sessions.get_mut(&self.org) {
            list.retain(|(id, _)| *id != (0, self.id));
            if list.is_empty() {
                sessions.remove(&self.org);
            }
        }
        drop(sessions);
        self.bus.relay(Remote::Ended {
            group: self.org.clone(),
            id: self.id,
        });
    }
}

impl Bus {
    /// A bus whose subscribers hold at most `capacity` undelivered events.
    pub fn new(capacity: usize) -> Bus {
        Bus {
            inner: Arc::new(Inner {
                capacity: capacity.max(1),
                channels: Mutex::new(HashMap::new()),
                sessions: Mutex::new(HashMap::new()),
                next_session: AtomicU64::new(1),
                relay: std::sync::OnceLock::new(),
                on_new_channel: std::sync::OnceLock::new(),
            }),
        }
    }

    /// Connects the bus to the cluster link: from now on what other nodes
    /// must see is sent on `relay`. Once; later calls are ignored.
    pub fn set_relay(&self, relay: tokio::sync::mpsc::UnboundedSender<Remote>) {
        let _ = self.inner.relay.set(relay);
    }

    /// Calls `hook` with an organization each time its channel is made,
    /// before [`Bus::subscribe`] returns (the cluster link notes where the
    /// log stood, so that it fills any gap after it). Once.
    pub fn set_on_new_channel(&self, hook: NewChannelHook) {
        let _ = self.inner.on_new_channel.set(hook);
    }

    /// Tells the other nodes `what`, if there are any.
    pub fn relay(&self, what: Remote) {
        if let Some(r) = self.inner.relay.get() {
            let _ = r.send(what);
        }
    }

    /// Applies what node `node` (a nonzero tag) told the others. Wakes are
    /// not the bus's: the cluster link hands them to the workers.
    pub fn apply_remote(&self, node: u64, what: Remote, max_per_group: usize) {
        match what {
            Remote::KickPrefix { prefix, why } => self.kick_prefix_here(&prefix, why),
            Remote::KickGroup { group, why } => self.kick_group_here(&group, why),
            Remote::Registered { group, id } => {
                let mut sessions = self.sessions();
                let list = sessions.entry(group).or_default();
                list.push_back(((node, id), None));
                Self::trim(list, max_per_group);
            }
            Remote::Ended { group, id } => {
                let mut sessions = self.sessions();
                if let Some(list) = sessions.get_mut(&group) {
                    list.retain(|(k, _)| *k != (node, id));
                    if list.is_empty() {
                        sessions.remove(&group);
                    }
                }
            }
            Remote::Wake { .. } | Remote::Redeliver { .. } => {}
        }
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, VecDeque<LiveSocket>>> {
        self.inner
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Drops the oldest sockets of a group beyond `max`, telling this
    /// node's to close ([`Kick::Replaced`]); another node's are closed by
    /// that node, which applies the same rule.
    fn trim(list: &mut VecDeque<LiveSocket>, max: usize) {
        while list.len() > max.max(1) {
            if let Some((_, Some(old))) = list.pop_front() {
                old.kick(Kick::Replaced);
            }
        }
    }

    /// Subscribes to the events of `org`. Subscribe before acknowledging
    /// `connect`, so that no event falls in between.
    pub fn subscribe(&self, org: &str) -> broadcast::Receiver<Event> {
        let mut channels = self
            .inner
            .channels
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = channels.get(org) {
            return tx.subscribe();
        }
        let (tx, rx) = broadcast::channel(self.inner.capacity);
        channels.insert(org.to_string(), tx);
        if let Some(hook) = self.inner.on_new_channel.get() {
            hook(org);
        }
        rx
    }

    /// Sends `event` to every subscriber of its organization.
    pub fn publish(&self, event: Event) {
        let mut channels = self
            .inner
            .channels
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = channels.get(&event.org) {
            if tx.send(event.clone()).is_err() {
                // No subscriber left: drop the channel, it is made anew on demand.
                channels.remove(&event.org);
            }
        }
    }

    /// Registers a live socket of the group `org` (one API key's sockets,
    /// [`Bus::key_group`]). When more than `max_per_org` would then be live,
    /// the oldest ones are told [`Kick::Replaced`]. Returns the
    /// registration (drop it when the socket ends) and the socket's kick cell.
    pub fn register(&self, org: &str, max_per_org: usize) -> (Registration, Arc<KickCell>) {
        let id = self.inner.next_session.fetch_add(1, Ordering::Relaxed);
        let cell = Arc::new(KickCell {
            why: AtomicU8::new(0),
            notify: Notify::new(),
        });
        let mut sessions = self.sessions();
        let list = sessions.entry(org.to_string()).or_default();
        list.push_back(((0, id), Some(cell.clone())));
        Self::trim(list, max_per_org);
        drop(sessions);
        self.relay(Remote::Registered {
            group: org.to_string(),
            id,
        });
        (
            Registration {
                bus: self.clone(),
                org: org.to_string(),
                id,
            },
            cell,
        )
    }

    /// Tells every live socket of every organization to close for `why`.
    /// Sockets that register later must check for themselves (shutdown:
    /// the server's cancellation token is set before this is called).
    pub fn kick_everyone(&self, why: Kick) {
        let sessions = self
            .inner
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for (_, cell) in sessions.values().flatten() {
            if let Some(cell) = cell {
                cell.kick(why);
            }
        }
    }

    /// The registry name of the sockets of `key` of organization `org`
    /// (live or sandbox: a key's sockets are one group).
    pub fn key_group(org: &str, key: &str) -> String {
        format!("{}/{key}", crate::model::live_id(org))
    }

    /// Tells every live socket of every key of `org` (and every agent's
    /// console) to close for `why`.
    pub fn kick_org(&self, org: &str, why: Kick) {
        self.kick_prefix(&format!("{}/", crate::model::live_id(org)), why);
    }

    /// Tells every live socket of every group whose name starts with
    /// `prefix` to close for `why`, on every node.
    pub fn kick_prefix(&self, prefix: &str, why: Kick) {
        self.kick_prefix_here(prefix, why);
        self.relay(Remote::KickPrefix {
            prefix: prefix.to_string(),
            why,
        });
    }

    fn kick_prefix_here(&self, prefix: &str, why: Kick) {
        let mut sessions = self.sessions();
        let groups: Vec<String> = sessions
            .keys()
            .filter(|g| g.starts_with(prefix))
            .cloned()
            .collect();
        for g in groups {
            for (_, cell) in sessions.remove(&g).unwrap_or_default() {
                if let Some(cell) = cell {
                    cell.kick(why);
                }
            }
        }
    }

    /// Tells every live socket of the group `org` (see [`Bus::key_group`])
    /// to close for `why`, on every node.
    pub fn kick_all(&self, org: &str, why: Kick) {
        self.kick_group_here(org, why);
        self.relay(Remote::KickGroup {
            group: org.to_string(),
            why,
        });
    }

    fn kick_group_here(&self, group: &str, why: Kick) {
        let list = self.sessions().remove(group);
        for (_, cell) in list.into_iter().flatten() {
            if let Some(cell) = cell {
                cell.kick(why);
            }
        }
    }
}
