//! The storage engine: sled, with a write-ahead log of our own in front.
//!
//! sled makes a write durable only by flushing its page cache (~24
//! sequential page writes, ~10 ms on this project's disk), and every atomic
//! batch it applies seals and writes its IO buffer, waiting for the disk
//! (`sync_file_range`, ~0.3 ms each, one batch at a time): with one sled
//! batch per command, a gateway tops out near 4,000 writes per second
//! whatever the group commit does. So:
//!
//! - a batch is applied to an in-memory **overlay** that reads consult
//!   before sled, and appended to a log (`{data_dir}/wal/{n:020}.log`);
//! - [`Engine::sync`] (the group commit) writes the log and `fdatasync`s it
//!   (one sequential write, ~0.4 ms), then applies every batch of the group
//!   to sled as **one** sled batch and drops them from the overlay;
//! - sled itself is flushed by a checkpoint ([`Engine::checkpoint`], every
//!   [`CHECKPOINT_MS`] while there are writes, and at shutdown), after which
//!   the log segments it covers are deleted.
//!
//! # Format
//! A segment is a sequence of records: u32 LE payload length, u32 LE CRC-32
//! (IEEE) of the payload, payload. A payload is one atomic batch, a
//! sequence of operations: `1`, u32 LE key length, key, u32 LE value
//! length, value (insert) or `0`, u32 LE key length, key (remove).
//!
//! # Invariants
//! - A batch is applied to the overlay and appended to the log under one
//!   lock, so the log holds batches in the order readers saw them.
//! - sled receives whole groups, each as one atomic sled batch, and only
//!   after the log holding them is synced: what a crash leaves in sled is
//!   the last checkpoint plus some prefix of the synced groups.
//! - A key leaves the overlay only once sled holds the same value, so a
//!   read sees every applied batch, from the overlay or from sled.
//! - A segment is deleted only after a sled flush that began after its last
//!   group was applied to sled (the segment is closed and synced first).
//! - At open, every segment left is replayed in order before anything else
//!   reads the tree, then sled is flushed and the segments deleted. Replay
//!   is idempotent (every operation carries its whole value), so replaying
//!   batches sled already had changes nothing. A record cut short at the
//!   end of the last segment (a crash in the middle of an append) was never
//!   acknowledged and ends the replay.

use super::StoreError;
use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io::Write;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, RwLock};

/// How often a checkpoint flushes sled and drops the log it covers, in
/// milliseconds, while there are writes. Bounds the log's size (what was
/// written in that time) and the replay after a crash.
pub(super) const CHECKPOINT_MS: u64 = 1_000;

/// Operations waiting for a sync beyond which the engine asks for one
/// ([`Engine::backlog`]) rather than waiting for a durable write or the
/// next checkpoint: bookkeeping written without a waiter (deliveries, key
/// use) would otherwise grow the overlay that every range read copies.
pub(super) const SYNC_BACKLOG_OPS: usize = 1_024;

/// One atomic batch of operations, applied with [`Engine::apply_batch`].
/// The same interface as [`sled::Batch`], with its operations kept so they
/// can be logged.
#[derive(Default)]
pub(super) struct Batch {
    ops: Vec<(sled::IVec, Option<sled::IVec>)>,
}

impl Batch {
    /// Stages `key` = `value`.
    pub(super) fn insert<K: Into<sled::IVec>, V: Into<sled::IVec>>(&mut self, key: K, value: V) {
        self.ops.push((key.into(), Some(value.into())));
    }

    /// Stages the removal of `key`.
    pub(super) fn remove<K: Into<sled::IVec>>(&mut self, key: K) {
        self.ops.push((key.into(), None));
    }

    pub(super) fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The operations, in order.
    pub(super) fn into_ops(self) -> Vec<(sled::IVec, Option<sled::IVec>)> {
        self.ops
    }

