//! `GetBots` (extension): the organization's bots.
//!
//! # Format
//! `{"cmd":"GetBots"}` → `{"ok":1,"cmd":"GetBots","data":[{"botID":73,"kind":"telegram","name":"…","created":"…"}]}`;
//! a bot with settings adds an object named after its kind with them
//! (WhatsApp: `whatsapp` with its ids and `access_token_set`,
//! `app_secret_set`, `verify_token_set`; never the secrets).

use crate::ctx::Ctx;
use crate::error::ApiError;
use crate::model::Org;
use crate::reply::Reply;

/// List bots.
#[derive(Debug)]
pub struct GetBots;

impl GetBots {
    /// Replies with every bot, by `botID`.
    pub fn apply(self, ctx: &Ctx, org: &Org) -> Result<Reply, ApiError> {
        let bots: Vec<_> = ctx
            .store
            .bots(&org.id)?
            .iter()
            .map(crate::bots::view)
            .collect();
        Ok(Reply::ok("GetBots").with_data(bots))
    }
}
