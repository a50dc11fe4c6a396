//! `GetConversationsFlat` (reference, "Commands - Conversations"): the
//! rows of closed conversations, flat, in close order, at most 1000
//! conversations per reply (a conversation is never cut in two).
//!
//! # Format
//! `{"cmd":"GetConversationsFlat","startDate":"2026-11-01T00:00:00Z","cursor":"41"}` →
//! `{"ok":1,"cmd":"GetConversationsFlat","data":[{…GetConversation's row…,"cid":"…"}],"nextCursor":"57"}`.
//!
//! Extensions: `startDate`, `endDate` (ISO 8601, on the close time), and
//! `cursor`: the reply's top-level `nextCursor` names the last conversation
//! it holds, so a poller that always passes the last `nextCursor` receives
//! every conversation closed since, exactly once, in close order (closes
//! take a per-organization sequence under the write lock). Without
//! `cursor`, from the first conversation closed at or after `startDate`
//! (or the first ever).
//!
//! # Errors
//! 1003 invalid `startDate`, 1002 invalid `endDate`, 1021 `startDate` after
//! `endDate`, 1017 a `cursor` this gateway did not give.

use super::Fields;
use crate::ctx::Ctx;
use crate::domain::parse_created_date;
use crate::error::{ApiError, ErrorCode};
use crate::model::Org;
use crate::reply::Reply;
use bytestring::ByteString;

/// Most conversations per reply (reference: "Limited to 1000 conversations").
pub const MAX_CONVERSATIONS: usize = 1000;

/// Read closed conversations.
#[derive(Debug)]
pub struct GetConversationsFlat {
    start_ms: Option<i64>,
    end_ms: Option<i64>,
    after: Option<u64>,
}

impl GetConversationsFlat {
    pub(crate) fn parse(f: &Fields) -> Result<GetConversationsFlat, ApiError> {
        let date = |name: &str, code: ErrorCode| -> Result<Option<i64>, ApiError> {
            match f.opt_str(name, code)? {
                None => Ok(None),
                Some(s) if s.trim().is_empty() => Ok(None),
                Some(s) => parse_created_date(s.trim())
                    .map(|t| Some(t.timestamp_millis()))
                    .map_err(|_| ApiError::new(code, format!("invalid {name}: expected ISO 8601"))),
            }
        };
        let start_ms = date("startDate", ErrorCode::InvalidStartDate)?;
        let end_ms = date("endDate", ErrorCode::InvalidEndDate)?;
        if let (Some(s), Some(e)) = (start_ms, end_ms) {
            if s > e {
                return Err(ApiError::new(
                    ErrorCode::StartAfterEnd,
                    "startDate is after endDate",
                ));
            }
        }
        let after = match f.opt_str("cursor", ErrorCode::InvalidJson)? {
            None => None,
            Some("") => None,
            Some(c) => Some(c.parse::<u64>().map_err(|_| {
                ApiError::new(
                    ErrorCode::InvalidJson,
                    "cursor: pass a nextCursor of an earlier reply",
                )
            })?),
        };
        Ok(GetConversationsFlat {
            start_ms,
            end_ms,
            after,
        })
    }

    /// Replies with the rows of up to 1000 closed conversations.
    pub fn apply(self, ctx: &Ctx, org: &Org) -> Result<Reply, ApiError> {
        let from = match (self.after, self.start_ms) {
            (Some(a), _) => Some(a + 1),
            (None, Some(start)) => ctx.store.first_closed_since(&org.id, start)?,
            (None, None) => Some(1),
        };
        let mut data = Vec::with_capacity(64 * 1024);
        data.push(b'[');
        let mut last = self.after.unwrap_or(0);
        if let Some(from) = from {
            for (seq, c) in ctx
                .store
                .closed_conversations(&org.id, from, MAX_CONVERSATIONS)?
            {
                if self.end_ms.is_some_and(|end| c.closed_ms > end)
                    || self.start_ms.is_some_and(|start| c.closed_ms < start)
                {
                    if self.end_ms.is_some_and(|end| c.closed_ms > end) {
                        break;
                    }
                    last = seq;
                    continue;
                }
                last = seq;
                // The stored rows are a JSON array: splice its elements in.
                let inner = c.rows.trim();
                let inner = &inner[1..inner.len().saturating_sub(1)];
                if !inner.trim().is_empty() {
                    if data.len() > 1 {
                        data.push(b',');
                    }
                    data.extend_from_slice(inner.as_bytes());
                }
            }
        }
        data.push(b']');
        Ok(Reply::ok("GetConversationsFlat")
            .with_json_data(ByteString::try_from(data).map_err(|_| ApiError::internal())?)
            .with_field("nextCursor", last.to_string()))
    }
}
