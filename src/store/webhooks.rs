//! Organization webhooks (`whk/`) and their delivery bookkeeping: the
//! cursor (`dcur/`), one record per event (`dlv/`, postcard) and the queue
//! of pending attempts (`dq/`), written in checkpoints by the delivery
//! worker (a crash repeats deliveries, never skips one).

use super::codec::{be_u64, decode_delivery, dlv_key, dq_key, encode, encode_delivery, key};
use super::{Store, StoreError, WriteTx};
use crate::model::{Delivery, DeliveryStatus, Webhook};

impl Store {
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

    /// The last `seq` of `org` queued for delivery (0: none).
    pub fn delivery_cursor(&self, org: &str) -> Result<u64, StoreError> {
        Ok(self.get_u64(&key(&["dcur", org]))?.unwrap_or(0))
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
        let mut batch = super::engine::Batch::default();
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
}

impl WriteTx<'_> {
    /// Stages `webhook` as the organization's webhook.
    pub fn put_webhook(&mut self, webhook: &Webhook) {
        self.batch.insert(key(&["whk", self.org]), encode(webhook));
    }

    /// Stages the removal of the organization's webhook.
    pub fn delete_webhook(&mut self) {
        self.batch.remove(key(&["whk", self.org]));
    }

    /// Stages the delivery cursor: events after `seq` go to the webhook.
    pub fn set_delivery_cursor(&mut self, seq: u64) {
        self.batch
            .insert(key(&["dcur", self.org]), &seq.to_be_bytes());
    }
}
