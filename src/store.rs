//! The embedded store: the only module that imports sled.
//!
//! Everything lives in one sled tree under organization-scoped key prefixes,
//! so that one [`sled::Batch`] applies a change and the event it causes
//! atomically:
//!
//! | key | value |
//! |---|---|
//! | `org/{org}` | [`Org`] JSON |
//! | `tok/{sha256 hex}` | organization id |
//! | `seq/{org}` | last event `seq`, u64 big-endian |
//! | `bot/{org}/{botID:020}` | [`Bot`] JSON |
//! | `usr/{org}/{uid}` | [`UserRecord`]: `0x01`, u32 BE length, the user's JSON, the tags' JSON (older records: one JSON object) |
//! | `dat/{org}/{uid}` | custom user data (`SetUserData`) JSON |
//! | `tag/{org}/{lowercase name}` | [`Tag`] JSON |
//! | `evt/{org}/{seq:020}` | the event JSON, as sent |
//! | `eid/{org}/{eventId}` | the event's `seq`, u64 big-endian |
//! | `whk/{org}` | [`Webhook`] JSON |
//! | `dcur/{org}` | last `seq` queued for webhook delivery, u64 big-endian |
//! | `dlv/{org}/{seq:020}` | [`Delivery`], postcard (compact binary) |
//! | `dq/{org}/{due ms:020}/{seq:020}` | a pending attempt, due at that Unix ms; value: queued ms |
//! | `wab/{botID:020}` | organization of a WhatsApp bot (inbound URLs carry only the botID) |
//! | `msg/{org}/{mid}` | [`Message`] JSON |
//! | `wam/{org}/{wamid}` | `mid` of the provider's message id (dedupe, statuses) |
//! | `cnv/{org}/{uid}/{dt ms:020}/{mid}` | empty: the user's conversation in time order |
//! | `wau/{org}/{uid}` | [`WaUserState`] JSON |
//! | `agt/{org}/{lowercase email}` | [`Agent`] JSON; `agc/{org}` the last `aid` |
//! | `idm/{org}/{key}` | [`IdempotentReply`] JSON |
//! | `tpl/{org}/{botID:020}` | [`TemplateCache`] JSON |
//! | `cbq/{due ms:020}/{id}` | a [`CallbackJob`] due at that Unix ms |
//! | `cbf/{id}` | a [`CallbackJob`] that exhausted its retries (dead letter) |
//!
//! Invariants: writes are serialised by one mutex held only around in-memory
//! sled operations (never across an await), which makes each organization's
//! `seq` gap-free and the log ordered. [`Store::write`] returns only after the
//! change is flushed to disk; concurrent writers share one flush (group
//! commit), and events are handed to the bus in `seq` order after the flush
//! that made them durable, never before.
//!
//! Delivery bookkeeping (`dcur`, `dlv`, `dq`) is written in checkpoints by
//! the webhook worker, without waiting for a flush: losing the last of them
//! in a crash only repeats deliveries (at least once), it never skips one,
//! because the cursor and the queue move in the same batch and the event
//! log itself is always durable first.

use crate::model::{
    Agent, Bot, CallbackJob, Delivery, DeliveryStatus, Event, IdempotentReply, Message, Org, Tag,
    TemplateCache, User, UserRecord, WaUserState, Webhook,
};
use bytes::Bytes;
use serde::{de::DeserializeOwned, Serialize};
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
    /// The flusher stopped (the store is shutting down).
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

struct Inner {
    db: sled::Db,
    write_lock: Mutex<()>,
    flush_tx: mpsc::UnboundedSender<Pending>,
    flushes: AtomicU64,
    flushed_writes: AtomicU64,
    /// Organizations by token hash, as read: every command authenticates,
    /// so this spares two reads and a decode per command. Emptied by every
    /// write that changes an organization or a token.
    orgs_by_token: RwLock<OrgCache>,
}

/// Read-through cache of `tok/` + `org/`. A read fills it only if no write
/// invalidated it since the read began (`generation`), so it never keeps a
/// record older than the tree. Holds at most one entry per organization:
/// only tokens that resolve are kept.
#[derive(Default)]
struct OrgCache {
    generation: u64,
    map: HashMap<String, Arc<Org>>,
}

/// A committed batch waiting for its flush: its events and its waiter.
struct Pending {
    events: Vec<Event>,
    done: oneshot::Sender<Result<(), String>>,
}

fn key(parts: &[&str]) -> Vec<u8> {
    parts.join("/").into_bytes()
}

