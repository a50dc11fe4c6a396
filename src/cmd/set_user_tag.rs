//! `SetUserTag` (reference, "SetUserTag"): adds an existing tag to a user.
//!
//! # Format
//! `{"cmd":"SetUserTag","uid":…,"tag":"Customer"}` → `{"ok":1,"cmd":"SetUserTag"}`.
//! Tags match case-insensitively; setting a tag the user has is a no-op.
//!
//! # Errors
//! 1025 missing uid, 3050 tag missing or not 3–50 characters, 3053 tag does
//! not exist, 1005 unknown user.

use super::Fields;
use crate::ctx::Ctx;
use crate::domain::TagName;
use crate::error::{ApiError, ErrorCode};
use crate::model::Org;
use crate::reply::Reply;
use crate::users::unknown_user;

/// Tag a user.
#[derive(Debug)]
pub struct SetUserTag {
    uid: String,
    tag: TagName,
}

/// Parses the `uid` and `tag` fields shared by `SetUserTag` and `DeleteUserTag`.
pub(super) fn parse_uid_tag(f: &Fields) -> Result<(String, TagName), ApiError> {
    let uid = f.uid()?.to_string();
    let tag = f.opt_str("tag", ErrorCode::InvalidTag)?.unwrap_or_default();
    Ok((uid, TagName::parse(tag)?))
}

/// 3053 Tag does not exist.
pub(super) fn unknown_tag(tag: &TagName) -> ApiError {
    ApiError::new(
        ErrorCode::UnknownTag,
        format!("tag {:?} does not exist", tag.as_str()),
    )
}

impl SetUserTag {
    pub(crate) fn parse(f: &Fields) -> Result<SetUserTag, ApiError> {
        let (uid, tag) = parse_uid_tag(f)?;
        Ok(SetUserTag { uid, tag })
    }

    /// Adds the tag durably.
    pub async fn apply(self, ctx: &Ctx, org: &Org) -> Result<Reply, ApiError> {
        ctx.store
            .write(&org.id, |tx| {
                let tag = tx
                    .store()
                    .tag(&org.id, &self.tag.key())?
                    .ok_or_else(|| unknown_tag(&self.tag))?;
                let mut rec = tx
                    .store()
                    .user(&org.id, &self.uid)?
                    .ok_or_else(|| unknown_user(&self.uid))?;
                if !rec.tags.iter().any(|t| t.eq_ignore_ascii_case(&tag.name)) {
                    let max = ctx.config.max_tags_per_user;
                    if rec.tags.len() >= max {
                        return Err(ApiError::over_cap(
                            "tags on a user",
                            max,
                            "max_tags_per_user",
                        ));
                    }
                    rec.tags.push(tag.name);
                    tx.put_user(&rec);
                }
                Ok::<_, ApiError>(())
            })
            .await?;
        Ok(Reply::ok("SetUserTag"))
    }
}
