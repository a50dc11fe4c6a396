//! Users as commands and channels change them: lookups with the reference's
//! 1005, durable updates that emit `onUserUpdate` with the changed fields,
//! and the user a channel first meets.

use crate::ctx::Ctx;
use crate::error::{ApiError, ErrorCode};
use crate::events::{changed_fields, on_user_update};
use crate::model::{Bot, Org, User, UserRecord};

/// 1005 Unknown user.
pub fn unknown_user(uid: &str) -> ApiError {
    ApiError::new(ErrorCode::UnknownUser, format!("unknown user {uid:?}"))
}

/// Reads user `uid` of `org` (1005 when absent).
pub fn load_user(ctx: &Ctx, org: &Org, uid: &str) -> Result<UserRecord, ApiError> {
    ctx.store
        .user(&org.id, uid)?
        .ok_or_else(|| unknown_user(uid))
}

/// Changes user `uid` of `org` with `change`, durably; emits `onUserUpdate`
/// with the changed fields when anything changed. Errors: 1005.
pub async fn update_user(
    ctx: &Ctx,
    org: &Org,
    uid: &str,
    change: impl FnOnce(&mut User),
) -> Result<User, ApiError> {
    ctx.store
        .write(&org.id, |tx| {
            let mut rec = tx
                .store()
                .user(&org.id, uid)?
                .ok_or_else(|| unknown_user(uid))?;
            let before = rec.user.clone();
            change(&mut rec.user);
            let update = changed_fields(&before, &rec.user);
            if !update.is_empty() {
                tx.put_user(&rec);
                tx.emit(on_user_update(&rec.user, update))?;
            }
            Ok(rec.user)
        })
        .await
}

/// A new user `uid` of `bot`, reached at `phone` (may be empty), named
/// `name` (may be empty: first and last name split from it).
pub fn new_user(bot: &Bot, uid: &str, phone: &str, name: &str) -> UserRecord {
    let (first, last) = crate::domain::split_name(name);
    UserRecord {
        user: User {
            uid: uid.to_string(),
            name: name.to_string(),
            first_name: first,
            last_name: last,
            email: String::new(),
            phone: phone.to_string(),
            bot: bot.kind.display().to_string(),
            bot_id: bot.id,
            lang: String::new(),
            created: crate::time::now_iso(),
            notes: String::new(),
            url: String::new(),
            disabled: false,
        },
        tags: Vec::new(),
    }
}