    fn to_sled(&self) -> sled::Batch {
        let mut b = sled::Batch::default();
        for (k, v) in &self.ops {
            match v {
                Some(v) => b.insert(k.clone(), v.clone()),
                None => b.remove(k.clone()),
            }
        }
        b
    }

    /// Appends this batch as one log record to `out`.
    fn encode_into(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0; 8]);
        for (k, v) in &self.ops {
            out.push(v.is_some() as u8);
            out.extend_from_slice(&(k.len() as u32).to_le_bytes());
            out.extend_from_slice(k);
            if let Some(v) = v {
                out.extend_from_slice(&(v.len() as u32).to_le_bytes());
                out.extend_from_slice(v);
            }
        }
        let payload = &out[start + 8..];
        let len = (payload.len() as u32).to_le_bytes();
        let crc = crc32fast::hash(payload).to_le_bytes();
        out[start..start + 4].copy_from_slice(&len);
        out[start + 4..start + 8].copy_from_slice(&crc);
    }

    /// Decodes one record's payload; `None` when it is malformed.
    fn decode(mut p: &[u8]) -> Option<Batch> {
        fn take<'a>(p: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
            let (head, rest) = (p.get(..n)?, p.get(n..)?);
            *p = rest;
            Some(head)
        }
        fn len(p: &mut &[u8]) -> Option<usize> {
            Some(u32::from_le_bytes(take(p, 4)?.try_into().ok()?) as usize)
        }
        let mut b = Batch::default();
        while !p.is_empty() {
            let kind = take(&mut p, 1)?[0];
            let n = len(&mut p)?;
            let k = sled::IVec::from(take(&mut p, n)?);
            match kind {
                1 => {
                    let n = len(&mut p)?;
                    b.insert(k, take(&mut p, n)?);
                }
                0 => b.remove(k),
                _ => return None,
            }
        }
        Some(b)
    }
}

/// sled, its overlay and its write-ahead log. Reads go to the overlay,
/// then sled; every change goes through [`Engine::apply_batch`] (or
/// [`Engine::insert`]/[`Engine::remove`]).
pub(super) struct Engine {
    /// The tree. Read it through the engine; `pub` only for what runs at
    /// open, before any write.
    pub(super) db: sled::Db,
    dir: PathBuf,
    /// Applied batches not yet in sled: their log records and operations.
    /// Its lock orders batches.
    pending: Mutex<Unsynced>,
    /// The latest value of every key written by a batch not yet in sled
    /// (`None`: removed).
    overlay: RwLock<BTreeMap<sled::IVec, Option<sled::IVec>>>,
    /// The overlay's length, stored under its write lock: a read that finds
    /// it empty goes straight to sled (the common case), without the lock.
    overlay_len: AtomicUsize,
    /// The open segment. Held while a sync or a rotation writes to it.
    segment: Mutex<Segment>,
    /// Bytes appended since the last checkpoint.
    unflushed: AtomicU64,
    /// A sync failed: the log may end in a partial record, so nothing more
    /// is written or acknowledged until a restart replays it (fail-stop, as
    /// databases answer a failed `fsync`).
    failed: std::sync::atomic::AtomicBool,
    /// Notified when [`SYNC_BACKLOG_OPS`] operations wait for a sync.
    backlog: std::sync::Arc<tokio::sync::Notify>,
}

#[derive(Default)]
struct Unsynced {
    /// Log records, in order.
    log: Vec<u8>,
    /// Their operations, in order (a later one on a key wins).
    ops: Batch,
}

struct Segment {
    file: File,
    number: u64,
}

