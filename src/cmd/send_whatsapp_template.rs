//! `SendWhatsAppTemplate` (reference, "Commands - Sending Messages"): sends
//! an approved template to a phone number through a WhatsApp bot.
//!
//! # Format
//! `{"cmd":"SendWhatsAppTemplate","botID":3941,"phone":"+447922029419","templateName":"order_confirmation","language":"en","parameters":[{"type":"text","text":"David"}],"webhookURL":"https://…","webhookPayload":{…},"webhookHeaders":[{"name":"X-Key","value":"…"}]}`
//! → `{"ok":1,"cmd":"SendWhatsAppTemplate","phoneNumber":"+447922029419","countryIso2":"GB","uid":"3941-wa3-447922029419","mid":"…"}`.
//!
//! `parameters` become the template's `body` component, `header` its
//! `header` component (an object with `parameters`, or one parameter
//! object). The message is stored (ack 0) before the Graph API call; a new
//! recipient becomes a user (`onUserCreate`). With `webhookURL`, every ack
//! change is POSTed there ([`crate::delivery::callbacks`]). Extension: `idempotencyKey`
//! (or the POST `Idempotency-Key` header) replays the first reply for 24 h.
//!
//! # Errors
//! 1008 missing botID, 1009/1007/1006 phone, 3003 missing templateName, 3004
//! missing language, 1017 malformed parameters/header/webhook fields or
//! idempotency key (409 when the key is in use or names another request),
//! 1015 unknown bot, 1016 not a bot whose channel has templates (a
//! configured whatsapp bot), 2002 unknown
//! agentEmail, 3000 no templates, 3001 no such template (or not APPROVED),
//! 2007 one message per second per phone number, 2008 send rate per token,
//! 3002 Graph API error (`whatsappErrorCode`, `whatsappErrorDesc`), 2003 the
//! Graph API did not answer.

use super::{Fields, SendOptions};
use crate::channel::whatsapp::render_template;
use crate::channel::{Content, Recipient};
use crate::ctx::Ctx;
use crate::domain::{make_uid, E164};
use crate::error::{ApiError, ErrorCode};
use crate::idempotency::Begin;
use crate::messages::{self, templates, Outbound};
use crate::model::Org;
use crate::reply::Reply;
use serde_json::Value;

/// Send a WhatsApp template.
#[derive(Debug)]
pub struct SendWhatsAppTemplate {
    bot_id: u64,
    phone: E164,
    template_name: String,
    language: String,
    parameters: Vec<Value>,
    header: Option<Value>,
    options: SendOptions,
}

fn invalid(m: &str) -> ApiError {
    ApiError::new(ErrorCode::InvalidJson, m)
}

fn check_param(p: &Value) -> Result<(), ApiError> {
    match p.get("type").and_then(Value::as_str) {
        Some(_) if p.is_object() => Ok(()),
        _ => Err(invalid(
            "each template parameter is an object with a type, e.g. {\"type\":\"text\",\"text\":\"David\"}",
        )),
    }
}

impl SendWhatsAppTemplate {
    pub(crate) fn parse(f: &Fields) -> Result<SendWhatsAppTemplate, ApiError> {
        let bot_id = f.bot_id()?;
        let phone = E164::parse(
            f.opt_str("phone", ErrorCode::InvalidPhone)?
                .unwrap_or_default(),
        )?;
        let (template_name, language) = super::fields::template_of(f)?;
        let parameters = match f.value("parameters") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) => a,
            Some(_) => return Err(invalid("parameters must be an array")),
        };
        parameters.iter().try_for_each(check_param)?;
        let header = match f.value("header") {
            None | Some(Value::Null) => None,
            Some(h @ Value::Object(_)) => {
                match h.get("parameters") {
                    Some(Value::Array(ps)) => ps.iter().try_for_each(check_param)?,
                    Some(_) => return Err(invalid("header.parameters must be an array")),
                    None => check_param(&h)?,
                }
                Some(h)
            }
            Some(_) => return Err(invalid("header must be an object")),
        };
        Ok(SendWhatsAppTemplate {
            bot_id,
            phone,
            template_name,
            language,
            parameters,
            header,
            options: SendOptions::parse(f)?,
        })
    }

    /// Validates against the bot and its templates, then sends.
    pub async fn apply(self, ctx: &Ctx, org: &Org) -> Result<Reply, ApiError> {
        const CMD: &str = "SendWhatsAppTemplate";
        let _guard =
            match ctx
                .idempotency
                .begin(&ctx.store, org, self.options.idem.as_ref(), CMD)?
            {
                Begin::Replay(r) => return Ok(r),
                Begin::Proceed(g) => g,
            };
        let bot = ctx.bot(org, self.bot_id)?;
        let (channel, settings) = ctx.channel_for(org.sandbox, &bot)?;
        let channel = (&*channel, &settings);
        let idem = self.options.idem.clone();
        let (agent_email, callback) = self.options.resolve(ctx, org)?;
        let template = templates::find(
            ctx,
            &org.id,
            &bot,
            channel,
            &self.template_name,
            &self.language,
        )
        .await?;
        let status = template.get("status").and_then(Value::as_str).unwrap_or("");
        if !status.eq_ignore_ascii_case("APPROVED") {
            return Err(ApiError::new(
                ErrorCode::UnknownTemplate,
                format!(
                    "template {:?} is {status}, not APPROVED",
                    self.template_name
                ),
            ));
        }
        let language = template
            .get("language")
            .and_then(Value::as_str)
            .unwrap_or(&self.language)
            .to_string();
        ctx.check_phone_rate(org, self.phone.as_str())?;
        let header = self.header.as_ref().map(|h| match h.get("parameters") {
            Some(Value::Array(ps)) => ps.clone(),
            _ => vec![h.clone()],
        });
        let uid = make_uid(bot.id, bot.kind, self.phone.digits());
        let out = Outbound {
            uid: uid.clone(),
            to: Recipient {
                address: self.phone.digits().to_string(),
                phone: Some(self.phone.clone()),
            },
            typ: "text".into(),
            msg: render_template(&template, &self.parameters),
            content: Content::Template {
                name: self.template_name.clone(),
                language,
                body: self.parameters,
                header,
            },
            callback,
            agent_email,
            idem,
            cmd: CMD,
        };
        let phone = self.phone.as_str().to_string();
        let country = self.phone.country_iso2().unwrap_or("").to_string();
        let ok_reply = |mid: &str| {
            Reply::ok(CMD)
                .with_field("phoneNumber", phone.clone())
                .with_field("countryIso2", country.clone())
                .with_uid(uid.clone())
                .with_field("mid", mid)
        };
        messages::send(ctx, org, &bot, channel, out, ok_reply).await
    }
}
