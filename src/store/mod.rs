//! The store: the only code that imports sled or PostgreSQL.
//!
//! One [`Store`] type, its accessors split into files by record kind
//! ([`orgs`], [`users`], [`bots`], [`messages`], [`conversations`],
//! [`events`], [`webhooks`], [`callbacks`], [`agents`], [`console`]); encodings in [`codec`]; the
//! storage engine in [`engine`]; upgrades of data
//! written by earlier layouts in [`migrate`].
//!
//! Everything lives in one sled tree under organization-scoped key prefixes,
//! so that one batch ([`engine::Batch`]) applies a change and the event it causes
//! atomically. The key layout, in one place:
//!
//! | key | value |
//! |---|---|
//! | `meta/layout` | layout version, u64 big-endian (absent: 1, the WhatsApp-only layout) |
//! | `meta/console_base` | the `public_base_url` users' console links were last made under |
//! | `org/{org}` | [`Org`](crate::model::Org) JSON (a sandbox `{org}~test` has no record: its keys live under the live id, bots and agents are read from it) |
//! | `tok/{sha256 hex}` | organization id (its own token: the `default` key) |
//! | `key/{org}/{name}` | a named [`ApiKey`](crate::model::ApiKey) JSON |
//! | `kix/{sha256 hex}` | `[org, ApiKey]` JSON: the key a token resolves to |
//! | `seq/{org}` | last event `seq`, u64 big-endian |
//! | `bot/{org}/{botID:020}` | [`Bot`](crate::model::Bot) JSON (channel settings, sealed secrets) |
//! | `bix/{botID:020}` | organization of the bot (inbound URLs carry only the botID) |
//! | `usr/{org}/{uid}` | [`UserRecord`](crate::model::UserRecord): `0x01`, u32 BE length, the user's JSON, the tags' JSON (older records: one JSON object) |
//! | `dat/{org}/{uid}` | custom user data (`SetUserData`) JSON |
//! | `tag/{org}/{lowercase name}` | [`Tag`](crate::model::Tag) JSON |
//! | `evt/{org}/{seq:020}` | the event JSON, as sent (`cmd` first) |
//! | `epo/{org}` | the log's epoch: 16 hex characters, made with the log |
//! | `old/{org}` | the oldest retained `seq` (absent: 1), u64 big-endian |
//! | `eid/{org}/{eventId}` | the event's `seq`, u64 big-endian |
//! | `whk/{org}` | [`Webhook`](crate::model::Webhook) JSON |
//! | `dcur/{org}` | last `seq` queued for webhook delivery, u64 big-endian |
//! | `dlv/{org}/{seq:020}` | [`Delivery`](crate::model::Delivery), postcard (compact binary) |
//! | `dq/{org}/{due ms:020}/{seq:020}` | a pending attempt, due at that Unix ms; value: queued ms |
//! | `msg/{org}/{mid}` | [`Message`](crate::model::Message) JSON |
//! | `pid/{org}/{provider id}` | `mid` of the provider's message id (dedupe, statuses) |
//! | `cnv/{org}/{uid}/{dt ms:020}/{mid}` | empty: the user's conversation in time order |
//! | `chs/{org}/{uid}` | the user's channel state, JSON defined by the channel |
//! | `agt/{org}/{lowercase email}` | [`Agent`](crate::model::Agent) JSON; `agc/{org}` the last `aid` |
//! | `apw/{org}/{lowercase email}` | [`AgentPassword`](crate::model::AgentPassword) JSON (Argon2id PHC string) |
//! | `aem/{lowercase email}/{org}` | empty: the organizations an agent email signs in to |
//! | `ses/{sha256 hex}` | [`ConsoleSession`](crate::model::ConsoleSession) JSON, under the hash of the cookie's id |
//! | `ulk/{link}` | `[org, uid]` JSON: the user a console link (`url`) points at |
//! | `idm/{org}/{key}` | [`IdempotentReply`](crate::model::IdempotentReply) JSON |
//! | `tpl/{org}/{botID:020}` | [`TemplateCache`](crate::model::TemplateCache) JSON |
//! | `cbq/{due ms:020}/{id}` | a [`CallbackJob`](crate::model::CallbackJob) due at that Unix ms |
//! | `cbf/{id}` | a [`CallbackJob`](crate::model::CallbackJob) that exhausted its retries (dead letter) |
//! | `cvo/{org}/{uid}` | the user's open [`Conversation`](crate::model::Conversation) JSON |
//! | `cvn/{org}` | last close sequence of the organization, u64 big-endian |
//! | `cvc/{org}/{close seq:020}` | a [`ClosedConversation`](crate::model::ClosedConversation) JSON, rows included |
//! | `cvt/{org}/{closed ms:020}/{close seq:020}` | empty: closes by time (date filters) |
//!
//! Everything is read and written through [`kv`]: by default the
//! [`engine`], sled behind a write-ahead log (`wal/`) and an in-memory
//! overlay of what sled does not hold yet; with `store = "postgres://…"`,
//! [`pg`], the same keys as rows of one table that several nodes share
//! (a write then holds a cluster-wide lock and commits before it returns;
//! the caches below are not filled, since another node may write).
//!
//! Invariants: writes are serialised by one mutex held only around in-memory
//! operations (never across an await), which makes each organization's
//! `seq` gap-free and the log ordered. [`Store::write`] returns only after the
//! change is durable (the write-ahead log synced); concurrent writers share
//! one sync (group commit), and events are handed to the bus in `seq` order
//! after the sync that made them durable, never before.
//!
//! Delivery bookkeeping (`dcur`, `dlv`, `dq`, callback outcomes) is written
//! without waiting for a sync: losing the last of it in a crash only
//! repeats deliveries (at least once), it never skips one, because the
//! cursor and the queue move in the same batch and the event log itself is
//! always durable first.