impl Engine {
    /// Replays what the log under `dir` holds into `db` (a crash left it),
    /// flushes sled, and opens a new, empty log.
    pub(super) fn open(db: sled::Db, dir: &Path) -> Result<Engine, StoreError> {
        let dir = dir.join("wal");
        std::fs::create_dir_all(&dir).map_err(io)?;
        let segments = segments(&dir)?;
        let mut replayed = 0usize;
        for (i, (_, path)) in segments.iter().enumerate() {
            let bytes = std::fs::read(path).map_err(io)?;
            let (batches, clean) = parse(&bytes);
            if !clean && i + 1 < segments.len() {
                // Closed segments were synced whole: this is damage, not a
                // crash mid-append. What follows is still replayed.
                tracing::error!(segment = %path.display(), "write-ahead log segment damaged; replaying what precedes the damage");
            }
            // One sled batch per segment (sled waits on the disk for each
            // batch); a crash during the replay replays it again.
            let mut all = Batch::default();
            replayed += batches.len();
            for b in batches {
                all.ops.extend(b.ops);
            }
            db.apply_batch(all.to_sled())?;
        }
        if replayed > 0 {
            db.flush()?;
            tracing::info!(batches = replayed, "replayed the write-ahead log");
        }
        let next = segments.last().map_or(1, |(n, _)| n + 1);
        for (_, path) in &segments {
            std::fs::remove_file(path).map_err(io)?;
        }
        let segment = Segment::create(&dir, next)?;
        Ok(Engine {
            db,
            dir,
            pending: Mutex::default(),
            overlay: RwLock::default(),
            overlay_len: AtomicUsize::new(0),
            segment: Mutex::new(segment),
            unflushed: AtomicU64::new(0),
            failed: Default::default(),
            backlog: Default::default(),
        })
    }

    /// The value of `key`.
    pub(super) fn get<K: AsRef<[u8]>>(&self, key: K) -> sled::Result<Option<sled::IVec>> {
        if self.overlay_len.load(Ordering::Acquire) > 0 {
            let overlay = self.overlay.read().unwrap_or_else(|p| p.into_inner());
            if let Some(v) = overlay.get(key.as_ref()) {
                return Ok(v.clone());
            }
        }
        self.db.get(key)
    }

    /// The records in `range`, in key order (both ends).
    pub(super) fn range<K: AsRef<[u8]>, R: std::ops::RangeBounds<K>>(&self, range: R) -> Iter {
        fn bound<K: AsRef<[u8]>>(b: Bound<&K>) -> Bound<&[u8]> {
            match b {
                Bound::Included(k) => Bound::Included(k.as_ref()),
                Bound::Excluded(k) => Bound::Excluded(k.as_ref()),
                Bound::Unbounded => Bound::Unbounded,
            }
        }
        let bounds = (bound(range.start_bound()), bound(range.end_bound()));
        let over = if self.overlay_len.load(Ordering::Acquire) == 0 {
            VecDeque::new()
        } else {
            let overlay = self.overlay.read().unwrap_or_else(|p| p.into_inner());
            overlay
                .range::<[u8], _>(bounds)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        };
        Iter::new(self.db.range(range), over)
    }

    /// The records whose key starts with `prefix`, in key order (both ends).
    pub(super) fn scan_prefix<P: AsRef<[u8]>>(&self, prefix: P) -> Iter {
        let p = prefix.as_ref();
        let over = if self.overlay_len.load(Ordering::Acquire) == 0 {
            VecDeque::new()
        } else {
            let overlay = self.overlay.read().unwrap_or_else(|p| p.into_inner());
            overlay
                .range::<[u8], _>((Bound::Included(p), Bound::Unbounded))
                .take_while(|(k, _)| k.starts_with(p))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        };
        Iter::new(self.db.scan_prefix(p), over)
    }

    /// Applies `batch` atomically (every read after this sees all of it)
    /// and appends it to the log: durable, and in sled, after the next
    /// [`Engine::sync`].
    pub(super) fn apply_batch(&self, batch: Batch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        self.check()?;
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        self.apply_locked(&mut pending, batch);
        Ok(())
    }

