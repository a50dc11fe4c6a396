//! The event bus: fans durable events out to the live sockets of their
//! organization, and keeps the registry of live sockets so that a newer
//! socket, a token reset or a disabled organization can close older ones.
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
}

/// A registered socket: its id and where to tell it to close.
type LiveSocket = (u64, Arc<KickCell>);

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
            list.retain(|(id, _)| *id != self.id);
            if list.is_empty() {
                sessions.remove(&self.org);
            }
        }
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
            }),
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
        channels
            .entry(org.to_string())
            .or_insert_with(|| broadcast::channel(self.inner.capacity).0)
            .subscribe()
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
        let mut sessions = self
            .inner
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let list = sessions.entry(org.to_string()).or_default();
        while list.len() >= max_per_org.max(1) {
            if let Some((_, old)) = list.pop_front() {
                old.kick(Kick::Replaced);
            }
        }
        list.push_back((id, cell.clone()));
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
            cell.kick(why);
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
    /// `prefix` to close for `why`.
    pub fn kick_prefix(&self, prefix: &str, why: Kick) {
        let mut sessions = self
            .inner
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let groups: Vec<String> = sessions
            .keys()
            .filter(|g| g.starts_with(prefix))
            .cloned()
            .collect();
        for g in groups {
            for (_, cell) in sessions.remove(&g).unwrap_or_default() {
                cell.kick(why);
            }
        }
    }

    /// Tells every live socket of the group `org` (see [`Bus::key_group`])
    /// to close for `why`.
    pub fn kick_all(&self, org: &str, why: Kick) {
        let mut sessions = self
            .inner
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(list) = sessions.remove(org) {
            for (_, cell) in list {
                cell.kick(why);
            }
        }
    }
}
