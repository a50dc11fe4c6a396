//! `SetUserData` (reference, "SetUserData"): custom data kept with a user.
//!
//! # Format
//! `{"cmd":"SetUserData","uid":…,"data":{…},"overwrite":1,"route":"…"}` →
//! `{"ok":1,"cmd":"SetUserData"}`
//!
//! Merges the keys of `data` into the stored object by default; with
//! `overwrite:1` replaces it. A `route` names a route (`SetRoute`) to start
//! for the user once the data is written; the reply does not wait for it.
//! Custom data is not part of the user object, so no `onUserUpdate` is sent.
//!
//! # Errors
//! 1025 missing uid, 1017 `data` missing or not an object (or holding a
//! number out of range), or the merged data over `max_user_data_bytes`
//! (nothing written), 1012 unknown route (nothing written),
//! 1005 unknown user.

use super::Fields;
use crate::ctx::Ctx;
use crate::error::{ApiError, ErrorCode};
use crate::model::Org;
use crate::reply::Reply;
use crate::users::unknown_user;
use serde_json::{Map, Value};

/// Set custom user data.
#[derive(Debug)]
pub struct SetUserData {
    uid: String,
    data: Map<String, Value>,
    route: Option<String>,
    overwrite: bool,
}

impl SetUserData {
    pub(crate) fn parse(f: &Fields) -> Result<SetUserData, ApiError> {
        let uid = f.uid()?.to_string();
        let bad = |m: String| ApiError::new(ErrorCode::InvalidJson, m);
        let data = match f.checked_value("data") {
            Some(Ok(Value::Object(m))) => m,
            Some(Err(why)) => return Err(bad(format!("data: {why}"))),
            _ => return Err(bad("data must be a JSON object".into())),
        };
        let route = f
            .opt_str("route", ErrorCode::UnknownRoute)?
            .filter(|r| !r.is_empty())
            .map(str::to_string);
        Ok(SetUserData {
            uid,
            data,
            route,
            overwrite: f.flag("overwrite")?,
        })
    }

    /// Stores the data durably.
    pub async fn apply(self, ctx: &Ctx, org: &Org) -> Result<Reply, ApiError> {
        let route = match &self.route {
            Some(name) => Some(
                ctx.store
                    .route(&org.id, name)?
                    .ok_or_else(|| super::send_message::unknown_route(name))?,
            ),
            None => None,
        };
        ctx.store
            .write(&org.id, |tx| {
                if tx.store().user(&org.id, &self.uid)?.is_none() {
                    return Err(unknown_user(&self.uid));
                }
                let mut stored = match tx.store().user_data(&org.id, &self.uid)? {
                    Some(Value::Object(m)) if !self.overwrite => m,
                    _ => Map::new(),
                };
                stored.extend(self.data);
                let stored = Value::Object(stored);
                let size = serde_json::to_vec(&stored).map_or(usize::MAX, |v| v.len());
                let max = ctx.config.max_user_data_bytes;
                if size > max {
                    return Err(ApiError::new(
                        ErrorCode::InvalidJson,
                        format!("the user's data would be {size} bytes: at most {max} (max_user_data_bytes); nothing was written"),
                    ));
                }
                tx.put_user_data(&self.uid, &stored);
                Ok::<_, ApiError>(())
            })
            .await?;
        if let Some(route) = route {
            // The data is durable; the route runs on without the reply.
            super::route_run::start(ctx, &org.id, &self.uid, &route, "", None).await?;
        }
        Ok(Reply::ok("SetUserData"))
    }
}