    /// Errors with [`StoreError::Closed`] once a sync has failed.
    fn check(&self) -> Result<(), StoreError> {
        match self.failed.load(Ordering::Acquire) {
            true => Err(StoreError::Closed),
            false => Ok(()),
        }
    }

    /// Applies `batch` to the overlay and appends it to `pending`, whose
    /// lock the caller holds.
    fn apply_locked(&self, pending: &mut Unsynced, batch: Batch) {
        let before = pending.log.len();
        batch.encode_into(&mut pending.log);
        self.unflushed
            .fetch_add((pending.log.len() - before) as u64, Ordering::Relaxed);
        {
            let mut overlay = self.overlay.write().unwrap_or_else(|p| p.into_inner());
            for (k, v) in &batch.ops {
                overlay.insert(k.clone(), v.clone());
            }
            self.overlay_len.store(overlay.len(), Ordering::Release);
        }
        let waiting = pending.ops.ops.len();
        pending.ops.ops.extend(batch.ops);
        if waiting < SYNC_BACKLOG_OPS && pending.ops.ops.len() >= SYNC_BACKLOG_OPS {
            self.backlog.notify_one();
        }
    }

    /// Notified when [`SYNC_BACKLOG_OPS`] operations wait for a sync (a
    /// permit is kept if nobody waits): the store's checkpointer then syncs.
    pub(super) fn backlog(&self) -> std::sync::Arc<tokio::sync::Notify> {
        self.backlog.clone()
    }

    /// Sets `key` to `value` unless it is set; returns the value it keeps.
    pub(super) fn insert_new(&self, key: &[u8], value: &[u8]) -> Result<sled::IVec, StoreError> {
        self.check()?;
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = self.get(key)? {
            return Ok(v);
        }
        let mut b = Batch::default();
        b.insert(key, value);
        self.apply_locked(&mut pending, b);
        Ok(value.into())
    }

    /// Makes every batch applied so far durable: writes their log records
    /// and `fdatasync`s the segment, then applies them to sled as one sled
    /// batch and drops them from the overlay. Blocking.
    pub(super) fn sync(&self) -> Result<(), StoreError> {
        let mut segment = self.segment.lock().unwrap_or_else(|p| p.into_inner());
        self.sync_locked(&mut segment)
    }

    /// [`Engine::sync`], with the segment's lock held by the caller (so no
    /// checkpoint falls between the log write and sled's apply).
    fn sync_locked(&self, segment: &mut Segment) -> Result<(), StoreError> {
        self.check()?;
        let group = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
        if group.ops.is_empty() {
            return Ok(());
        }
        let written = segment
            .file
            .write_all(&group.log)
            .and_then(|()| segment.file.sync_data())
            .map_err(io)
            .and_then(|()| Ok(self.db.apply_batch(group.ops.to_sled())?));
        if let Err(e) = written {
            self.failed.store(true, Ordering::Release);
            tracing::error!(error = %e, "write-ahead log sync failed: no more writes until a restart replays the log");
            return Err(e);
        }
        // A key whose overlay value is still what sled now holds leaves the
        // overlay; one written again since stays, with its newer value.
        let mut latest: BTreeMap<&sled::IVec, &Option<sled::IVec>> = BTreeMap::new();
        for (k, v) in &group.ops.ops {
            latest.insert(k, v);
        }
        let mut overlay = self.overlay.write().unwrap_or_else(|p| p.into_inner());
        for (k, v) in latest {
            if overlay.get(k) == Some(v) {
                overlay.remove(k);
            }
        }
        self.overlay_len.store(overlay.len(), Ordering::Release);
        Ok(())
    }

