//! The ordered key space the store's accessors read and write, on one of
//! two backends: the embedded [`engine`](super::engine) (sled behind our
//! write-ahead log, the default) or [`pg`](super::pg) (PostgreSQL, shared
//! by several nodes). Both order keys byte by byte and apply a batch
//! atomically; they differ in when a batch is durable: the embedded
//! engine's at its next [`Kv::sync`] (the group commit), PostgreSQL's when
//! its transaction commits.

use super::engine::{self, Batch, Engine};
use super::pg::{self, Pg};
use super::StoreError;
use std::ops::{Bound, RangeBounds};

/// One record as read: key and value.
pub(super) type Record = (sled::IVec, sled::IVec);

/// The store's backend.
// One per store: the size of the smaller variant does not matter.
#[allow(clippy::large_enum_variant)]
pub(super) enum Kv {
    /// sled behind the write-ahead log, under `data_dir`.
    Local(Engine),
    /// A PostgreSQL database any number of nodes share.
    Pg(Pg),
}

fn bound<K: AsRef<[u8]>>(b: Bound<&K>) -> Bound<&[u8]> {
    match b {
        Bound::Included(k) => Bound::Included(k.as_ref()),
        Bound::Excluded(k) => Bound::Excluded(k.as_ref()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

impl Kv {
    /// Whether other processes may write the same data (PostgreSQL): what
    /// this process caches or counts of it may be stale.
    pub(super) fn shared(&self) -> bool {
        matches!(self, Kv::Pg(_))
    }

    /// The value of `key`.
    pub(super) fn get<K: AsRef<[u8]>>(&self, key: K) -> Result<Option<sled::IVec>, StoreError> {
        match self {
            Kv::Local(e) => Ok(e.get(key)?),
            Kv::Pg(p) => p.get(key.as_ref()),
        }
    }

    /// The records in `range`, in key order (both ends).
    pub(super) fn range<K: AsRef<[u8]>, R: RangeBounds<K>>(&self, range: R) -> Iter {
        match self {
            Kv::Local(e) => Iter::Local(e.range(range)),
            Kv::Pg(p) => Iter::Pg(p.range(bound(range.start_bound()), bound(range.end_bound()))),
        }
    }

    /// The records whose key starts with `prefix`, in key order.
    pub(super) fn scan_prefix<P: AsRef<[u8]>>(&self, prefix: P) -> Iter {
        match self {
            Kv::Local(e) => Iter::Local(e.scan_prefix(prefix)),
            Kv::Pg(p) => {
                let p_ = prefix.as_ref();
                match prefix_end(p_) {
                    Some(end) => Iter::Pg(p.range(Bound::Included(p_), Bound::Excluded(&end))),
                    None => Iter::Pg(p.range(Bound::Included(p_), Bound::Unbounded)),
                }
            }
        }
    }

    /// Applies `batch` atomically: every read after this sees all of it.
    /// Durable at the next [`Kv::sync`] (embedded) or now (PostgreSQL).
    pub(super) fn apply_batch(&self, batch: Batch) -> Result<(), StoreError> {
        match self {
            Kv::Local(e) => e.apply_batch(batch),
            Kv::Pg(p) => p.apply_batch(batch),
        }
    }

    /// Sets `key` to `value` (one batch).
    pub(super) fn insert<K: AsRef<[u8]>, V: Into<sled::IVec>>(
        &self,
        key: K,
        value: V,
    ) -> Result<(), StoreError> {
        let mut b = Batch::default();
        b.insert(key.as_ref(), value);
        self.apply_batch(b)
    }

    /// Removes `key` (one batch).
    pub(super) fn remove<K: AsRef<[u8]>>(&self, key: K) -> Result<(), StoreError> {
        let mut b = Batch::default();
        b.remove(key.as_ref());
        self.apply_batch(b)
    }

    /// Sets `key` to `value` unless it is set; returns the value it keeps.
    pub(super) fn insert_new(&self, key: &[u8], value: &[u8]) -> Result<sled::IVec, StoreError> {
        match self {
            Kv::Local(e) => e.insert_new(key, value),
            Kv::Pg(p) => p.insert_new(key, value),
        }
    }

    /// Begins a write that must be serialised with every other node's:
    /// `Some` holds PostgreSQL's cluster-wide write lock until committed
    /// ([`pg::Tx::commit`]) or dropped. `None` for the embedded engine,
    /// whose writers the store's own lock serialises.
    pub(super) fn begin(&self) -> Result<Option<pg::Tx>, StoreError> {
        match self {
            Kv::Local(_) => Ok(None),
            Kv::Pg(p) => p.begin().map(Some),
        }
    }

    /// Makes every batch applied so far durable. Blocking.
    pub(super) fn sync(&self) -> Result<(), StoreError> {
        match self {
            Kv::Local(e) => e.sync(),
            Kv::Pg(_) => Ok(()),
        }
    }

    /// [`Engine::checkpoint`]; a no-op on PostgreSQL. Blocking.
    pub(super) fn checkpoint(&self) -> Result<(), StoreError> {
        match self {
            Kv::Local(e) => e.checkpoint(),
            Kv::Pg(_) => Ok(()),
        }
    }

    /// Notified when bookkeeping waits for a sync ([`Engine::backlog`]);
    /// never on PostgreSQL, where every batch is durable when applied.
    pub(super) fn backlog(&self) -> std::sync::Arc<tokio::sync::Notify> {
        match self {
            Kv::Local(e) => e.backlog(),
            Kv::Pg(_) => Default::default(),
        }
    }
}

/// The first key after every key starting with `prefix` (`None`: no end).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// Records of a range from either backend.
// Lives on the stack for one scan; boxing the embedded one (the default)
// would cost an allocation per scan.
#[allow(clippy::large_enum_variant)]
pub(super) enum Iter {
    Local(engine::Iter),
    Pg(pg::Iter),
}

impl Iter {
    /// The keys alone.
    pub(super) fn keys(self) -> impl DoubleEndedIterator<Item = Result<sled::IVec, StoreError>> {
        self.map(|r| r.map(|(k, _)| k))
    }
}

impl Iterator for Iter {
    type Item = Result<Record, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Iter::Local(i) => i.next().map(|r| r.map_err(StoreError::from)),
            Iter::Pg(i) => i.next(),
        }
    }
}

impl DoubleEndedIterator for Iter {
    fn next_back(&mut self) -> Option<Self::Item> {
        match self {
            Iter::Local(i) => i.next_back().map(|r| r.map_err(StoreError::from)),
            Iter::Pg(i) => i.next_back(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_end_is_the_first_key_after_the_prefix() {
        assert_eq!(prefix_end(b"usr/"), Some(b"usr0".to_vec()));
        assert_eq!(prefix_end(&[b'a', 0xff]), Some(b"b".to_vec()));
        assert_eq!(prefix_end(&[0xff, 0xff]), None);
        assert_eq!(prefix_end(b""), None);
    }
}
