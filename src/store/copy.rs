//! `convgate migrate`: copies an embedded data dir into an empty
//! PostgreSQL database, key for key (both backends share one key layout,
//! see [`super`]), in one transaction, then verifies the counts.

use super::engine::{self, Batch};
use super::pg::Pg;
use super::StoreError;
use std::collections::BTreeMap;
use std::path::Path;

/// Keys copied per statement.
const CHUNK: usize = 1_000;

/// What [`copy_to_postgres`] copied: keys in all and by kind (the key's
/// first segment: `usr`, `msg`, `evt`, … as in the store's key layout).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CopyReport {
    /// Every key copied.
    pub keys: u64,
    /// Keys by kind, e.g. `{"usr": 120, "evt": 480}`.
    pub by_kind: BTreeMap<String, u64>,
}

fn kind(k: &[u8]) -> String {
    let end = k.iter().position(|&b| b == b'/').unwrap_or(k.len());
    String::from_utf8_lossy(&k[..end]).into_owned()
}

/// Copies the data dir `from` (sled and what its write-ahead log holds)
/// into the PostgreSQL database at `to`, which must hold no key yet; the
/// schema is created first. The data dir's records are left as they were.
/// Then counts the database's keys by kind and compares them with the
/// source's.
///
/// Errors: [`StoreError::Locked`] when a gateway has `from` open;
/// [`StoreError::Backend`] when PostgreSQL fails, `to` is not empty, or
/// the counts differ (nothing is committed in the first two cases).
/// Blocking.
pub fn copy_to_postgres(from: &Path, to: &str) -> Result<CopyReport, StoreError> {
    if !from.join("db").exists() {
        return Err(StoreError::Backend(format!(
            "{} is not a convgate data dir (no db/)",
            from.display()
        )));
    }
    let tree = sled::Config::new()
        .path(from.join("db"))
        .open()
        .map_err(|e| match e {
            sled::Error::Io(io) if io.to_string().contains("lock") => {
                StoreError::Locked(from.to_path_buf())
            }
            e => StoreError::Sled(e),
        })?;
    let mut logged = engine::logged(from)?;
    let pg = Pg::open(to, 1)?;
    if !pg.is_empty()? {
        return Err(StoreError::Backend(
            "the target database already holds convgate data; migrate into an empty one".into(),
        ));
    }
    let mut report = CopyReport::default();
    let tx = pg.begin()?;
    let mut batch = Batch::default();
    let mut n = 0;
    let mut put = |k: sled::IVec, v: sled::IVec, batch: &mut Batch| {
        *report.by_kind.entry(kind(&k)).or_default() += 1;
        report.keys += 1;
        batch.insert(k, v);
    };
    for kv in tree.iter() {
        let (k, v) = kv?;
        // The log's value is newer than sled's.
        let v = match logged.remove(&k) {
            Some(Some(newer)) => newer,
            Some(None) => continue,
            None => v,
        };
        put(k, v, &mut batch);
        n += 1;
        if n % CHUNK == 0 {
            tx.apply(std::mem::take(&mut batch))?;
        }
    }
    for (k, v) in logged {
        if let Some(v) = v {
            put(k, v, &mut batch);
        }
    }
    tx.commit(batch)?;
    let copied = pg.count_by_kind()?;
    if copied != report.by_kind {
        return Err(StoreError::Backend(format!(
            "copy verification failed: the data dir has {:?}, the database {:?}",
            report.by_kind, copied
        )));
    }
    Ok(report)
}