    /// Makes every batch applied so far durable, flushes sled and deletes
    /// the log it covers. Blocking; only a sync when nothing was logged
    /// since the last checkpoint.
    ///
    /// Syncs, closes the open segment, opens the next, flushes sled (which
    /// holds every batch of the closed segments), then deletes them.
    pub(super) fn checkpoint(&self) -> Result<(), StoreError> {
        if self.unflushed.swap(0, Ordering::Relaxed) == 0 {
            // A concurrent checkpoint may have counted our batches and be
            // syncing them: the sync waits for it (the segment's lock).
            return self.sync();
        }
        let closed = {
            let mut segment = self.segment.lock().unwrap_or_else(|p| p.into_inner());
            self.sync_locked(&mut segment)?;
            let next = Segment::create(&self.dir, segment.number + 1)?;
            std::mem::replace(&mut *segment, next).number
        };
        self.db.flush()?;
        for (n, path) in segments(&self.dir)? {
            if n <= closed {
                std::fs::remove_file(path).map_err(io)?;
            }
        }
        Ok(())
    }
}

/// What the log under `dir` holds that sled may lack, as the last value of
/// each key (`None`: removed), read without changing anything (`convgate
/// migrate` copies a data dir it must leave as it was).
pub(super) fn logged(dir: &Path) -> Result<BTreeMap<sled::IVec, Option<sled::IVec>>, StoreError> {
    let mut out = BTreeMap::new();
    let dir = dir.join("wal");
    if !dir.exists() {
        return Ok(out);
    }
    for (_, path) in segments(&dir)? {
        let (batches, _) = parse(&std::fs::read(path).map_err(io)?);
        for (k, v) in batches.into_iter().flat_map(|b| b.ops) {
            out.insert(k, v);
        }
    }
    Ok(out)
}

/// Records of a range, in key order from either end: sled's, with the
/// overlay's entries in that range laid over them.
pub(super) struct Iter {
    tree: sled::Iter,
    /// sled's next record from the front and from the back, once read.
    front: Option<(sled::IVec, sled::IVec)>,
    back: Option<(sled::IVec, sled::IVec)>,
    over: VecDeque<(sled::IVec, Option<sled::IVec>)>,
}

type Record = (sled::IVec, sled::IVec);

impl Iter {
    fn new(tree: sled::Iter, over: VecDeque<(sled::IVec, Option<sled::IVec>)>) -> Iter {
        Iter {
            tree,
            front: None,
            back: None,
            over,
        }
    }

    /// Merges one step from one end: `ahead(a, b)` says whether key `a`
    /// comes before `b` in this direction.
    fn step(
        tree: Option<sled::Result<Record>>,
        peeked: &mut Option<Record>,
        other_end: &mut Option<Record>,
        over: Option<(sled::IVec, Option<sled::IVec>)>,
        ahead: impl Fn(&[u8], &[u8]) -> bool,
    ) -> Step {
        if peeked.is_none() {
            *peeked = match tree {
                Some(Ok(kv)) => Some(kv),
                Some(Err(e)) => return Step::Unread(over, Some(Err(e))),
                None => other_end.take(),
            };
        }
        match (peeked.take(), over) {
            (None, None) => Step::Done(None),
            (Some(t), None) => Step::Done(Some(Ok(t))),
            (t, Some((k, v))) => {
                match t {
                    Some(t) if ahead(&t.0, &k) => {
                        *peeked = None;
                        return Step::Unread(Some((k, v)), Some(Ok(t)));
                    }
                    Some(t) if t.0 != k => *peeked = Some(t),
                    _ => {}
                }
                match v {
                    Some(v) => Step::Done(Some(Ok((k, v)))),
                    None => Step::Again,
                }
            }
        }
    }
}

enum Step {
    Done(Option<sled::Result<Record>>),
    /// The overlay's entry (if any) was not used: put it back, yield this.
    Unread(
        Option<(sled::IVec, Option<sled::IVec>)>,
        Option<sled::Result<Record>>,
    ),
    /// The overlay's entry was a removal: step again.
    Again,
}

