//! `CreateBot` (extension): a bot is the channel users belong to.
//!
//! # Format
//! `{"cmd":"CreateBot","botID":73,"kind":"telegram","name":"Support"}` →
//! `{"ok":1,"cmd":"CreateBot","data":{"botID":73,"kind":"telegram","name":"Support","created":"…"}}`.
//! Creating an existing `botID` again with the same kind renames it.
//!
//! # Errors
//! 1008 missing botID, 1015 botID not a non-negative integer, 1016 `kind`
//! missing, not one of whatsapp|sms|telegram|web, or different from the
//! existing bot's, 1022 name over 100 characters.

use super::Fields;
use crate::domain::{now_iso, BotKind};
use crate::error::{ApiError, ErrorCode};
use crate::model::{Bot, Org};
use crate::reply::Reply;
use crate::Ctx;

/// Create (or rename) a bot.
#[derive(Debug)]
pub struct CreateBot {
    id: u64,
    kind: BotKind,
    name: Option<String>,
}

fn wrong_kind(msg: &str) -> ApiError {
    ApiError::new(ErrorCode::WrongBotKind, msg)
}

impl CreateBot {
    pub(crate) fn parse(f: &Fields) -> Result<CreateBot, ApiError> {
        let id = f.bot_id()?;
        let kind = f
            .opt_str("kind", ErrorCode::WrongBotKind)?
            .and_then(BotKind::parse)
            .ok_or_else(|| wrong_kind("kind must be one of whatsapp, sms, telegram, web"))?;
        let name = f.opt_str("name", ErrorCode::InvalidName)?.map(str::trim);
        if name.is_some_and(|n| n.chars().count() > 100 || n.chars().any(char::is_control)) {
            return Err(ApiError::new(
                ErrorCode::InvalidName,
                "bot name: at most 100 characters",
            ));
        }
        Ok(CreateBot {
            id,
            kind,
            name: name.map(str::to_string),
        })
    }

    /// Stores the bot durably and replies with it.
    pub async fn apply(self, ctx: &Ctx, org: &Org) -> Result<Reply, ApiError> {
        let bot = ctx
            .store
            .write(&org.id, |tx| {
                let bot = match tx.store().bot(&org.id, self.id)? {
                    Some(existing) if existing.kind != self.kind => {
                        return Err(wrong_kind(&format!(
                            "bot {} exists with kind {}",
                            self.id,
                            existing.kind.as_str()
                        )))
                    }
                    Some(existing) => Bot {
                        name: self.name.unwrap_or(existing.name),
                        ..existing
                    },
                    None => Bot {
                        id: self.id,
                        kind: self.kind,
                        name: self.name.unwrap_or_default(),
                        created: now_iso(),
                    },
                };
                tx.put_bot(&bot);
                Ok(bot)
            })
            .await?;
        Ok(Reply::ok("CreateBot").with_data(bot))
    }
}
