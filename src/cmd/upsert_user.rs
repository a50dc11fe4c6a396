//! `UpsertUser` (extension): creates or updates the user of a bot and phone
//! number — the CRM import that 247Rep's contacts upsert offers.
//!
//! # Format
//! `{"cmd":"UpsertUser","botID":3941,"phone":"+447922029419","name":"Billy Bob","email":"…","lang":"en"}`
//! → `{"ok":1,"cmd":"UpsertUser","uid":"3941-wa3-447922029419","data":{user}}`.
//! The uid is `<botID>-<channel>-<E.164 digits>`. A new user emits
//! `onUserCreate`; an existing one gets the given fields and emits
//! `onUserUpdate` with those that changed.
//!
//! # Errors
//! 1008 missing botID, 1015 unknown bot, 1016 bot not phone-based (whatsapp
//! or sms), 1009/1007/1006 phone, 1022 name, 1024 email, 1017 lang not a
//! language tag.

use super::Fields;
use crate::ctx::Ctx;
use crate::domain::{make_uid, Email, UserName, E164};
use crate::error::{ApiError, ErrorCode};
use crate::events::{changed_fields, on_user_create, on_user_update};
use crate::model::{Org, User, UserRecord};
use crate::reply::Reply;
use crate::time::now_iso;

/// Create or update a user by bot and phone.
#[derive(Debug)]
pub struct UpsertUser {
    bot_id: u64,
    phone: E164,
    name: Option<UserName>,
    email: Option<Email>,
    lang: Option<String>,
}

fn parse_lang(s: &str) -> Result<String, ApiError> {
    let ok = (2..=35).contains(&s.len())
        && s.split('-')
            .all(|p| !p.is_empty() && p.len() <= 8 && p.bytes().all(|b| b.is_ascii_alphanumeric()));
    if !ok {
        return Err(ApiError::new(
            ErrorCode::InvalidJson,
            "lang must be a language code such as \"en\" or \"pt-BR\"",
        ));
    }
    Ok(s.to_string())
}

impl UpsertUser {
    pub(crate) fn parse(f: &Fields) -> Result<UpsertUser, ApiError> {
        let bot_id = f.bot_id()?;
        let phone = E164::parse(
            f.opt_str("phone", ErrorCode::InvalidPhone)?
                .unwrap_or_default(),
        )?;
        let name = f
            .opt_str("name", ErrorCode::InvalidName)?
            .map(UserName::parse)
            .transpose()?;
        let email = f
            .opt_str("email", ErrorCode::InvalidEmail)?
            .map(Email::parse)
            .transpose()?;
        let lang = f
            .opt_str("lang", ErrorCode::InvalidJson)?
            .map(parse_lang)
            .transpose()?;
        Ok(UpsertUser {
            bot_id,
            phone,
            name,
            email,
            lang,
        })
    }

    /// Creates or updates the user durably and replies with it.
    pub async fn apply(self, ctx: &Ctx, org: &Org) -> Result<Reply, ApiError> {
        let bot = ctx.bot(org, self.bot_id)?;
        if !bot.kind.phone_based() {
            return Err(ApiError::new(
                ErrorCode::WrongBotKind,
                format!(
                    "bot {} is {}: UpsertUser needs a whatsapp or sms bot",
                    bot.id,
                    bot.kind.as_str()
                ),
            ));
        }
        let uid = make_uid(bot.id, bot.kind, self.phone.digits());
        let user = ctx
            .store
            .write(&org.id, |tx| {
                let existing = tx.store().user(&org.id, &uid)?;
                let is_new = existing.is_none();
                let mut rec = existing.unwrap_or_else(|| UserRecord {
                    user: User {
                        uid: uid.clone(),
                        name: String::new(),
                        first_name: String::new(),
                        last_name: String::new(),
                        email: String::new(),
                        phone: self.phone.as_str().to_string(),
                        bot: bot.kind.display().to_string(),
                        bot_id: bot.id,
                        lang: String::new(),
                        created: now_iso(),
                        notes: String::new(),
                        url: String::new(),
                        disabled: false,
                    },
                    tags: Vec::new(),
                });
                let before = rec.user.clone();
                let u = &mut rec.user;
                if let Some(name) = &self.name {
                    u.name = name.as_str().to_string();
                    (u.first_name, u.last_name) = name.split();
                }
                if let Some(email) = &self.email {
                    u.email = email.as_str().to_string();
                }
                if let Some(lang) = &self.lang {
                    u.lang.clone_from(lang);
                }
                if is_new {
                    tx.put_new_user(&mut rec);
                    tx.emit(on_user_create(&rec.user))?;
                } else {
                    let update = changed_fields(&before, &rec.user);
                    if !update.is_empty() {
                        tx.put_user(&rec);
                        tx.emit(on_user_update(&rec.user, update))?;
                    }
                }
                Ok::<_, ApiError>(rec.user)
            })
            .await?;
        Ok(Reply::ok("UpsertUser").with_uid(uid).with_data(user))
    }
}
