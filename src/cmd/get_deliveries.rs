//! `GetDeliveries` (extension): where each event's webhook delivery stands.
//!
//! # Format
//! `{"cmd":"GetDeliveries","status":"failed","since":1,"until":500,"limit":100,"cursor":"42"}` →
//! `{"ok":1,"cmd":"GetDeliveries","data":[{"eventId":…,"seq":…,"status":"pending|delivered|failed","attempts":…,"lastStatus":…,"lastError":…,"nextAttempt":…,"queuedMs":…}],"nextCursor":"…"}`.
//! In `seq` order; `limit` 1–1000 (default 100); `nextCursor` when more remain.
//!
//! # Errors
//! 1017 invalid `status`, `since`, `until`, `limit` or `cursor`.

use super::Fields;
use crate::ctx::Ctx;
use crate::error::{ApiError, ErrorCode};
use crate::model::{DeliveryStatus, Org};
use crate::reply::Reply;

/// List deliveries.
#[derive(Debug)]
pub struct GetDeliveries {
    status: Option<DeliveryStatus>,
    since: u64,
    until: u64,
    after: Option<u64>,
    limit: usize,
}

impl GetDeliveries {
    pub(crate) fn parse(f: &Fields) -> Result<GetDeliveries, ApiError> {
        let bad = |m: &str| ApiError::new(ErrorCode::InvalidJson, m);
        let status = match f.opt_str("status", ErrorCode::InvalidJson)? {
            None => None,
            Some("pending") => Some(DeliveryStatus::Pending),
            Some("delivered") => Some(DeliveryStatus::Delivered),
            Some("failed") => Some(DeliveryStatus::Failed),
            Some(_) => return Err(bad("status must be pending, delivered or failed")),
        };
        let limit = f.opt_u64("limit", ErrorCode::InvalidJson)?.unwrap_or(100);
        if !(1..=1000).contains(&limit) {
            return Err(bad("limit must be between 1 and 1000"));
        }
        Ok(GetDeliveries {
            status,
            since: f.opt_u64("since", ErrorCode::InvalidJson)?.unwrap_or(0),
            until: f
                .opt_u64("until", ErrorCode::InvalidJson)?
                .unwrap_or(u64::MAX),
            after: f.opt_u64("cursor", ErrorCode::InvalidJson)?,
            limit: limit as usize,
        })
    }

    /// Replies with the page.
    pub fn apply(self, ctx: &Ctx, org: &Org) -> Result<Reply, ApiError> {
        // Stored records, overlaid with what the worker changed since its
        // last checkpoint: the page is never stale.
        let unsaved: std::collections::HashMap<u64, _> = ctx
            .deliveries
            .unsaved(&org.id)
            .into_iter()
            .map(|d| (d.seq, d))
            .collect();
        let from = self
            .after
            .map_or(self.since, |a| a.saturating_add(1))
            .max(self.since);
        let stored = ctx.store.deliveries(
            &org.id,
            None,
            self.since,
            self.until,
            self.after,
            usize::MAX,
        )?;
        let mut merged: std::collections::BTreeMap<u64, crate::model::Delivery> =
            stored.into_iter().map(|d| (d.seq, d)).collect();
        for (seq, d) in unsaved {
            if seq >= from && seq <= self.until {
                merged.insert(seq, d);
            }
        }
        let mut page: Vec<_> = merged
            .into_values()
            .filter(|d| self.status.is_none_or(|s| s == d.status))
            .take(self.limit + 1)
            .collect();
        let more = page.len() > self.limit;
        page.truncate(self.limit);
        let next = more
            .then(|| page.last().map(|d| d.seq.to_string()))
            .flatten();
        let mut reply = Reply::ok("GetDeliveries").with_data(page);
        if let Some(n) = next {
            reply = reply.with_field("nextCursor", n);
        }
        Ok(reply)
    }
}
