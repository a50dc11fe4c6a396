//! `GetEvents` (extension): the organization's event log, for callers that
//! cannot hold a socket or receive webhooks — polling with a cursor, or long
//! polling.
//!
//! # Format
//! `{"cmd":"GetEvents","after":41,"limit":100,"wait":25}` →
//! `{"ok":1,"cmd":"GetEvents","data":[{"cmd":"onUserCreate",…,"seq":42,…}],"nextSeq":42,"hasMore":false}`.
//!
//! `after` (a `seq`; default: before the oldest retained event), `limit`
//! (1–1000, default 100), `wait` (0–30 seconds: the reply is held until at
//! least one event exists or the time passes; it ends early on shutdown),
//! `epoch` (optional: the log's epoch the caller holds), `events` (opt-in
//! extension events to include, as `connect`'s). Only durable events are
//! returned. A caller that loops passing `nextSeq` as `after` sees every
//! event exactly once, in order; opt-in events it did not ask for are
//! skipped (and `nextSeq` moves past them).
//!
//! # Errors
//! 4100 `after` older than the retained log or another `epoch` (with
//! `epoch` and `oldestSeq`: the caller re-reads its state, then polls from
//! there), 1017 `limit`, `wait` or `events` out of range.

use super::Fields;
use crate::ctx::Ctx;
use crate::error::{ApiError, ErrorCode};
use crate::model::Org;
use crate::reply::Reply;
use bytestring::ByteString;
use std::time::Duration;

/// Most events per reply.
pub const MAX_LIMIT: u64 = 1000;

/// Longest long poll, seconds.
pub const MAX_WAIT: f64 = 30.0;

/// Read the event log.
#[derive(Debug)]
pub struct GetEvents {
    after: Option<u64>,
    limit: u64,
    wait: f64,
    epoch: Option<String>,
    events: Vec<String>,
}

/// 4100: the log cannot serve events after `after` (trimmed, or another
/// epoch); says which epoch and oldest `seq` it has.
pub fn cannot_resume(why: &str, epoch: &str, oldest: u64) -> ApiError {
    ApiError::new(ErrorCode::CannotResume, format!("cannot resume: {why}"))
        .with_field("epoch", epoch)
        .with_field("oldestSeq", oldest)
}

impl GetEvents {
    pub(crate) fn parse(f: &Fields) -> Result<GetEvents, ApiError> {
        let bad = |m: &str| ApiError::new(ErrorCode::InvalidJson, m);
        let limit = f.opt_u64("limit", ErrorCode::InvalidJson)?.unwrap_or(100);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(bad("limit must be 1-1000"));
        }
        let wait = match f.value("wait") {
            None | Some(serde_json::Value::Null) => 0.0,
            Some(v) => v
                .as_f64()
                .filter(|w| (0.0..=MAX_WAIT).contains(w))
                .ok_or_else(|| bad("wait must be 0-30 seconds"))?,
        };
        Ok(GetEvents {
            after: f.opt_u64("after", ErrorCode::InvalidJson)?,
            limit,
            wait,
            epoch: f
                .opt_str("epoch", ErrorCode::InvalidJson)?
                .map(str::to_string),
            events: super::fields::opt_in_events(f)?,
        })
    }

    /// Replies with up to `limit` durable events after `after`, waiting up
    /// to `wait` seconds for the first.
    pub async fn apply(self, ctx: &Ctx, org: &Org) -> Result<Reply, ApiError> {
        let store = &ctx.store;
        let epoch = store.epoch(&org.id)?;
        let oldest = store.oldest_seq(&org.id)?;
        if self.epoch.as_deref().is_some_and(|e| e != epoch) {
            return Err(cannot_resume("the log's epoch changed", &epoch, oldest));
        }
        let after = self.after.unwrap_or(oldest.saturating_sub(1));
        if after + 1 < oldest {
            return Err(cannot_resume(
                "those events are no longer retained",
                &epoch,
                oldest,
            ));
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(self.wait);
        loop {
            // Subscribe before reading, so that an event made in between
            // wakes this poll.
            let mut wake = ctx.bus.subscribe(&org.id);
            let durable = store.durable_seq(&org.id)?;
            let (data, scanned, count) = self.read(ctx, &org.id, after, durable)?;
            let waiting = self.wait > 0.0 && tokio::time::Instant::now() < deadline;
            if count > 0 || !waiting || scanned > after {
                return Ok(Reply::ok("GetEvents")
                    .with_json_data(data)
                    .with_field("nextSeq", scanned)
                    .with_field("hasMore", scanned < durable));
            }
            tokio::select! {
                _ = ctx.shutdown.cancelled() => {
                    return Ok(Reply::ok("GetEvents")
                        .with_json_data(ByteString::from_static("[]"))
                        .with_field("nextSeq", after)
                        .with_field("hasMore", false));
                }
                _ = tokio::time::sleep_until(deadline) => {}
                _ = wake.recv() => {}
            }
        }
    }

    /// The wanted events in `(after, durable]`, at most `limit`: their JSON
    /// array, the last `seq` looked at, and how many.
    fn read(
        &self,
        ctx: &Ctx,
        org: &str,
        after: u64,
        durable: u64,
    ) -> Result<(ByteString, u64, u64), ApiError> {
        let mut out = Vec::with_capacity(4096);
        out.push(b'[');
        let (mut scanned, mut count) = (after, 0);
        while count < self.limit && scanned < durable {
            let batch = ctx.store.events_after(org, scanned, 256)?;
            if batch.is_empty() {
                break;
            }
            for e in batch {
                if e.seq > durable || count >= self.limit {
                    break;
                }
                scanned = e.seq;
                if crate::events::wanted(&e.json, &self.events) {
                    if count > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(&e.json);
                    count += 1;
                }
            }
        }
        out.push(b']');
        // Events are stored as the JSON text they were serialised to.
        let out = ByteString::try_from(out).map_err(|_| ApiError::internal())?;
        Ok((out, scanned, count))
    }
}
