//! `GetBots` (extension): the organization's bots.
//!
//! # Format
//! `{"cmd":"GetBots"}` → `{"ok":1,"cmd":"GetBots","data":[{"botID":73,"kind":"telegram","name":"…","created":"…"}]}`

use crate::error::ApiError;
use crate::model::Org;
use crate::reply::Reply;
use crate::Ctx;

/// List bots.
#[derive(Debug)]
pub struct GetBots;

impl GetBots {
    /// Replies with every bot, by `botID`.
    pub fn apply(self, ctx: &Ctx, org: &Org) -> Result<Reply, ApiError> {
        Ok(Reply::ok("GetBots").with_data(ctx.store.bots(&org.id)?))
    }
}