mod agents;
mod bots;
mod callbacks;
mod codec;
mod console;
mod conversations;
mod copy;
mod engine;
mod events;
mod kv;
mod messages;
mod migrate;
mod orgs;
mod pg;
mod routes;
mod users;
mod webhooks;

use crate::model::Event;
use crate::model::Org;
use codec::{be_u64, decode, key};
pub use copy::{copy_to_postgres, CopyReport};
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use tokio::sync::{mpsc, oneshot};
/// A failure of the storage layer. Handlers map it to 2004 Internal error.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process holds the data directory's lock.
    #[error("data dir {0} is locked by another convgate process (sled lock on {0}/db)")]
    Locked(PathBuf),
    /// sled reported an error.
    #[error("store: {0}")]
    Sled(#[from] sled::Error),
    /// A stored record did not decode (corruption or an incompatible version).
    #[error("store: corrupt record: {0}")]
    Corrupt(#[from] serde_json::Error),
    /// A binary record did not decode.
    #[error("store: corrupt binary record: {0}")]
    Codec(String),
    /// PostgreSQL failed or did not answer (the `store = "postgres://…"`
    /// backend).
    #[error("store: postgres: {0}")]
    Backend(String),
    /// The flusher stopped (the store is shutting down), or the write-ahead
    /// log failed to sync (no write is accepted until a restart).
    #[error("store: closed")]
    Closed,
}

/// Called with each event once it is durable, in `seq` order per organization.
pub type OnDurable = Arc<dyn Fn(Event) + Send + Sync>;

/// A cheap, cloneable handle to the store.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

/// Watches a store being let go: see [`Store::closing`].
pub struct Closing(std::sync::Weak<Inner>);

impl Closing {
    /// Waits (checking every 5 ms, at most `limit`) until no handle of the
    /// store is left, so its files are closed and its lock released: a
    /// checkpoint or a sync may still hold one on a blocking thread after
    /// the server stopped. Whether it was let go in time.
    pub async fn wait(self, limit: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        while self.0.strong_count() > 0 {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        true
    }
}

/// How long [`Store::open`] waits for a lock that this process's earlier
/// store of the same directory has not let go yet.
pub const RELOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Data directories a store of this process has opened (canonical paths):
/// only their locks can be this process's own, lingering after a close.
static OPENED_HERE: std::sync::LazyLock<Mutex<std::collections::HashSet<PathBuf>>> =
    std::sync::LazyLock::new(Default::default);

/// [`OPENED_HERE`], locked (a panic elsewhere does not poison it for us).
fn opened_here() -> std::sync::MutexGuard<'static, std::collections::HashSet<PathBuf>> {
    OPENED_HERE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Opens sled under `dir/db`. Errors: [`StoreError::Locked`] when the
/// directory's lock is held.
fn open_sled(dir: &Path) -> Result<sled::Db, StoreError> {
    sled::Config::new()
        .path(dir.join("db"))
        // Acknowledged writes are durable in the write-ahead log; sled is
        // flushed by the engine's checkpoints.
        .flush_every_ms(None)
        .open()
        .map_err(|e| match e {
            sled::Error::Io(io) if io.kind() == std::io::ErrorKind::WouldBlock => {
                StoreError::Locked(dir.to_path_buf())
            }
            sled::Error::Io(io) if io.to_string().contains("lock") => {
                StoreError::Locked(dir.to_path_buf())
            }
            e => StoreError::Sled(e),
        })
}

/// The maps read on every command (caches, durable positions, key use):
/// foldhash with a random seed per map rather than SipHash, which was
/// ~0.5k instructions of a POST `GetUser` (callgrind). Their keys come from
/// clients, so the seed stays random; the caches are bounded.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

struct Inner {
    db: kv::Kv,
    write_lock: Mutex<()>,
    flush_tx: mpsc::UnboundedSender<Pending>,
    flushes: AtomicU64,
    flushed_writes: AtomicU64,
    /// The last durable `seq` of each organization written since open (an
    /// organization absent here has had no write since: all of its log is
    /// durable). Replays and polls read the log only up to it.
    durable: RwLock<FastMap<String, u64>>,
    /// When each API key was last used, by `org/key`.
    key_use: Mutex<FastMap<String, Arc<std::sync::atomic::AtomicI64>>>,
    /// Delivery callbacks queued and not yet settled, by organization
    /// (counted from `cbq/` at open; kept with each write and settlement).
    pending_callbacks: Mutex<HashMap<String, usize>>,
    /// When `pending_callbacks` was last counted from the outbox (shared
    /// store only).
    callbacks_counted: Mutex<Option<std::time::Instant>>,
    /// `public_base_url`, once set: new users get console links under it.
    console_base: std::sync::OnceLock<String>,
    /// Organizations by token hash, as read: every command authenticates,
    /// so this spares two reads and a decode per command. Emptied by every
    /// write that changes an organization or a token.
    orgs_by_token: RwLock<OrgCache>,
    /// User records as stored (`usr/` values), as read: `GetUser` and
    /// every command that loads a user skip sled's tree walk.
    users: RwLock<UserCache>,
    /// Bots by `botID` with their organization, as read: every provider
    /// webhook finds its bot (two reads and a decode otherwise). Emptied by
    /// every write that stages a bot.
    bots: RwLock<BotCache>,
}

/// A read-through cache, for records read on every request: a read fills
/// it ([`ReadThrough::fill`]) only if no write invalidated it since the
/// read began (`generation`), so it never holds a record older than the
/// tree. At most [`ReadThrough::MAX`] entries: a full cache is emptied and
/// refills from reads.
struct ReadThrough<K, V> {
    generation: u64,
    map: FastMap<K, V>,
}

impl<K, V> Default for ReadThrough<K, V> {
    fn default() -> Self {
        ReadThrough {
            generation: 0,
            map: FastMap::default(),
        }
    }
}

impl<K: std::hash::Hash + Eq, V> ReadThrough<K, V> {
    const MAX: usize = 65_536;

    /// Keeps `value`, read while the cache was at `generation`, unless a
    /// write has invalidated it since.
    fn fill(&mut self, generation: u64, key: K, value: V) {
        if self.generation == generation {
            if self.map.len() >= Self::MAX {
                self.map.clear();
            }
            self.map.insert(key, value);
        }
    }

    /// Empties the cache; reads begun before do not fill it.
    fn forget(&mut self) {
        self.generation += 1;
        self.map.clear();
    }
}

/// `usr/` records by key. Writes update it under the write lock right after
/// their batch is applied.
type UserCache = ReadThrough<Vec<u8>, users::Cached>;

/// `bix/` + `bot/` by `botID`: the organization and the bot. Emptied by
/// every write that stages a bot. Bots are few (one per channel number).
type BotCache = ReadThrough<u64, (String, crate::model::Bot)>;

/// Read-through cache of `tok/` + `org/`. A read fills it only if no write
/// invalidated it since the read began (`generation`), so it never keeps a
/// record older than the tree. Holds at most one entry per organization:
/// only tokens that resolve are kept.
#[derive(Default)]
struct OrgCache {
    generation: u64,
    /// By the token's SHA-256 (hex).
    map: FastMap<String, Arc<Org>>,
    /// By the raw token, for tokens that resolved before: a hit costs one
    /// lookup, no SHA-256. Only tokens that resolved are kept, so it is
    /// bounded by the number of keys; emptied with `map`.
    raw: FastMap<Box<str>, Arc<Org>>,
}

/// A committed batch waiting for its flush: its events and its waiter.
struct Pending {
    events: Vec<Event>,
    done: oneshot::Sender<Result<(), String>>,
}

impl Store {
    /// A watch on this store being let go by every handle (drop this one
    /// first): what a restart on the same data dir waits for.
    pub fn closing(&self) -> Closing {
        Closing(Arc::downgrade(&self.inner))
    }

    /// Opens (or creates) the store under `dir`, upgrades data written by an
    /// earlier layout ([`migrate`]), and starts its flusher task.
    /// `on_durable` receives each event after the sync that made it durable.
    ///
    /// A restart in the same process (tests, an embedding host) may find
    /// the directory still locked for a moment after the last handle of the
    /// earlier store dropped: sled lets its lock go when its own background
    /// jobs end. Such a lock is waited for, at most [`RELOCK_WAIT`]; a lock
    /// held by another process is an error at once.
    ///
    /// Errors: [`StoreError::Locked`] when another process has `dir` open.
    pub async fn open(dir: &Path, on_durable: OnDurable) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Sled(e.into()))?;
        let key = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
        let ours = opened_here().contains(&key);
        let deadline = std::time::Instant::now() + RELOCK_WAIT;
        let db = loop {
            match open_sled(dir) {
                Err(StoreError::Locked(_)) if ours && std::time::Instant::now() < deadline => {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
                r => break r?,
            }
        };
        opened_here().insert(key);
        Store::with_kv(kv::Kv::Local(engine::Engine::open(db, dir)?), on_durable)
    }

    /// Opens the store in the PostgreSQL database at `url` (a libpq URL,
    /// `postgres://user@host:port/db`), shared with any other node opened
    /// on it: applies the schema migrations it lacks, then as
    /// [`Store::open`]. `pool` is the number of connections for reads (one
    /// more serves writes).
    ///
    /// Errors: [`StoreError::Backend`] when PostgreSQL does not answer or a
    /// migration fails. Must be called inside a tokio runtime.
    pub async fn open_postgres(
        url: &str,
        pool: usize,
        on_durable: OnDurable,
    ) -> Result<Store, StoreError> {
        let url = url.to_string();
        let pg = tokio::task::spawn_blocking(move || pg::Pg::open(&url, pool))
            .await
            .map_err(|_| StoreError::Closed)??;
        Store::with_kv(kv::Kv::Pg(pg), on_durable)
    }

    fn with_kv(db: kv::Kv, on_durable: OnDurable) -> Result<Store, StoreError> {
        migrate::upgrade(&db)?;
        let (flush_tx, flush_rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            db,
            write_lock: Mutex::new(()),
            flush_tx,
            flushes: AtomicU64::new(0),
            flushed_writes: AtomicU64::new(0),
            orgs_by_token: RwLock::default(),
            users: RwLock::default(),
            bots: RwLock::default(),
            durable: RwLock::default(),
            key_use: Mutex::default(),
            pending_callbacks: Mutex::default(),
            callbacks_counted: Mutex::default(),
            console_base: std::sync::OnceLock::new(),
        });
        *inner
            .pending_callbacks
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = callbacks::count_by_org(&inner.db)?;
        // The flusher holds no strong reference: when the last handle drops,
        // sled closes and releases the data dir's lock at once.
        tokio::spawn(flusher(Arc::downgrade(&inner), flush_rx, on_durable));
        tokio::spawn(checkpointer(Arc::downgrade(&inner), inner.db.backlog()));
        Ok(Store { inner })
    }

    fn get<T: DeserializeOwned>(&self, k: &[u8]) -> Result<Option<T>, StoreError> {
        decode(self.inner.db.get(k)?)
    }

    fn get_u64(&self, k: &[u8]) -> Result<Option<u64>, StoreError> {
        Ok(self.inner.db.get(k)?.map(|v| be_u64(&v)))
    }

    fn scan<T: DeserializeOwned>(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        keep: impl Fn(&T) -> bool,
    ) -> Result<Vec<T>, StoreError> {
        let json = |v: &[u8]| serde_json::from_slice(v).map_err(StoreError::from);
        self.scan_with(prefix, after, limit, json, keep)
    }

    /// Records under `prefix` after key `after`, decoded by `decode`, those
    /// `keep` accepts, at most `limit`.
    fn scan_with<T>(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        decode: impl Fn(&[u8]) -> Result<T, StoreError>,
        keep: impl Fn(&T) -> bool,
    ) -> Result<Vec<T>, StoreError> {
        let mut out = Vec::new();
        let iter = match after {
            Some(a) if a.as_bytes() >= prefix.as_bytes() => {
                let mut start = a.as_bytes().to_vec();
                start.push(0);
                self.inner.db.range(start..)
            }
            _ => self.inner.db.range(prefix.as_bytes()..),
        };
        for kv in iter {
            let (k, v) = kv?;
            if !k.starts_with(prefix.as_bytes()) || out.len() >= limit {
                break;
            }
            let rec = decode(&v)?;
            if keep(&rec) {
                out.push(rec);
            }
        }
        Ok(out)
    }

    /// Runs `f` as one atomic, durable write and returns its result.
    ///
    /// `f` reads through the [`WriteTx`] and stages writes and events; when it
    /// returns `Ok`, everything staged is applied atomically, and this returns
    /// after the sync that makes it durable (shared with concurrent writers).
    /// When `f` returns `Err`, nothing is written. Events get consecutive
    /// `seq` numbers of `org` and reach `on_durable` after the sync.
    pub async fn write<T, E>(
        &self,
        org: &str,
        f: impl FnOnce(&mut WriteTx<'_>) -> Result<T, E>,
    ) -> Result<T, E>
    where
        E: From<StoreError>,
    {
        let done = {
            let _guard = self
                .inner
                .write_lock
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            // PostgreSQL: every node's writes wait for this one (the
            // cluster-wide lock), rolled back if `f` or a read fails.
            let shared = self.inner.db.begin()?;
            let mut tx = WriteTx {
                store: self,
                org,
                batch: engine::Batch::default(),
                events: Vec::new(),
                last_seq: None,
                orgs_changed: false,
                bots_changed: false,
                staged_users: HashMap::new(),
                track_users: false,
                closed_seq: None,
                callbacks_queued: 0,
                user_changes: Vec::new(),
            };
            let out = f(&mut tx)?;
            let WriteTx {
                mut batch,
                events,
                last_seq,
                orgs_changed,
                bots_changed,
                callbacks_queued,
                user_changes,
                ..
            } = tx;
            if let Some(seq) = last_seq {
                batch.insert(key(&["seq", org]), &seq.to_be_bytes());
                // The first write of an organization since open: what its
                // log held before is durable.
                let known = self
                    .inner
                    .durable
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .contains_key(org);
                if !known {
                    let before = self.last_seq(org)?;
                    self.inner
                        .durable
                        .write()
                        .unwrap_or_else(|p| p.into_inner())
                        .entry(org.to_string())
                        .or_insert(before);
                }
            }
            match shared {
                Some(t) => t.commit(batch)?,
                None => self.inner.db.apply_batch(batch)?,
            }
            if !user_changes.is_empty() {
                self.users_changed(user_changes);
            }
            if callbacks_queued > 0 {
                *self
                    .inner
                    .pending_callbacks
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(org.to_string())
                    .or_default() += callbacks_queued;
            }
            if bots_changed {
                self.bots_changed();
            }
            if orgs_changed {
                let mut cache = self.org_cache_write();
                cache.generation += 1;
                cache.map.clear();
                cache.raw.clear();
            }
            let (done_tx, done_rx) = oneshot::channel();
            // Sent under the lock: the flusher sees batches in commit order.
            self.inner
                .flush_tx
                .send(Pending {
                    events,
                    done: done_tx,
                })
                .map_err(|_| StoreError::Closed)?;
            (out, done_rx)
        };
        let (out, done_rx) = done;
        match done_rx.await {
            Ok(Ok(())) => Ok(out),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "flush failed");
                Err(StoreError::Closed.into())
            }
            Err(_) => Err(StoreError::Closed.into()),
        }
    }

    /// Flushes everything to disk: a checkpoint, which leaves the
    /// write-ahead log empty (used at shutdown).
    pub async fn flush(&self) -> Result<(), StoreError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.db.checkpoint())
            .await
            .map_err(|_| StoreError::Closed)?
    }

    /// Group-commit counters since start: `(flushes, acknowledged writes)`.
    /// Their ratio is how many writes shared each flush.
    pub fn commit_stats(&self) -> (u64, u64) {
        (
            self.inner.flushes.load(Ordering::Relaxed),
            self.inner.flushed_writes.load(Ordering::Relaxed),
        )
    }

    /// Takes or renews lease `name` (a cluster-wide job) for `holder` for
    /// `ttl` from now; `false` while another holder's lease runs. The
    /// embedded store has one process: always `true`. Blocking (a round
    /// trip on PostgreSQL).
    pub fn lease(
        &self,
        name: &str,
        holder: &str,
        ttl: std::time::Duration,
    ) -> Result<bool, StoreError> {
        self.lease_on(name, holder, ttl, true)
    }

    /// Claims `name` for `holder` for `ttl` (a request in progress that
    /// other nodes must not start too, e.g. an idempotency key); `false`
    /// while another holder's claim runs. Give it up with
    /// [`Store::release`]. The embedded store has one process: `true`.
    pub fn claim(
        &self,
        name: &str,
        holder: &str,
        ttl: std::time::Duration,
    ) -> Result<bool, StoreError> {
        self.lease_on(name, holder, ttl, false)
    }

    /// [`Store::lease`] (`urgent`: on its own connection) or
    /// [`Store::claim`].
    fn lease_on(
        &self,
        name: &str,
        holder: &str,
        ttl: std::time::Duration,
        urgent: bool,
    ) -> Result<bool, StoreError> {
        match &self.inner.db {
            kv::Kv::Local(_) => Ok(true),
            kv::Kv::Pg(p) => p.lease(name, holder, ttl.as_secs_f64() * 1000.0, urgent),
        }
    }

    /// Gives up lease `name` if `holder` has it.
    pub fn release(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        match &self.inner.db {
            kv::Kv::Local(_) => Ok(()),
            kv::Kv::Pg(p) => p.release(name, holder),
        }
    }

    /// Takes one unit of cluster-wide rate limit `key` (GCRA: one unit per
    /// `interval`, `tolerance` of burst; PostgreSQL's clock). `Ok(ahead)`:
    /// taken, the key's schedule runs `ahead` past now; `Err(wait)`:
    /// refused until then. The embedded store has no shared limits:
    /// [`StoreError::Backend`] (callers use their in-process limiter).
    /// Blocking (a round trip).
    pub fn take_rate(
        &self,
        key: &str,
        interval: std::time::Duration,
        tolerance: std::time::Duration,
    ) -> Result<Result<std::time::Duration, std::time::Duration>, StoreError> {
        let kv::Kv::Pg(p) = &self.inner.db else {
            return Err(StoreError::Backend("no shared rate limits".into()));
        };
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
        let d = |ms: f64| std::time::Duration::from_secs_f64(ms.max(0.0) / 1000.0);
        Ok(match p.gcra(key, ms(interval), ms(tolerance))? {
            Ok(ahead) => Ok(d(ahead)),
            Err(wait) => Err(d(wait)),
        })
    }

    /// Drops shared rate-limit state of keys whose budget is full again.
    pub fn shrink_rates(&self) -> Result<(), StoreError> {
        match &self.inner.db {
            kv::Kv::Pg(p) => p.shrink_rates().map(|_| ()),
            kv::Kv::Local(_) => Ok(()),
        }
    }

    /// Whether several nodes may share this store (PostgreSQL).
    pub fn shared(&self) -> bool {
        self.inner.db.shared()
    }

    /// Whether the store answers reads (`GET /healthz`).
    pub fn healthy(&self) -> bool {
        self.inner.db.get(b"org/").is_ok()
    }
}