/// `prefix/org` then `/` and each number as 20 zero-padded decimal digits:
/// keys that sort as their numbers do (`dlv/{org}/{seq:020}`). Written by
/// hand: `format!`'s padding was a tenth of a webhook delivery's cost.
fn num_key(prefix: &str, org: &str, nums: &[u64]) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + org.len() + 1 + nums.len() * 21);
    k.extend_from_slice(prefix.as_bytes());
    k.push(b'/');
    k.extend_from_slice(org.as_bytes());
    for &n in nums {
        let mut digits = [b'0'; 20];
        let mut n = n;
        for d in digits.iter_mut().rev() {
            *d = b'0' + (n % 10) as u8;
            n /= 10;
        }
        k.push(b'/');
        k.extend_from_slice(&digits);
    }
    k
}

fn decode<T: DeserializeOwned>(v: Option<sled::IVec>) -> Result<Option<T>, StoreError> {
    v.map(|v| serde_json::from_slice(&v))
        .transpose()
        .map_err(Into::into)
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("records serialise")
}

impl Store {
    /// Opens (or creates) the store under `dir` and starts its flusher task.
    /// `on_durable` receives each event after the flush that made it durable.
    ///
    /// Errors: [`StoreError::Locked`] when another process has `dir` open.
    /// Must be called inside a tokio runtime.
    pub fn open(dir: &Path, on_durable: OnDurable) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Sled(e.into()))?;
        let db = sled::Config::new()
            .path(dir.join("db"))
            // Acknowledged writes are flushed by the group commit; the timer
            // only bounds how much delivery bookkeeping a crash can forget.
            .flush_every_ms(Some(1000))
            .open()
            .map_err(|e| match e {
                sled::Error::Io(io) if io.kind() == std::io::ErrorKind::WouldBlock => {
                    StoreError::Locked(dir.to_path_buf())
                }
                sled::Error::Io(io) if io.to_string().contains("lock") => {
                    StoreError::Locked(dir.to_path_buf())
                }
                e => StoreError::Sled(e),
            })?;
        let (flush_tx, flush_rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            db,
            write_lock: Mutex::new(()),
            flush_tx,
            flushes: AtomicU64::new(0),
            flushed_writes: AtomicU64::new(0),
            orgs_by_token: RwLock::default(),
        });
        // The flusher holds no strong reference: when the last handle drops,
        // sled closes and releases the data dir's lock at once.
        tokio::spawn(flusher(Arc::downgrade(&inner), flush_rx, on_durable));
        Ok(Store { inner })
    }

    fn get<T: DeserializeOwned>(&self, k: &[u8]) -> Result<Option<T>, StoreError> {
        decode(self.inner.db.get(k)?)
    }

    fn get_u64(&self, k: &[u8]) -> Result<Option<u64>, StoreError> {
        Ok(self.inner.db.get(k)?.map(|v| be_u64(&v)))
    }

    /// Whether no organization exists yet (first start).
    pub fn is_empty(&self) -> Result<bool, StoreError> {
        Ok(self
            .inner
            .db
            .scan_prefix(b"org/")
            .next()
            .transpose()?
            .is_none())
    }

    /// The organization whose token hashes to `token_sha256` (hex), if any;
    /// shared with the cache, so a hit copies nothing.
    pub fn org_by_token(&self, token_sha256: &str) -> Result<Option<Arc<Org>>, StoreError> {
        let generation = {
            let cache = self.org_cache_read();
            if let Some(org) = cache.map.get(token_sha256) {
                return Ok(Some(org.clone()));
            }
            cache.generation
        };
        let Some(id) = self.inner.db.get(key(&["tok", token_sha256]))? else {
            return Ok(None);
        };
        let org: Option<Arc<Org>> = self
            .get::<Org>(&key(&["org", &String::from_utf8_lossy(&id)]))?
            .map(Arc::new);
        if let Some(org) = &org {
            let mut cache = self.org_cache_write();
            if cache.generation == generation {
                cache.map.insert(token_sha256.to_string(), org.clone());
            }
        }
        Ok(org)
    }

    fn org_cache_read(&self) -> std::sync::RwLockReadGuard<'_, OrgCache> {
        let lock = &self.inner.orgs_by_token;
        lock.read().unwrap_or_else(|p| p.into_inner())
    }

    fn org_cache_write(&self) -> std::sync::RwLockWriteGuard<'_, OrgCache> {
        let lock = &self.inner.orgs_by_token;
        lock.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The organization `id`, if it exists.
    pub fn org(&self, id: &str) -> Result<Option<Org>, StoreError> {
        self.get(&key(&["org", id]))
    }

    /// The bot `id` of organization `org`.
    pub fn bot(&self, org: &str, id: u64) -> Result<Option<Bot>, StoreError> {
        self.get(&bot_key(org, id))
    }

    /// Every bot of `org`, by `botID`.
    pub fn bots(&self, org: &str) -> Result<Vec<Bot>, StoreError> {
        self.scan(&format!("bot/{org}/"), None, usize::MAX, |_: &Bot| true)
    }

    /// The user `uid` of `org`, with its tags.
    pub fn user(&self, org: &str, uid: &str) -> Result<Option<UserRecord>, StoreError> {
        self.inner
            .db
            .get(key(&["usr", org, uid]))?
            .map(|v| decode_user(&v))
            .transpose()
    }

    /// The user object of `uid` as stored: the JSON text of its [`User`]
    /// (tags left out), for replies that pass it on unchanged (`GetUser`)
    /// without a decode into a [`User`] and an encode back.
    pub fn user_json(&self, org: &str, uid: &str) -> Result<Option<Bytes>, StoreError> {
        let Some(v) = self.inner.db.get(key(&["usr", org, uid]))? else {
            return Ok(None);
        };
        if let Some((user, _)) = split_user(&v) {
            return Ok(Some(Bytes::copy_from_slice(user)));
        }
        let rec = decode_user(&v)?;
        Ok(Some(Bytes::from(encode(&rec.user))))
    }

    /// The custom data of user `uid` (`SetUserData`), if any was set.
    pub fn user_data(&self, org: &str, uid: &str) -> Result<Option<serde_json::Value>, StoreError> {
        self.get(&key(&["dat", org, uid]))
    }

    /// The tag whose case-folded name is `tag_key`.
    pub fn tag(&self, org: &str, tag_key: &str) -> Result<Option<Tag>, StoreError> {
        self.get(&key(&["tag", org, tag_key]))
    }

    /// Users of `org` in uid order, restricted to bot `bot_id` when given,
    /// starting after uid `after`, keeping those `keep` accepts, at most `limit`.
    pub fn users(
        &self,
        org: &str,
        bot_id: Option<u64>,
        after: Option<&str>,
        limit: usize,
        keep: impl Fn(&User) -> bool,
    ) -> Result<Vec<User>, StoreError> {
        let prefix = match bot_id {
            Some(b) => format!("usr/{org}/{b}-"),
            None => format!("usr/{org}/"),
        };
        let after = after.map(|uid| format!("usr/{org}/{uid}"));
        let recs = self.scan_with(
            &prefix,
            after.as_deref(),
            limit,
            decode_user,
            |r: &UserRecord| keep(&r.user),
        )?;
        Ok(recs.into_iter().map(|r| r.user).collect())
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
    /// after the flush that makes it durable (shared with concurrent writers).
    /// When `f` returns `Err`, nothing is written. Events get consecutive
    /// `seq` numbers of `org` and reach `on_durable` after the flush.
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
            let mut tx = WriteTx {
                store: self,
                org,
                batch: sled::Batch::default(),
                events: Vec::new(),
                last_seq: None,
                orgs_changed: false,
            };
            let out = f(&mut tx)?;
            let WriteTx {
                mut batch,
                events,
                last_seq,
                orgs_changed,
                ..
            } = tx;
            if let Some(seq) = last_seq {
                batch.insert(key(&["seq", org]), &seq.to_be_bytes());
            }
            self.inner.db.apply_batch(batch).map_err(StoreError::from)?;
            if orgs_changed {
                let mut cache = self.org_cache_write();
                cache.generation += 1;
                cache.map.clear();
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

    /// Creates organization `org` whose token hashes to `token_sha256` (hex).
    pub async fn create_org(&self, org: &Org) -> Result<(), StoreError> {
        self.write(&org.id, |tx| {
            tx.put_org(org);
            tx.batch
                .insert(key(&["tok", &org.token_sha256]), org.id.as_bytes());
            Ok::<_, StoreError>(())
        })
        .await
    }

    /// Replaces the token of `org_id` by one hashing to `new_sha256`; the old
    /// token stops resolving in the same atomic write. Returns false when the
    /// organization does not exist.
    pub async fn replace_token(&self, org_id: &str, new_sha256: &str) -> Result<bool, StoreError> {
        self.write(org_id, |tx| {
            let Some(mut org) = tx.store.org(org_id)? else {
                return Ok(false);
            };
            tx.batch.remove(key(&["tok", &org.token_sha256]));
            org.token_sha256 = new_sha256.to_string();
            tx.put_org(&org);
            tx.batch
                .insert(key(&["tok", new_sha256]), org_id.as_bytes());
            Ok(true)
        })
        .await
    }

    /// The webhook of `org`, if one is set.
    pub fn webhook(&self, org: &str) -> Result<Option<Webhook>, StoreError> {
        self.get(&key(&["whk", org]))
    }

    /// Ids of every organization with a webhook (to start their workers).
    pub fn orgs_with_webhooks(&self) -> Result<Vec<String>, StoreError> {
        let mut out = Vec::new();
        for kv in self.inner.db.scan_prefix(b"whk/") {
            let (k, _) = kv?;
            out.push(String::from_utf8_lossy(&k[4..]).into_owned());
        }
        Ok(out)
    }

    /// Up to `limit` events of `org` with `seq > after`, in order.
    pub fn events_after(
        &self,
        org: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        let start = num_key("evt", org, &[after.saturating_add(1)]);
        let prefix = format!("evt/{org}/");
        let mut out = Vec::new();
        for kv in self.inner.db.range(start..) {
            let (k, v) = kv?;
            if !k.starts_with(prefix.as_bytes()) || out.len() >= limit {
                break;
            }
            let seq = std::str::from_utf8(&k[prefix.len()..])
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            out.push(Event {
                org: org.to_string(),
                seq,
                json: Bytes::copy_from_slice(&v),
            });
        }
        Ok(out)
    }

    /// The event `seq` of `org`, as sent.
    pub fn event(&self, org: &str, seq: u64) -> Result<Option<Bytes>, StoreError> {
        Ok(self
            .inner
            .db
            .get(num_key("evt", org, &[seq]))?
            .map(|v| Bytes::copy_from_slice(&v)))
    }

    /// The `seq` of the event `event_id` of `org`.
    pub fn seq_of_event(&self, org: &str, event_id: &str) -> Result<Option<u64>, StoreError> {
        self.get_u64(&key(&["eid", org, event_id]))
    }

    /// The last `seq` of `org` queued for delivery (0: none).
    pub fn delivery_cursor(&self, org: &str) -> Result<u64, StoreError> {
        Ok(self.get_u64(&key(&["dcur", org]))?.unwrap_or(0))
    }

    /// The last `seq` of `org`'s event log (0: none).
    pub fn last_seq(&self, org: &str) -> Result<u64, StoreError> {
        Ok(self.get_u64(&key(&["seq", org]))?.unwrap_or(0))
    }

    /// Every pending attempt of `org` as last checkpointed, earliest first:
    /// `(due_ms, seq, queued_ms)`.
    pub fn pending_deliveries(&self, org: &str) -> Result<Vec<(i64, u64, i64)>, StoreError> {
        let prefix = format!("dq/{org}/");
        let n = prefix.len();
        self.inner
            .db
            .scan_prefix(prefix)
            .map(|kv| {
                let (k, v) = kv?;
                let rest = std::str::from_utf8(&k[n..]).unwrap_or("");
                let (due, seq) = rest.split_once('/').unwrap_or(("0", "0"));
                Ok((
                    due.parse().unwrap_or(0),
                    seq.parse().unwrap_or(0),
                    be_u64(&v) as i64,
                ))
            })
            .collect()
    }

    /// The delivery of event `seq` of `org`.
    pub fn delivery(&self, org: &str, seq: u64) -> Result<Option<Delivery>, StoreError> {
        self.inner
            .db
            .get(dlv_key(org, seq))?
            .map(|v| decode_delivery(&v))
            .transpose()
    }

    /// Writes a delivery checkpoint of `org` atomically: changed `records`,
    /// pending attempts to `add` (`(due_ms, seq, queued_ms)`) and to `remove`
    /// (`(due_ms, seq)`), and the delivery `cursor`.
    pub fn checkpoint_deliveries(
        &self,
        org: &str,
        records: &[Delivery],
        add: &[(i64, u64, i64)],
        remove: &[(i64, u64)],
        cursor: u64,
    ) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for d in records {
            batch.insert(dlv_key(org, d.seq), encode_delivery(d));
        }
        for (due, seq) in remove {
            batch.remove(dq_key(org, *due, *seq));
        }
        for (due, seq, queued) in add {
            batch.insert(dq_key(org, *due, *seq), &queued.to_be_bytes());
        }
        batch.insert(key(&["dcur", org]), &cursor.to_be_bytes());
        self.inner.db.apply_batch(batch)?;
        Ok(())
    }

    /// Deliveries of `org` with `since <= seq <= until`, in `seq` order,
    /// starting after `after`, keeping those of `status` when given, at most `limit`.
    pub fn deliveries(
        &self,
        org: &str,
        status: Option<DeliveryStatus>,
        since: u64,
        until: u64,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        let from = after.map_or(since, |a| a.saturating_add(1)).max(since);
        let prefix = format!("dlv/{org}/");
        let mut out = Vec::new();
        for kv in self.inner.db.range(dlv_key(org, from)..) {
            let (k, v) = kv?;
            if !k.starts_with(prefix.as_bytes()) || out.len() >= limit {
                break;
            }
            let d = decode_delivery(&v)?;
            if d.seq > until {
                break;
            }
            if status.is_none_or(|s| s == d.status) {
                out.push(d);
            }
        }
        Ok(out)
    }

    /// The organization owning WhatsApp bot `bot_id`.
    pub fn whatsapp_bot_org(&self, bot_id: u64) -> Result<Option<String>, StoreError> {
        Ok(self
            .inner
            .db
            .get(format!("wab/{bot_id:020}"))?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Every WhatsApp bot of every organization, as `(org, bot)`.
    pub fn whatsapp_bots(&self) -> Result<Vec<(String, Bot)>, StoreError> {
        let mut out = Vec::new();
        for kv in self.inner.db.scan_prefix(b"wab/") {
            let (k, org) = kv?;
            let id = std::str::from_utf8(&k[4..])
                .ok()
                .and_then(|s| s.parse().ok());
            let org = String::from_utf8_lossy(&org).into_owned();
            if let Some(bot) = id.map(|id| self.bot(&org, id)).transpose()?.flatten() {
                out.push((org, bot));
            }
        }
        Ok(out)
    }

    /// The message `mid` of `org`.
    pub fn message(&self, org: &str, mid: &str) -> Result<Option<Message>, StoreError> {
        self.get(&key(&["msg", org, mid]))
    }

    /// The `mid` of the provider message `wamid` of `org`.
    pub fn mid_of_wamid(&self, org: &str, wamid: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .inner
            .db
            .get(key(&["wam", org, wamid]))?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// The last `limit` messages of user `uid`, oldest first.
    pub fn conversation(
        &self,
        org: &str,
        uid: &str,
        limit: usize,
    ) -> Result<Vec<Message>, StoreError> {
        let prefix = format!("cnv/{org}/{uid}/");
        let mut mids = Vec::new();
        for kv in self.inner.db.scan_prefix(prefix.as_bytes()).rev() {
            let (k, _) = kv?;
            if mids.len() >= limit {
                break;
            }
            let rest = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
            if let Some((_, mid)) = rest.split_once('/') {
                mids.push(mid.to_string());
            }
        }
        let mut out = Vec::with_capacity(mids.len());
        for mid in mids.iter().rev() {
            if let Some(m) = self.message(org, mid)? {
                out.push(m);
            }
        }
        Ok(out)
    }

    /// The WhatsApp state of user `uid`.
    pub fn wa_state(&self, org: &str, uid: &str) -> Result<WaUserState, StoreError> {
        Ok(self.get(&key(&["wau", org, uid]))?.unwrap_or_default())
    }

    /// The agent with `email` (any case).
    pub fn agent(&self, org: &str, email: &str) -> Result<Option<Agent>, StoreError> {
        self.get(&key(&["agt", org, &email.to_lowercase()]))
    }

    /// Every agent of `org`, by email.
    pub fn agents(&self, org: &str) -> Result<Vec<Agent>, StoreError> {
        self.scan(&format!("agt/{org}/"), None, usize::MAX, |_: &Agent| true)
    }

    /// The reply kept under idempotency `key_` of `org`.
    pub fn idempotent(&self, org: &str, key_: &str) -> Result<Option<IdempotentReply>, StoreError> {
        self.get(&key(&["idm", org, key_]))
    }

    /// Removes idempotency records created before `before_ms`; returns how many.
    pub fn expire_idempotent(&self, before_ms: i64) -> Result<usize, StoreError> {
        let mut batch = sled::Batch::default();
        let mut n = 0;
        for kv in self.inner.db.scan_prefix(b"idm/") {
            let (k, v) = kv?;
            let rec: IdempotentReply = serde_json::from_slice(&v)?;
            if rec.created_ms < before_ms {
                batch.remove(k);
                n += 1;
            }
        }
        self.inner.db.apply_batch(batch)?;
        Ok(n)
    }

    /// The template cache of bot `bot_id`.
    pub fn templates(&self, org: &str, bot_id: u64) -> Result<Option<TemplateCache>, StoreError> {
        self.get(format!("tpl/{org}/{bot_id:020}").as_bytes())
    }

    /// Replaces the template cache of bot `bot_id`. A cache, not a record:
    /// it is written without waiting for a flush (a crash only re-syncs).
    pub fn put_templates(
        &self,
        org: &str,
        bot_id: u64,
        cache: &TemplateCache,
    ) -> Result<(), StoreError> {
        self.inner
            .db
            .insert(format!("tpl/{org}/{bot_id:020}"), encode(cache))?;
        Ok(())
    }

    /// Up to `limit` callbacks due at or before `now_ms`, earliest first, with
    /// their queue keys.
    pub fn due_callbacks(
        &self,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, CallbackJob)>, StoreError> {
        let end = format!("cbq/{:020}/~", now_ms.max(0));
        let mut out = Vec::new();
        for kv in self.inner.db.range(b"cbq/".to_vec()..end.into_bytes()) {
            let (k, v) = kv?;
            if out.len() >= limit {
                break;
            }
            out.push((k.to_vec(), serde_json::from_slice(&v)?));
        }
        Ok(out)
    }

    /// Unix ms when the earliest queued callback is due.
    pub fn next_callback_due(&self) -> Result<Option<i64>, StoreError> {
        Ok(self
            .inner
            .db
            .scan_prefix(b"cbq/")
            .next()
            .transpose()?
            .and_then(|(k, _)| {
                std::str::from_utf8(&k[4..24])
                    .ok()
                    .and_then(|s| s.parse().ok())
            }))
    }

    /// Queued callbacks and dead letters: `(queued, failed)`.
    pub fn callback_counts(&self) -> (usize, usize) {
        (
            self.inner.db.scan_prefix(b"cbq/").count(),
            self.inner.db.scan_prefix(b"cbf/").count(),
        )
    }

    /// Settles the callback at `queue_key`: delivered (`next` = None, `dead`
    /// = false), retried at `next` ms, or kept as a dead letter. Bookkeeping
    /// like the delivery checkpoints: applied atomically without waiting for
    /// a flush, since losing it in a crash only repeats the callback.
    pub fn settle_callback(
        &self,
        queue_key: &[u8],
        job: &CallbackJob,
        next: Option<i64>,
        dead: bool,
    ) -> Result<(), StoreError> {
        let id = String::from_utf8_lossy(&queue_key[25..]).into_owned();
        let mut batch = sled::Batch::default();
        batch.remove(queue_key);
        if let Some(due) = next {
            batch.insert(cbq_key(due, &id), encode(job));
        } else if dead {
            batch.insert(format!("cbf/{id}").into_bytes(), encode(job));
        }
        self.inner.db.apply_batch(batch)?;
        Ok(())
    }

    /// Flushes everything to disk (used at shutdown).
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.inner.db.flush_async().await?;
        Ok(())
    }

    /// Group-commit counters since start: `(flushes, acknowledged writes)`.
    /// Their ratio is how many writes shared each flush.
    pub fn commit_stats(&self) -> (u64, u64) {
        (
            self.inner.flushes.load(Ordering::Relaxed),
            self.inner.flushed_writes.load(Ordering::Relaxed),
        )
    }

    /// Whether the store answers reads (`GET /healthz`).
    pub fn healthy(&self) -> bool {
        self.inner.db.get(b"org/").is_ok()
    }
}

/// First byte of a user record in the framed layout (a JSON record starts
/// with `{`).
const USER_FRAME_V1: u8 = 1;

/// A user record: `0x01`, the length of the user's JSON (u32 big-endian),
/// the user's JSON, then the tags' JSON. The user's JSON stands alone so
/// that `GetUser` copies it into its reply as it is.
fn encode_user(rec: &UserRecord) -> Vec<u8> {
    let user = encode(&rec.user);
    let len = u32::try_from(user.len()).expect("a user record is far below 4 GiB");
    let mut out = Vec::with_capacity(5 + user.len() + 16);
    out.push(USER_FRAME_V1);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&user);
    serde_json::to_writer(&mut out, &rec.tags).expect("tags serialise");
    out
}

/// The user's JSON and the tags' JSON of a framed record; `None` for a
/// record in the older layout (one JSON object) or a malformed frame.
fn split_user(v: &[u8]) -> Option<(&[u8], &[u8])> {
    let (&version, rest) = v.split_first()?;
    if version != USER_FRAME_V1 || rest.len() < 4 {
        return None;
    }
    let (len, rest) = rest.split_at(4);
    let len = u32::from_be_bytes(len.try_into().ok()?) as usize;
    (len <= rest.len()).then(|| rest.split_at(len))
}

/// Decodes a user record in either layout.
fn decode_user(v: &[u8]) -> Result<UserRecord, StoreError> {
    match split_user(v) {
        Some((user, tags)) => Ok(UserRecord {
            user: serde_json::from_slice(user)?,
            tags: serde_json::from_slice(tags)?,
        }),
        None if v.first() == Some(&b'{') => Ok(serde_json::from_slice(v)?),
        None => Err(StoreError::Codec("malformed user record".into())),
    }
}

/// Delivery records are the most written records (one per event and
/// webhook), so they use a compact binary encoding (postcard) rather than
/// JSON: smaller values make every write of the tree cheaper.
fn encode_delivery(d: &Delivery) -> Vec<u8> {
    postcard::to_stdvec(d).expect("deliveries serialise")
}

fn decode_delivery(v: &[u8]) -> Result<Delivery, StoreError> {
    postcard::from_bytes(v).map_err(|e| StoreError::Codec(e.to_string()))
}

fn be_u64(v: &[u8]) -> u64 {
    u64::from_be_bytes(v.try_into().unwrap_or([0; 8]))
}

fn dlv_key(org: &str, seq: u64) -> Vec<u8> {
    num_key("dlv", org, &[seq])
}

fn dq_key(org: &str, due_ms: i64, seq: u64) -> Vec<u8> {
    num_key("dq", org, &[due_ms.max(0) as u64, seq])
}

fn cbq_key(due_ms: i64, id: &str) -> Vec<u8> {
    format!("cbq/{:020}/{id}", due_ms.max(0)).into_bytes()
}

fn bot_key(org: &str, id: u64) -> Vec<u8> {
    format!("bot/{org}/{id:020}").into_bytes()
}

/// One write in progress: reads see committed state, writes are staged and
/// applied atomically when [`Store::write`]'s closure returns `Ok`.
pub struct WriteTx<'a> {
    store: &'a Store,
    org: &'a str,
    batch: sled::Batch,
    events: Vec<Event>,
    last_seq: Option<u64>,
    /// An organization record or a token changed (the token cache is stale).
    orgs_changed: bool,
}

