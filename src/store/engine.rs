//! The storage engine: sled, with a write-ahead log of our own in front.
//!
//! sled makes a write durable only by flushing its page cache, which on this
//! project's disk is ~24 sequential page writes (~10 ms): a group commit of
//! 64 writers then tops out near 5,000 acknowledged writes per second. So
//! every change is also appended to a log (`{data_dir}/wal/{n:020}.log`),
//! and a durable write waits only for that log's `fdatasync` (one
//! sequential write, ~0.4 ms). sled itself is flushed by a checkpoint
//! ([`Engine::checkpoint`], every [`CHECKPOINT_MS`] while there are writes,
//! and at shutdown), after which the log segments it covers are deleted.
//!
//! # Format
//! A segment is a sequence of records: u32 LE payload length, u32 LE CRC-32
//! (IEEE) of the payload, payload. A payload is one atomic batch, a
//! sequence of operations: `1`, u32 LE key length, key, u32 LE value
//! length, value (insert) or `0`, u32 LE key length, key (remove).
//!
//! # Invariants
//! - A batch is applied to sled and appended to the log under one lock, so
//!   the log holds batches in the order sled applied them.
//! - A segment is deleted only after a sled flush that began after its last
//!   record was applied (the segment is closed and synced first).
//! - At open, every segment left is replayed in order before anything else
//!   reads the tree, then sled is flushed and the segments deleted. Replay
//!   is idempotent (every operation carries its whole value), so replaying
//!   batches sled already had changes nothing. A record cut short at the
//!   end of the last segment (a crash in the middle of an append) was never
//!   acknowledged and ends the replay.

use super::StoreError;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// How often a checkpoint flushes sled and drops the log it covers, in
/// milliseconds, while there are writes. Bounds the log's size (what was
/// written in that time) and the replay after a crash.
pub(super) const CHECKPOINT_MS: u64 = 1_000;

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

    fn is_empty(&self) -> bool {
        self.ops.is_empty()
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

/// sled and its write-ahead log. Reads go to sled; every change goes
/// through [`Engine::apply_batch`] (or [`Engine::insert`]/[`Engine::remove`]).
pub(super) struct Engine {
    /// The tree, for reads (writes only through the engine's methods).
    pub(super) db: sled::Db,
    dir: PathBuf,
    /// Records appended since the last sync. Its lock is also the order of
    /// sled's applies.
    pending: Mutex<Vec<u8>>,
    /// The open segment. Held while a sync or a rotation writes to it.
    segment: Mutex<Segment>,
    /// Bytes appended since the last checkpoint.
    unflushed: AtomicU64,
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
            for b in batches {
                db.apply_batch(b.to_sled())?;
                replayed += 1;
            }
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
            pending: Mutex::new(Vec::new()),
            segment: Mutex::new(segment),
            unflushed: AtomicU64::new(0),
        })
    }

    /// The value of `key`.
    pub(super) fn get<K: AsRef<[u8]>>(&self, key: K) -> sled::Result<Option<sled::IVec>> {
        self.db.get(key)
    }

    /// The records in `range`, in key order.
    pub(super) fn range<K: AsRef<[u8]>, R: std::ops::RangeBounds<K>>(
        &self,
        range: R,
    ) -> sled::Iter {
        self.db.range(range)
    }

    /// The records whose key starts with `prefix`, in key order.
    pub(super) fn scan_prefix<P: AsRef<[u8]>>(&self, prefix: P) -> sled::Iter {
        self.db.scan_prefix(prefix)
    }

    /// Applies `batch` atomically to the tree and appends it to the log
    /// (durable at the next [`Engine::sync`]).
    pub(super) fn apply_batch(&self, batch: Batch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        self.apply_locked(&mut pending, &batch)
    }

    /// Applies `batch` and appends it to `pending`, whose lock the caller holds.
    fn apply_locked(&self, pending: &mut Vec<u8>, batch: &Batch) -> Result<(), StoreError> {
        self.db.apply_batch(batch.to_sled())?;
        let before = pending.len();
        batch.encode_into(pending);
        self.unflushed
            .fetch_add((pending.len() - before) as u64, Ordering::Relaxed);
        Ok(())
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
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = self.db.get(key)? {
            return Ok(v);
        }
        let mut b = Batch::default();
        b.insert(key, value);
        self.apply_locked(&mut pending, &b)?;
        Ok(value.into())
    }

    /// Makes every batch applied so far durable: writes the records
    /// appended since the last sync and `fdatasync`s the segment. Blocking.
    pub(super) fn sync(&self) -> std::io::Result<()> {
        let mut segment = self.segment.lock().unwrap_or_else(|p| p.into_inner());
        let bytes = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
        if bytes.is_empty() {
            return Ok(());
        }
        segment.file.write_all(&bytes)?;
        segment.file.sync_data()
    }

    /// Flushes sled and deletes the log it covers. Blocking; a no-op when
    /// nothing was written since the last checkpoint.
    ///
    /// Closes the open segment (synced whole), opens the next, flushes sled
    /// (which holds every batch of the closed segments), then deletes them.
    pub(super) fn checkpoint(&self) -> Result<(), StoreError> {
        if self.unflushed.swap(0, Ordering::Relaxed) == 0 {
            return Ok(());
        }
        let closed = {
            let mut segment = self.segment.lock().unwrap_or_else(|p| p.into_inner());
            let bytes =
                std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
            segment.file.write_all(&bytes).map_err(io)?;
            segment.file.sync_data().map_err(io)?;
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
}