/// One write in progress: reads see committed state, writes are staged and
/// applied atomically when [`Store::write`]'s closure returns `Ok`.
pub struct WriteTx<'a> {
    store: &'a Store,
    org: &'a str,
    batch: engine::Batch,
    events: Vec<Event>,
    last_seq: Option<u64>,
    /// An organization record or a token changed (the token cache is stale).
    orgs_changed: bool,
    /// A bot was staged (the bot cache is stale).
    bots_changed: bool,
    /// Users staged by this write, so that it reads its own writes
    /// ([`WriteTx::staged_user`]).
    staged_users: HashMap<String, crate::model::UserRecord>,
    track_users: bool,
    /// The last close sequence this write assigned.
    closed_seq: Option<u64>,
    /// Delivery callbacks this write queues.
    callbacks_queued: usize,
    /// User records this write stages (`None`: removed), for the cache.
    user_changes: Vec<(Vec<u8>, Option<sled::IVec>)>,
}

impl WriteTx<'_> {
    /// The committed store, for reads.
    pub fn store(&self) -> &Store {
        self.store
    }

    /// The organization this write is for.
    pub fn org(&self) -> &str {
        self.org
    }
}

/// How many times the flusher yields to gather more batches before a flush.
const GATHER_ROUNDS: usize = 8;