impl Iter {
    /// The next record from the front (`forward`) or from the back.
    fn advance(&mut self, forward: bool) -> Option<sled::Result<Record>> {
        let Iter {
            tree,
            front,
            back,
            over,
        } = self;
        let (peeked, other_end) = match forward {
            true => (front, back),
            false => (back, front),
        };
        loop {
            let read = match (peeked.is_none(), forward) {
                (true, true) => tree.next(),
                (true, false) => tree.next_back(),
                (false, _) => None,
            };
            let o = match forward {
                true => over.pop_front(),
                false => over.pop_back(),
            };
            let ahead = |a: &[u8], b: &[u8]| if forward { a < b } else { a > b };
            match Iter::step(read, peeked, other_end, o, ahead) {
                Step::Done(r) => return r,
                Step::Unread(o, r) => {
                    match (o, forward) {
                        (Some(o), true) => over.push_front(o),
                        (Some(o), false) => over.push_back(o),
                        (None, _) => {}
                    }
                    return r;
                }
                Step::Again => {}
            }
        }
    }
}

impl Iterator for Iter {
    type Item = sled::Result<Record>;

    fn next(&mut self) -> Option<Self::Item> {
        self.advance(true)
    }
}

impl DoubleEndedIterator for Iter {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.advance(false)
    }
}

impl Segment {
    /// Creates segment `number` under `dir` and makes its name durable.
    fn create(dir: &Path, number: u64) -> Result<Segment, StoreError> {
        let file = File::options()
            .create_new(true)
            .append(true)
            .open(dir.join(format!("{number:020}.log")))
            .map_err(io)?;
        File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
        Ok(Segment { file, number })
    }
}

/// The segments under `dir`, oldest first.
fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, StoreError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        let n = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".log"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(n) = n {
            out.push((n, path));
        }
    }
    out.sort();
    Ok(out)
}

/// The whole records of a segment, and whether nothing followed them.
fn parse(mut bytes: &[u8]) -> (Vec<Batch>, bool) {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let Some(header) = bytes.get(..8) else {
            return (out, false);
        };
        let len = u32::from_le_bytes(header[..4].try_into().unwrap()) as usize;
        let crc = u32::from_le_bytes(header[4..].try_into().unwrap());
        let Some(payload) = bytes.get(8..8 + len) else {
            return (out, false);
        };
        if crc32fast::hash(payload) != crc {
            return (out, false);
        }
        let Some(batch) = Batch::decode(payload) else {
            return (out, false);
        };
        out.push(batch);
        bytes = &bytes[8 + len..];
    }
    (out, true)
}

