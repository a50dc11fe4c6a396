//! `CreateUserTag` (reference, "CreateUserTag"): defines a tag.
//!
//! # Format
//! `{"cmd":"CreateUserTag","tag":"Premium","color":"#FFD700","description":"…"}` →
//! `{"ok":1,"cmd":"CreateUserTag","data":1}`. When a tag of that name
//! (case-insensitively) exists already, nothing changes and `data` is 0.
//!
//! # Errors
//! 3050 tag missing or not 3–50 characters, 3051 color not hex like
//! `#FF5733`, 3052 description over 100 characters.

use super::Fields;
use crate::ctx::Ctx;
use crate::domain::{parse_color, parse_description, TagName};
use crate::error::{ApiError, ErrorCode};
use crate::model::{Org, Tag};
use crate::reply::Reply;

/// Define a tag.
#[derive(Debug)]
pub struct CreateUserTag {
    tag: Tag,
}

impl CreateUserTag {
    pub(crate) fn parse(f: &Fields) -> Result<CreateUserTag, ApiError> {
        let name = TagName::parse(f.opt_str("tag", ErrorCode::InvalidTag)?.unwrap_or_default())?;
        let color = f
            .opt_str("color", ErrorCode::InvalidTagColor)?
            .map(parse_color)
            .transpose()?
            .unwrap_or_default();
        let description = f
            .opt_str("description", ErrorCode::InvalidTagDescription)?
            .map(parse_description)
            .transpose()?
            .unwrap_or_default();
        Ok(CreateUserTag {
            tag: Tag {
                name: name.as_str().to_string(),
                color,
                description,
            },
        })
    }

    /// Stores the tag durably; `data` is 1 when created, 0 when it existed.
    pub async fn apply(self, ctx: &Ctx, org: &Org) -> Result<Reply, ApiError> {
        let created = ctx
            .store
            .write(&org.id, |tx| {
                if tx
                    .store()
                    .tag(&org.id, &self.tag.name.to_lowercase())?
                    .is_some()
                {
                    return Ok::<_, ApiError>(false);
                }
                let max = ctx.config.max_tags_per_org;
                if tx.store().tag_count(&org.id)? >= max {
                    return Err(ApiError::over_cap(
                        "tags per organization",
                        max,
                        "max_tags_per_org",
                    ));
                }
                tx.put_tag(&self.tag);
                Ok(true)
            })
            .await?;
        Ok(Reply::ok("CreateUserTag").with_data(u8::from(created)))
    }
}