/// Group commit: takes every batch committed since the last flush, flushes
/// once, then releases the events (in order) and the waiters.
async fn flusher(
    inner: std::sync::Weak<Inner>,
    mut rx: mpsc::UnboundedReceiver<Pending>,
    on_durable: OnDurable,
) {
    let mut group = Vec::new();
    while rx.recv_many(&mut group, 4096).await > 0 {
        // Let request handlers that are ready run first: what they commit
        // joins this flush rather than waiting for the next one. On an idle
        // runtime a yield returns at once, so a lone write is not delayed.
        for _ in 0..GATHER_ROUNDS {
            tokio::task::yield_now().await;
            let before = group.len();
            while let Ok(p) = rx.try_recv() {
                group.push(p);
            }
            if group.len() == before {
                break;
            }
        }
        let res = match inner.upgrade() {
            Some(inner) => {
                inner.flushes.fetch_add(1, Ordering::Relaxed);
                inner
                    .flushed_writes
                    .fetch_add(group.len() as u64, Ordering::Relaxed);
                tokio::task::spawn_blocking(move || inner.db.sync())
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r.map_err(|e| e.to_string()))
            }
            None => Err("store closed".to_string()),
        };
        if let Err(e) = &res {
            tracing::error!(error = %e, batches = group.len(), "group flush failed");
        } else {
            tracing::trace!(batches = group.len(), "group flush");
        }
        if let (Ok(()), Some(inner)) = (&res, inner.upgrade()) {
            let mut durable = inner.durable.write().unwrap_or_else(|p| p.into_inner());
            for ev in group.iter().flat_map(|p| &p.events) {
                let d = durable.entry(ev.org.clone()).or_default();
                *d = (*d).max(ev.seq);
            }
        }
        for p in group.drain(..) {
            if res.is_ok() {
                for ev in p.events {
                    on_durable(ev);
                }
            }
            let _ = p.done.send(res.clone());
        }
    }
}

/// Checkpoints the engine every [`engine::CHECKPOINT_MS`] (flushing sled
/// and dropping the write-ahead log it covers), and syncs it whenever
/// [`engine::SYNC_BACKLOG_OPS`] operations wait, until the store is dropped.
async fn checkpointer(inner: std::sync::Weak<Inner>, backlog: Arc<tokio::sync::Notify>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(engine::CHECKPOINT_MS));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        let checkpoint = tokio::select! {
            _ = tick.tick() => true,
            _ = backlog.notified() => false,
        };
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let done = tokio::task::spawn_blocking(move || match checkpoint {
            true => inner.db.checkpoint(),
            false => inner.db.sync(),
        });
        match done.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, checkpoint, "background sync failed"),
            Err(_) => return,
        }
    }
}

impl From<StoreError> for crate::error::ApiError {
    fn from(e: StoreError) -> crate::error::ApiError {
        tracing::error!(error = %e, "store failure");
        crate::error::ApiError::internal()
    }
}
