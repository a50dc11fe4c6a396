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

impl WriteTx<'_> {
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