fn io(e: std::io::Error) -> StoreError {
    StoreError::Sled(e.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One-operation batches.
    trait OneOp {
        fn insert(&self, k: &[u8], v: &[u8]) -> Result<(), StoreError>;
        fn remove(&self, k: &[u8]) -> Result<(), StoreError>;
    }

    impl OneOp for Engine {
        fn insert(&self, k: &[u8], v: &[u8]) -> Result<(), StoreError> {
            let mut b = Batch::default();
            b.insert(k, v);
            self.apply_batch(b)
        }

        fn remove(&self, k: &[u8]) -> Result<(), StoreError> {
            let mut b = Batch::default();
            b.remove(k);
            self.apply_batch(b)
        }
    }

    fn engine(dir: &Path) -> Engine {
        let db = sled::Config::new().path(dir.join("db")).open().unwrap();
        Engine::open(db, dir).unwrap()
    }

    #[test]
    fn a_synced_batch_survives_without_a_sled_flush() {
        let dir = tempfile::tempdir().unwrap();
        {
            let e = engine(dir.path());
            e.insert(&b"a"[..], &b"1"[..]).unwrap();
            let mut b = Batch::default();
            b.insert(&b"b"[..], vec![7u8; 100]);
            b.remove(&b"a"[..]);
            b.insert(&b"c"[..], &b""[..]);
            e.apply_batch(b).unwrap();
            e.sync().unwrap();
            // Simulate losing sled's unflushed state: wipe the tree's
            // directory after closing, keeping the log.
            drop(e);
        }
        std::fs::remove_dir_all(dir.path().join("db")).unwrap();
        let e = engine(dir.path());
        assert_eq!(e.db.get(b"a").unwrap(), None);
        assert_eq!(e.db.get(b"b").unwrap().unwrap().as_ref(), &[7u8; 100][..]);
        assert_eq!(e.db.get(b"c").unwrap().unwrap().as_ref(), b"");
        // Replayed, flushed, and the log emptied.
        let segs = segments(&dir.path().join("wal")).unwrap();
        assert_eq!(segs.len(), 1);
        assert_eq!(std::fs::metadata(&segs[0].1).unwrap().len(), 0);
    }

    #[test]
    fn a_torn_tail_ends_the_replay_and_earlier_records_stand() {
        let mut log = Vec::new();
        let mut b = Batch::default();
        b.insert(&b"k1"[..], &b"v1"[..]);
        b.encode_into(&mut log);
        let whole = log.len();
        let mut b = Batch::default();
        b.insert(&b"k2"[..], &b"v2"[..]);
        b.encode_into(&mut log);
        for cut in whole..log.len() {
            let (batches, clean) = parse(&log[..cut]);
            assert_eq!(batches.len(), 1, "cut at {cut}");
            assert_eq!(clean, cut == whole);
        }
        let mut flipped = log.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(parse(&flipped).0.len(), 1);
        let (all, clean) = parse(&log);
        assert_eq!((all.len(), clean), (2, true));
    }

    #[test]
    fn a_checkpoint_flushes_sled_and_drops_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let e = engine(dir.path());
        e.insert(&b"x"[..], &b"1"[..]).unwrap();
        e.sync().unwrap();
        e.checkpoint().unwrap();
        let segs = segments(&dir.path().join("wal")).unwrap();
        assert_eq!(segs.len(), 1, "{segs:?}");
        assert_eq!(segs[0].0, 2);
        assert_eq!(std::fs::metadata(&segs[0].1).unwrap().len(), 0);
        // Nothing written since: the next checkpoint does nothing.
        e.checkpoint().unwrap();
        assert_eq!(segments(&dir.path().join("wal")).unwrap()[0].0, 2);
    }

    /// A checkpoint that finds nothing counted (a concurrent one counted it
    /// and is still writing) still returns only once everything is synced.
    #[test]
    fn a_checkpoint_with_nothing_counted_still_syncs() {
        let dir = tempfile::tempdir().unwrap();
        let e = engine(dir.path());
        e.insert(&b"y"[..], &b"1"[..]).unwrap();
        e.unflushed.store(0, Ordering::Relaxed);
        e.checkpoint().unwrap();
        assert!(e.pending.lock().unwrap().ops.is_empty(), "synced");
        assert_eq!(e.db.get(b"y").unwrap().as_deref(), Some(&b"1"[..]));
    }

    /// Reads through the overlay agree with a plain ordered map, from both
    /// ends and meeting in the middle, whatever part of the writes sled
    /// holds yet.
    #[test]
    fn reads_merge_the_overlay_with_sled_like_one_ordered_map() {
        let dir = tempfile::tempdir().unwrap();
        let e = engine(dir.path());
        let mut model = BTreeMap::<Vec<u8>, Vec<u8>>::new();
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut rand = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        for round in 0..400 {
            let mut b = Batch::default();
            for _ in 0..1 + rand(4) {
                let k = format!("k/{:02}", rand(40)).into_bytes();
                if rand(3) == 0 {
                    b.remove(k.clone());
                    model.remove(&k);
                } else {
                    let v = format!("v{round}").into_bytes();
                    b.insert(k.clone(), v.clone());
                    model.insert(k, v);
                }
            }
            e.apply_batch(b).unwrap();
            if rand(5) == 0 {
                e.sync().unwrap();
            }
            let want: Vec<_> = model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            let got: Vec<_> = e
                .scan_prefix(b"k/")
                .map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())).unwrap())
                .collect();
            assert_eq!(got, want, "forward, round {round}");
            let mut back: Vec<_> = e
                .range(&b"k/"[..]..&b"k0"[..])
                .rev()
                .map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())).unwrap())
                .collect();
            back.reverse();
            assert_eq!(back, want, "backward, round {round}");
            let mut it = e.scan_prefix(b"k/");
            let (mut head, mut tail) = (Vec::new(), Vec::new());
            loop {
                match it.next() {
                    Some(r) => head.push(r.unwrap().0.to_vec()),
                    None => break,
                }
                match it.next_back() {
                    Some(r) => tail.push(r.unwrap().0.to_vec()),
                    None => break,
                }
            }
            tail.reverse();
            head.extend(tail);
            let keys: Vec<_> = model.keys().cloned().collect();
            assert_eq!(head, keys, "both ends, round {round}");
            for k in 0..40 {
                let k = format!("k/{k:02}").into_bytes();
                assert_eq!(
                    e.get(&k).unwrap().map(|v| v.to_vec()),
                    model.get(&k).cloned()
                );
            }
        }
    }

    /// Every writer reads its own writes back, from the overlay or from
    /// sled, while groups move to sled and checkpoints run.
    #[test]
    fn a_write_stays_visible_while_it_moves_to_sled() {
        let dir = tempfile::tempdir().unwrap();
        let e = std::sync::Arc::new(engine(dir.path()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let syncer = {
            let (e, stop) = (e.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    e.sync().unwrap();
                    n += 1;
                    if n % 50 == 0 {
                        e.checkpoint().unwrap();
                    }
                }
            })
        };
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let e = e.clone();
                std::thread::spawn(move || {
                    for i in 0..3000u32 {
                        let k = format!("w{w}/{}", i % 7);
                        let v = format!("{i}");
                        let mut b = Batch::default();
                        b.insert(k.as_bytes(), v.as_bytes());
                        b.insert(format!("w{w}/last").as_bytes(), v.as_bytes());
                        e.apply_batch(b).unwrap();
                        assert_eq!(e.get(&k).unwrap().as_deref(), Some(v.as_bytes()), "{k}");
                        let seen: Vec<_> = e
                            .scan_prefix(format!("w{w}/"))
                            .map(|r| r.unwrap().0)
                            .collect();
                        assert!(seen.iter().any(|s| s == k.as_bytes()), "{k} not in scan");
                        if i % 3 == 0 {
                            e.remove(k.as_bytes()).unwrap();
                            assert_eq!(e.get(&k).unwrap(), None, "{k} removed");
                        }
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        syncer.join().unwrap();
    }

    /// A log write that fails stops every later write: the log may end in
    /// a partial record, and only a restart's replay knows what it holds.
    #[test]
    fn a_failed_sync_refuses_every_later_write() {
        let dir = tempfile::tempdir().unwrap();
        let e = engine(dir.path());
        e.insert(&b"a"[..], &b"1"[..]).unwrap();
        e.sync().unwrap();
        // A handle the segment cannot be written through.
        let read_only = File::open(&segments(&dir.path().join("wal")).unwrap()[0].1).unwrap();
        e.segment.lock().unwrap().file = read_only;
        e.insert(&b"b"[..], &b"2"[..]).unwrap();
        assert!(e.sync().is_err());
        assert!(matches!(
            e.insert(&b"c"[..], &b"3"[..]),
            Err(StoreError::Closed)
        ));
        assert!(matches!(e.sync(), Err(StoreError::Closed)));
        assert!(e.checkpoint().is_err());
        // What was acknowledged before stays readable.
        assert_eq!(e.get(b"a").unwrap().as_deref(), Some(&b"1"[..]));
    }
}
