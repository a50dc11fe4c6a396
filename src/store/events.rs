//! The per-organization event log (`evt/`, `eid/`, `seq/`): every event
//! gets the next gap-free `seq` of its organization and an `eventId`, in the
//! same atomic batch as the change that caused it.

use super::codec::{key, num_key};
use super::{Store, StoreError, WriteTx};
use crate::model::Event;
use bytes::Bytes;

impl Store {
    /// The last `seq` of `org`'s event log (0: none).
    pub fn last_seq(&self, org: &str) -> Result<u64, StoreError> {
        Ok(self.get_u64(&key(&["seq", org]))?.unwrap_or(0))
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
}

impl Store {
    /// The last `seq` of `org` known durable: events up to it may be
    /// replayed (events after it are committed but not yet flushed).
    pub fn durable_seq(&self, org: &str) -> Result<u64, StoreError> {
        if self.inner.db.shared() {
            // Committed is durable, whichever node committed it.
            return self.last_seq(org);
        }
        let known = self
            .inner
            .durable
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(org)
            .copied();
        match known {
            Some(s) => Ok(s),
            None => self.last_seq(org),
        }
    }

    /// The epoch of `org`'s log: made (and kept) the first time it is asked
    /// for. A new data dir has new epochs; a client holding another epoch
    /// cannot resume.
    pub fn epoch(&self, org: &str) -> Result<String, StoreError> {
        let k = key(&["epo", org]);
        if let Some(v) = self.inner.db.get(&k)? {
            return Ok(String::from_utf8_lossy(&v).into_owned());
        }
        let fresh = new_epoch();
        let kept = self.inner.db.insert_new(&k, fresh.as_bytes())?;
        Ok(String::from_utf8_lossy(&kept).into_owned())
    }

    /// The oldest `seq` of `org` still in the log (1 when nothing was trimmed).
    pub fn oldest_seq(&self, org: &str) -> Result<u64, StoreError> {
        Ok(self.get_u64(&key(&["old", org]))?.unwrap_or(1))
    }

    /// Drops the events of `org` with `seq` below `keep_from` (at most
    /// `max` of them, oldest first) and their `eventId` index; returns how
    /// many. Bookkeeping: applied without waiting for a flush (a crash only
    /// trims again).
    pub fn trim_events(&self, org: &str, keep_from: u64, max: usize) -> Result<usize, StoreError> {
        let oldest = self.oldest_seq(org)?;
        if keep_from <= oldest {
            return Ok(0);
        }
        let mut batch = super::engine::Batch::default();
        let mut n = 0;
        let mut next = oldest;
        for e in self.events_after(org, oldest.saturating_sub(1), max)? {
            if e.seq >= keep_from {
                break;
            }
            batch.remove(num_key("evt", org, &[e.seq]));
            if let Some(id) = event_id_of(&e.json) {
                batch.remove(key(&["eid", org, id]));
            }
            n += 1;
            next = e.seq + 1;
        }
        if n == 0 {
            next = keep_from;
        }
        batch.insert(key(&["old", org]), &next.to_be_bytes());
        self.inner.db.apply_batch(batch)?;
        Ok(n)
    }

    /// The first `seq` of `org` made at or after `cutoff_ms` (looking at
    /// most `max` events from the oldest); the next `seq` to come when all
    /// of those are older.
    pub fn first_seq_since(
        &self,
        org: &str,
        cutoff_ms: i64,
        max: usize,
    ) -> Result<u64, StoreError> {
        let oldest = self.oldest_seq(org)?;
        let mut next = oldest;
        for e in self.events_after(org, oldest.saturating_sub(1), max)? {
            if event_time_ms(&e.json).is_some_and(|t| t >= cutoff_ms) {
                return Ok(e.seq);
            }
            next = e.seq + 1;
        }
        Ok(next)
    }

    /// Ids of every organization.
    pub fn org_ids(&self) -> Result<Vec<String>, StoreError> {
        let mut out = Vec::new();
        for kv in self.inner.db.scan_prefix(b"org/") {
            let (k, _) = kv?;
            out.push(String::from_utf8_lossy(&k[4..]).into_owned());
        }
        Ok(out)
    }
}

/// A new epoch: 16 hex characters from the OS CSPRNG.
pub(super) fn new_epoch() -> String {
    let mut b = [0u8; 8];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut b);
    hex::encode(b)
}

/// The `eventId` of an event's JSON (`"eventId":"evt_…"`).
pub fn event_id_of(json: &[u8]) -> Option<&str> {
    let at = json.windows(11).position(|w| w == b"\"eventId\":\"")? + 11;
    let rest = &json[at..];
    let end = rest.iter().position(|&b| b == b'"')?;
    std::str::from_utf8(&rest[..end]).ok()
}

/// Unix ms when an event was made, from its `eventId` (a UUIDv7: the first
/// 48 bits are the Unix ms).
fn event_time_ms(json: &[u8]) -> Option<i64> {
    let id = event_id_of(json)?.strip_prefix("evt_")?;
    i64::from_str_radix(id.get(..12)?, 16).ok()
}

impl WriteTx<'_> {
    /// Appends an event to the organization's log: `body` (an object with
    /// `cmd`, `ok`, and `data` or `uid`) gets the extension fields `seq` (next
    /// in the organization), `eventId` (a UUIDv7, `evt_` + 32 hex: its first
    /// 48 bits are the Unix ms it was made) and `actor` (who caused it: the
    /// task's [`crate::model::ACTOR`], else system), and is serialised once,
    /// `cmd` first.
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
        let actor = crate::model::ACTOR
            .try_with(Clone::clone)
            .unwrap_or_else(|_| crate::model::Actor::system());
        body.insert("actor".into(), serde_json::to_value(&actor)?);
        // `cmd` first, so that readers can tell the event by its prefix
        // (`crate::events::name_of`) without parsing it.
        let cmd = body.remove("cmd").unwrap_or_default();
        let rest = serde_json::to_vec(&body)?;
        let mut out = Vec::with_capacity(rest.len() + 32);
        out.extend_from_slice(b"{\"cmd\":");
        serde_json::to_writer(&mut out, &cmd)?;
        if rest.len() > 2 {
            out.push(b',');
            out.extend_from_slice(&rest[1..]);
        } else {
            out.push(b'}');
        }
        let json = Bytes::from(out);
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
