//! `RedeliverEvents` (extension): queues events for delivery again — replay
//! after a receiver lost data, or retry of dead letters.
//!
//! # Format
//! `{"cmd":"RedeliverEvents","eventIds":["evt_…"]}` or
//! `{"cmd":"RedeliverEvents","since":10,"until":20}` →
//! `{"ok":1,"cmd":"RedeliverEvents","data":{"queued":2,"unknown":[]}}`.
//! Delivered and failed deliveries restart with a fresh schedule, with the
//! same `webhook-id`; pending ones are already queued and are left as they
//! are. `unknown` lists eventIds that are not events of the organization.
//!
//! # Errors
//! 1017 neither `eventIds` (1–1000 strings) nor a `since`/`until` range of at
//! most 10000 events.

use super::Fields;
use crate::ctx::Ctx;
use crate::error::{ApiError, ErrorCode};
use crate::model::{DeliveryStatus, Org};
use crate::reply::Reply;
use serde_json::{json, Value};

/// Replay events to the webhook.
#[derive(Debug)]
pub enum RedeliverEvents {
    /// By event id.
    Ids(Vec<String>),
    /// By `seq` range, inclusive.
    Range(u64, u64),
}

impl RedeliverEvents {
    pub(crate) fn parse(f: &Fields) -> Result<RedeliverEvents, ApiError> {
        let bad = |m: &str| ApiError::new(ErrorCode::InvalidJson, m);
        if let Some(ids) = f.value("eventIds") {
            let ids: Vec<String> = ids
                .as_array()
                .ok_or_else(|| bad("eventIds must be an array of strings"))?
                .iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect::<Option<_>>()
                .ok_or_else(|| bad("eventIds must be an array of strings"))?;
            if ids.is_empty() || ids.len() > 1000 {
                return Err(bad("eventIds must hold 1 to 1000 ids"));
            }
            return Ok(RedeliverEvents::Ids(ids));
        }
        let since = f.opt_u64("since", ErrorCode::InvalidJson)?;
        let until = f.opt_u64("until", ErrorCode::InvalidJson)?;
        match (since, until) {
            (Some(s), Some(u)) if s <= u && u - s < 10_000 => Ok(RedeliverEvents::Range(s, u)),
            _ => Err(bad(
                "give eventIds, or since and until (at most 10000 events)",
            )),
        }
    }

    /// Requeues the deliveries and wakes the worker.
    pub fn apply(self, ctx: &Ctx, org: &Org) -> Result<Reply, ApiError> {
        let mut unknown = Vec::new();
        let seqs: Vec<u64> = match self {
            RedeliverEvents::Range(s, u) => (s..=u).collect(),
            RedeliverEvents::Ids(ids) => ids
                .into_iter()
                .filter_map(|id| match ctx.store.seq_of_event(&org.id, &id) {
                    Ok(Some(seq)) => Some(Ok(seq)),
                    Ok(None) => {
                        unknown.push(id);
                        None
                    }
                    Err(e) => Some(Err(e)),
                })
                .collect::<Result<_, _>>()?,
        };
        let mut again = Vec::new();
        for seq in seqs {
            match ctx.deliveries.delivery(&org.id, seq)? {
                Some(d) if d.status != DeliveryStatus::Pending => again.push(seq),
                _ => {}
            }
        }
        let queued = again.len();
        ctx.deliveries.redeliver(&org.id, again);
        Ok(Reply::ok("RedeliverEvents")
            .with_data(json!({"queued": queued, "unknown": Value::from(unknown)})))
    }
}