impl WriteTx<'_> {
    /// The committed store, for reads.
    pub fn store(&self) -> &Store {
        self.store
    }

    /// Stages `user` (with its tags).
    pub fn put_user(&mut self, rec: &UserRecord) {
        self.batch
            .insert(key(&["usr", self.org, &rec.user.uid]), encode_user(rec));
    }

    /// Stages the removal of user `uid` and its custom data.
    pub fn delete_user(&mut self, uid: &str) {
        self.batch.remove(key(&["usr", self.org, uid]));
        self.batch.remove(key(&["dat", self.org, uid]));
    }

    /// Stages `data` as the custom data of `uid`.
    pub fn put_user_data(&mut self, uid: &str, data: &serde_json::Value) {
        self.batch
            .insert(key(&["dat", self.org, uid]), encode(data));
    }

    /// Stages `tag` under its case-folded name.
    pub fn put_tag(&mut self, tag: &Tag) {
        self.batch.insert(
            key(&["tag", self.org, &tag.name.to_lowercase()]),
            encode(tag),
        );
    }

    /// Stages `webhook` as the organization's webhook.
    pub fn put_webhook(&mut self, webhook: &Webhook) {
        self.batch.insert(key(&["whk", self.org]), encode(webhook));
    }

    /// Stages the delivery cursor: events after `seq` go to the webhook.
    pub fn set_delivery_cursor(&mut self, seq: u64) {
        self.batch
            .insert(key(&["dcur", self.org]), &seq.to_be_bytes());
    }

    /// Stages `org` (its own record: `disabled`, name).
    pub fn put_org(&mut self, org: &Org) {
        self.batch.insert(key(&["org", &org.id]), encode(org));
        self.orgs_changed = true;
    }

    /// Stages the removal of the organization's webhook.
    pub fn delete_webhook(&mut self) {
        self.batch.remove(key(&["whk", self.org]));
    }

    /// Stages `bot`; a WhatsApp bot is also indexed by its `botID` alone.
    pub fn put_bot(&mut self, bot: &Bot) {
        self.batch.insert(bot_key(self.org, bot.id), encode(bot));
        if bot.kind == crate::domain::BotKind::Whatsapp {
            self.batch.insert(
                format!("wab/{:020}", bot.id).into_bytes(),
                self.org.as_bytes(),
            );
        }
    }

    /// Stages `msg` with its conversation and provider-id indexes; `dt_ms`
    /// orders it in the conversation (unchanged for an update).
    pub fn put_message(&mut self, msg: &Message, dt_ms: i64) {
        let org = self.org;
        self.batch.insert(key(&["msg", org, &msg.mid]), encode(msg));
        self.batch.insert(
            format!("cnv/{org}/{}/{:020}/{}", msg.uid, dt_ms.max(0), msg.mid).into_bytes(),
            &[][..],
        );
        if let Some(w) = &msg.wamid {
            self.batch.insert(key(&["wam", org, w]), msg.mid.as_bytes());
        }
    }

    /// Stages the WhatsApp state of `uid`.
    pub fn put_wa_state(&mut self, uid: &str, state: &WaUserState) {
        self.batch
            .insert(key(&["wau", self.org, uid]), encode(state));
    }

    /// Stages `agent` (a new one takes its `aid` from [`WriteTx::next_aid`]).
    pub fn put_agent(&mut self, agent: &Agent) {
        self.batch.insert(
            key(&["agt", self.org, &agent.email.to_lowercase()]),
            encode(agent),
        );
    }

    /// Allocates the next agent id of the organization (1, 2, …).
    pub fn next_aid(&mut self) -> Result<u64, StoreError> {
        let aid = self.store.get_u64(&key(&["agc", self.org]))?.unwrap_or(0) + 1;
        self.batch
            .insert(key(&["agc", self.org]), &aid.to_be_bytes());
        Ok(aid)
    }

    /// Stages `reply` under idempotency key `key_`.
    pub fn put_idempotent(&mut self, key_: &str, reply: &IdempotentReply) {
        self.batch
            .insert(key(&["idm", self.org, key_]), encode(reply));
    }

    /// Stages the removal of idempotency key `key_`.
    pub fn forget_idempotent(&mut self, key_: &str) {
        self.batch.remove(key(&["idm", self.org, key_]));
    }

    /// Stages a callback, due at `due_ms`, in the durable outbox.
    pub fn queue_callback(&mut self, job: &CallbackJob, due_ms: i64) {
        let id = uuid::Uuid::now_v7().simple().to_string();
        self.batch.insert(cbq_key(due_ms, &id), encode(job));
    }

    /// Appends an event to the organization's log: `body` (an object with
    /// `cmd`, `ok`, and `data` or `uid`) gets the extension fields `seq` (next
    /// in the organization) and `eventId` (a UUIDv7, `evt_` + 32 hex), and is
    /// serialised once.
    pub fn emit(
        &mut self,
        mut body: serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), StoreError> {
        let seq = match self.last_seq {
            Some(s) => s + 1,
            None => self.store.last_seq(self.org)? + 1,
        };
        self.last_seq = Some(seq);
        body.insert("seq".into(), seq.into());
        let event_id = format!("evt_{}", uuid::Uuid::now_v7().simple());
        self.batch
            .insert(key(&["eid", self.org, &event_id]), &seq.to_be_bytes());
        body.insert("eventId".into(), event_id.into());
        let json = Bytes::from(serde_json::to_vec(&body)?);
        self.batch
            .insert(num_key("evt", self.org, &[seq]), json.as_ref());
        self.events.push(Event {
            org: self.org.to_string(),
            seq,
            json,
        });
        Ok(())
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
                let res = inner.db.flush_async().await;
                inner.flushes.fetch_add(1, Ordering::Relaxed);
                inner
                    .flushed_writes
                    .fetch_add(group.len() as u64, Ordering::Relaxed);
                res.map(|_| ()).map_err(|e| e.to_string())
            }
            None => Err("store closed".to_string()),
        };
        if let Err(e) = &res {
            tracing::error!(error = %e, batches = group.len(), "group flush failed");
        } else {
            tracing::trace!(batches = group.len(), "group flush");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_keys_are_zero_padded_and_sort_as_numbers() {
        for n in [0, 7, 1_000, u64::MAX] {
            assert_eq!(
                num_key("dlv", "o1", &[n]),
                format!("dlv/o1/{n:020}").into_bytes()
            );
        }
        assert_eq!(
            num_key("dq", "o", &[5, 12]),
            format!("dq/o/{:020}/{:020}", 5, 12).into_bytes()
        );
        assert!(num_key("evt", "o", &[9]) < num_key("evt", "o", &[10]));
    }

    fn record(name: &str, tags: &[&str]) -> UserRecord {
        UserRecord {
            user: User {
                uid: "3941-wa3-447922029419".into(),
                name: name.into(),
                first_name: name.into(),
                last_name: String::new(),
                email: String::new(),
                phone: "+447922029419".into(),
                bot: "WA3".into(),
                bot_id: 3941,
                lang: "en".into(),
                created: "2026-11-22T01:14:04.233Z".into(),
                notes: "\u{1}\"\\,\"tags\":[\"x\"]}".into(),
                url: String::new(),
            },
            tags: tags.iter().map(|t| t.to_string()).collect(),
        }
    }

    #[test]
    fn user_records_round_trip_and_pass_their_user_json_on() {
        for rec in [
            record("Billy Bob", &[]),
            record("Zoë \"Z\" \\ 😀", &["VIP", "\",\"user\":{", ""]),
        ] {
            let framed = encode_user(&rec);
            let back = decode_user(&framed).unwrap();
            assert_eq!((back.user, back.tags), (rec.user.clone(), rec.tags.clone()));
            let (user, _) = split_user(&framed).unwrap();
            assert_eq!(user, encode(&rec.user).as_slice());
            // Records written before the framed layout still read.
            let legacy = encode(&rec);
            assert!(split_user(&legacy).is_none());
            let back = decode_user(&legacy).unwrap();
            assert_eq!((back.user, back.tags), (rec.user, rec.tags));
        }
        assert!(decode_user(&[USER_FRAME_V1, 0, 0, 1, 0, b'{']).is_err());
        assert!(decode_user(b"").is_err());
    }
}
