//! `GetWhatsAppTemplate` (reference): a cached template, to inspect its
//! structure. The cache is synced from the Graph API's
//! `/{waba_id}/message_templates` (all pages) every `template_refresh`
//! seconds and on a miss.
//!
//! # Format
//! `{"cmd":"GetWhatsAppTemplate","botID":3941,"templateName":"followup_inquiry_request","language":"en"}`
//! → `{"ok":1,"cmd":"GetWhatsAppTemplate","template":{"name":"…","language":"en","status":"APPROVED","category":"…","components":[…],"id":"…"}}`
//!
//!
//! Extension `list: true` (no `templateName` or `language` needed):
//! `{"ok":1,"cmd":"GetWhatsAppTemplate","templates":[…every APPROVED template…]}`,
//! what an agent picks from when the customer-service window is closed.
//!
//! # Errors
//! 1008 missing botID, 3003 missing templateName, 3004 missing language,
//! 1015 unknown bot, 1016 not a configured whatsapp bot, 3000 no templates,
//! 3001 no such template, 3002/2003 the sync failed.

use super::Fields;
use crate::ctx::Ctx;
use crate::error::ApiError;
use crate::messages::templates;
use crate::model::Org;
use crate::reply::Reply;

/// Read a cached template.
#[derive(Debug)]
pub struct GetWhatsAppTemplate {
    bot_id: u64,
    /// `None`: the `list` extension.
    wanted: Option<(String, String)>,
}

impl GetWhatsAppTemplate {
    pub(crate) fn parse(f: &Fields) -> Result<GetWhatsAppTemplate, ApiError> {
        let bot_id = f.bot_id()?;
        if f.flag("list")? {
            return Ok(GetWhatsAppTemplate {
                bot_id,
                wanted: None,
            });
        }
        let (name, language) = super::fields::template_of(f)?;
        Ok(GetWhatsAppTemplate {
            bot_id,
            wanted: Some((name, language)),
        })
    }

    /// Replies with the template from the cache (synced when needed).
    pub async fn apply(self, ctx: &Ctx, org: &Org) -> Result<Reply, ApiError> {
        let bot = ctx.bot(org, self.bot_id)?;
        let (channel, settings) = ctx.channel_for(org.sandbox, &bot)?;
        let Some((name, language)) = &self.wanted else {
            let all = templates::approved(ctx, &org.id, &bot, (&*channel, &settings)).await?;
            return Ok(Reply::ok("GetWhatsAppTemplate").with_field("templates", all));
        };
        let t = templates::find(ctx, &org.id, &bot, (&*channel, &settings), name, language).await?;
        Ok(Reply::ok("GetWhatsAppTemplate").with_field("template", t))
    }
}
