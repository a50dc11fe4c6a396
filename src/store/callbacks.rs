//! The delivery-callback outbox (`cbq/`, by due time) and its dead letters
//! (`cbf/`).

use super::codec::{cbq_key, encode};
use super::{Store, StoreError, WriteTx};
use crate::model::CallbackJob;

impl Store {
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
        let mut batch = super::engine::Batch::default();
        batch.remove(queue_key);
        if let Some(due) = next {
            batch.insert(cbq_key(due, &id), encode(job));
        } else if dead {
            batch.insert(format!("cbf/{id}").into_bytes(), encode(job));
        }
        self.inner.db.apply_batch(batch)?;
        if next.is_none() {
            let mut pending = self
                .inner
                .pending_callbacks
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if let Some(n) = pending.get_mut(&job.org) {
                *n = n.saturating_sub(1);
            }
        }
        Ok(())
    }

    /// Delivery callbacks of `org` queued and not yet delivered or given up.
    /// With a shared store other nodes queue and settle them too: the
    /// counts are read again from the outbox when older than
    /// [`RECOUNT`] (this node's own queueing counts in between).
    pub fn pending_callbacks(&self, org: &str) -> usize {
        if self.inner.db.shared() {
            let mut at = self
                .inner
                .callbacks_counted
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if at.is_none_or(|t| t.elapsed() >= RECOUNT) {
                match count_by_org(&self.inner.db) {
                    Ok(counts) => {
                        *self
                            .inner
                            .pending_callbacks
                            .lock()
                            .unwrap_or_else(|p| p.into_inner()) = counts;
                        *at = Some(std::time::Instant::now());
                    }
                    Err(e) => tracing::error!(error = %e, "counting queued callbacks failed"),
                }
            }
        }
        self.inner
            .pending_callbacks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(org)
            .copied()
            .unwrap_or(0)
    }
}

/// How old the counts of queued callbacks may get with a shared store.
const RECOUNT: std::time::Duration = std::time::Duration::from_secs(5);

/// Counts the queued callbacks of each organization (at open).
pub(super) fn count_by_org(
    db: &super::kv::Kv,
) -> Result<std::collections::HashMap<String, usize>, StoreError> {
    let mut counts = std::collections::HashMap::new();
    for kv in db.scan_prefix(b"cbq/") {
        let (_, v) = kv?;
        let job: CallbackJob = serde_json::from_slice(&v)?;
        *counts.entry(job.org).or_default() += 1;
    }
    Ok(counts)
}

impl WriteTx<'_> {
    /// Stages a callback, due at `due_ms`, in the durable outbox.
    pub fn queue_callback(&mut self, job: &CallbackJob, due_ms: i64) {
        let id = uuid::Uuid::now_v7().simple().to_string();
        self.batch.insert(cbq_key(due_ms, &id), encode(job));
        self.callbacks_queued += 1;
    }
}
