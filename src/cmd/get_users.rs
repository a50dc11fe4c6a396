//! `GetUsers` (reference, "GetUsers"): many users, at most 5000 per reply.
//!
//! # Format
//! `{"cmd":"GetUsers","botID":73,"CreatedDate":"2020-03-01T00:00:00"}` →
//! `{"ok":1,"cmd":"GetUsers","data":[{user},…]}`
//!
//! Extension: `limit` (1–5000, default 5000) and `cursor` (the opaque
//! `nextCursor` of the previous page). When more users remain, the reply has
//! a top-level `nextCursor`. Users come in uid order.
//!
//! # Errors
//! 1015 `botID` not an integer or not a bot, 1003 invalid `CreatedDate`,
//! 1017 invalid `limit` or `cursor`.

use super::Fields;
use crate::ctx::Ctx;
use crate::domain::parse_created_date;
use crate::error::{ApiError, ErrorCode};
use crate::model::Org;
use crate::reply::Reply;
use chrono::{DateTime, Utc};

/// The reference's maximum users per reply.
pub const MAX_USERS: usize = 5000;

/// List users.
#[derive(Debug)]
pub struct GetUsers {
    bot_id: Option<u64>,
    created_after: Option<DateTime<Utc>>,
    limit: usize,
    cursor: Option<String>,
}

impl GetUsers {
    pub(crate) fn parse(f: &Fields) -> Result<GetUsers, ApiError> {
        let bot_id = f.opt_u64("botID", ErrorCode::InvalidJson)?;
        let created_after = f
            .opt_str("CreatedDate", ErrorCode::InvalidStartDate)?
            .filter(|s| !s.is_empty())
            .map(parse_created_date)
            .transpose()?;
        let limit = match f.opt_u64("limit", ErrorCode::InvalidJson)? {
            None => MAX_USERS,
            Some(n) if (1..=MAX_USERS as u64).contains(&n) => n as usize,
            Some(_) => {
                return Err(ApiError::new(
                    ErrorCode::InvalidJson,
                    "limit must be between 1 and 5000",
                ))
            }
        };
        let cursor = f
            .opt_str("cursor", ErrorCode::InvalidJson)?
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        Ok(GetUsers {
            bot_id,
            created_after,
            limit,
            cursor,
        })
    }

    /// Replies with the page in `data` and, when more remain, `nextCursor`.
    pub fn apply(self, ctx: &Ctx, org: &Org) -> Result<Reply, ApiError> {
        if let Some(b) = self.bot_id {
            if ctx.store.bot(&org.id, b)?.is_none() {
                return Err(ApiError::new(
                    ErrorCode::UnknownBot,
                    format!("unknown botID {b}"),
                ));
            }
        }
        let after = self.created_after;
        let mut users = ctx.store.users(
            &org.id,
            self.bot_id,
            self.cursor.as_deref(),
            self.limit + 1,
            |u| match after {
                None => true,
                Some(t) => DateTime::parse_from_rfc3339(&u.created).is_ok_and(|c| c > t),
            },
        )?;
        let more = users.len() > self.limit;
        users.truncate(self.limit);
        let next = more.then(|| users.last().map(|u| u.uid.clone())).flatten();
        let mut reply = Reply::ok("GetUsers").with_data(users);
        if let Some(next) = next {
            reply = reply.with_field("nextCursor", next);
        }
        Ok(reply)
    }
}
