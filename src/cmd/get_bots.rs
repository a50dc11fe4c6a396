//! `GetBots` (extension): the organization's bots.
//!
//! # Format
//! `{"cmd":"GetBots"}` → `{"ok":1,"cmd":"GetBots","data":[{"botID":73,"kind":"telegram","name":"…","created":"…"}]}`;
//! a WhatsApp bot adds `whatsapp` with its ids and `access_token_set`,
//! `app_secret_set`, `verify_token_set` (never the secrets).

use crate::error::ApiError;
use crate::model::{Bot, Org};
use crate::reply::Reply;
use crate::Ctx;

/// List bots.
#[derive(Debug)]
pub struct GetBots;

impl GetBots {
    /// Replies with every bot, by `botID`.
    pub fn apply(self, ctx: &Ctx, org: &Org) -> Result<Reply, ApiError> {
        let bots: Vec<_> = ctx.store.bots(&org.id)?.iter().map(Bot::view).collect();
        Ok(Reply::ok("GetBots").with_data(bots))
    }
}
