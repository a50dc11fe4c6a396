//! The WhatsApp Cloud API channel (Meta Graph API).
//!
//! - [`graph`]: the Graph API client (sends, the template list, errors).
//! - [`webhook`]: the inbound webhook: signature, payload, neutral events.
//!
//! A bot's settings are Meta's "Get started" values: `phone_number_id`,
//! `waba_id`, a system user `access_token`, the `app_secret` that signs
//! webhooks, the `verify_token` of the subscription handshake, and an
//! optional `graph_base_url` (with its version; default: the instance's
//! `graph_base_url`).
//!
//! Per-user state: the customer-service window (last inbound message) and
//! the last template sent, whose ack becomes 10 "replied" when the user
//! answers without quoting another message.

pub mod graph;
pub mod webhook;

use super::{
    Channel, Content, HttpReply, Inbound, InboundRequest, Recipient, Refusal, SendError,
    SettingSpec, Settings,
};
use crate::domain::{BotKind, E164};
use crate::error::{ApiError, ErrorCode};
use futures_util::future::BoxFuture;
use graph::{Creds, Graph, GraphError};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::HashMap;

/// The settings of a WhatsApp bot.
pub const SETTINGS: &[SettingSpec] = &[
    SettingSpec::text("phone_number_id"),
    SettingSpec::text("waba_id"),
    SettingSpec::url("graph_base_url"),
    SettingSpec::secret("access_token"),
    SettingSpec::secret("app_secret"),
    SettingSpec::secret("verify_token"),
];

/// The WhatsApp channel: the Graph client and the instance's default base.
pub struct WhatsApp {
    graph: Graph,
    default_base: String,
}

/// Per-user WhatsApp state (stored as JSON by the store).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct UserState {
    /// Unix ms of the user's last inbound message (the window opens there for 24 h).
    #[serde(default)]
    last_inbound_ms: Option<i64>,
    /// `mid` of the last template sent to the user.
    #[serde(default)]
    last_template_mid: Option<String>,
}

impl UserState {
    fn read(v: &Value) -> UserState {
        serde_json::from_value(v.clone()).unwrap_or_default()
    }

    fn write(&self, v: &mut Value) {
        *v = serde_json::to_value(self).expect("state serialises");
    }
}

impl WhatsApp {
    /// The channel with `config`'s Graph base URL, provider timeout and
    /// retry schedule, over the guarded client (a bot's `graph_base_url`
    /// is an address its organization chose).
    pub fn new(config: &crate::config::Config) -> WhatsApp {
        WhatsApp {
            graph: Graph::new(
                crate::net::guarded_client(config, config.provider_timeout),
                config.provider_retry_schedule.clone(),
            ),
            default_base: config.graph_base_url.clone(),
        }
    }

    fn creds(&self, s: &Settings) -> Result<Creds, SendError> {
        let token = s
            .get("access_token")
            .ok_or_else(|| SendError::Unreachable("the bot has no access token".into()))?;
        Ok(Creds {
            base: s
                .get("graph_base_url")
                .unwrap_or(&self.default_base)
                .to_string(),
            phone_number_id: s.get("phone_number_id").unwrap_or_default().to_string(),
            waba_id: s.get("waba_id").unwrap_or_default().to_string(),
            token: crate::secrets::Secret::new(token),
        })
    }
}

fn send_error(e: GraphError) -> SendError {
    match e {
        GraphError::Api { code, desc, .. } => SendError::Rejected {
            code,
            desc,
            refusal: if not_on_whatsapp(code) {
                Refusal::RecipientGone
            } else {
                Refusal::Message
            },
        },
        GraphError::Unreachable(why) => SendError::Unreachable(why),
    }
}

/// Graph error codes meaning the number cannot receive WhatsApp messages:
/// ack -2 "User does not exist on WhatsApp" (131026 Message undeliverable).
pub fn not_on_whatsapp(code: i64) -> bool {
    code == 131026
}

/// The Graph API request body of a send (Cloud API "Messages": text with
/// `preview_url` off; template with `header` and `body` components).
fn message_body(to: &str, content: &Content, reference: &str) -> Value {
    let mut body = match content {
        Content::Text { body } => json!({
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": to,
            "type": "text",
            "text": {"preview_url": false, "body": body},
        }),
        Content::Template {
            name,
            language,
            body,
            header,
        } => {
            let mut components = Vec::new();
            if let Some(h) = header {
                components.push(json!({"type": "header", "parameters": h}));
            }
            if !body.is_empty() {
                components.push(json!({"type": "body", "parameters": body}));
            }
            let mut tpl = json!({"name": name, "language": {"code": language}});
            if !components.is_empty() {
                tpl["components"] = Value::Array(components);
            }
            json!({
                "messaging_product": "whatsapp",
                "recipient_type": "individual",
                "to": to,
                "type": "template",
                "template": tpl,
            })
        }
    };
    // Echoed in statuses: they find the message even if a crash lost its wamid.
    body["biz_opaque_callback_data"] = Value::String(reference.to_string());
    body
}

impl Channel for WhatsApp {
    fn kind(&self) -> BotKind {
        BotKind::Whatsapp
    }

    fn provider(&self) -> &'static str {
        "the WhatsApp Cloud API"
    }

    fn ready(&self, s: &Settings) -> Result<(), String> {
        match s.get("access_token") {
            Some(_) => Ok(()),
            None => Err(
                "has no Cloud API credentials (UpdateBot phone_number_id, waba_id, access_token)"
                    .into(),
            ),
        }
    }

    fn recipient(&self, _uid: &str, phone: &str) -> Result<Recipient, ApiError> {
        let phone = E164::parse(phone).map_err(|_| {
            ApiError::new(
                ErrorCode::InvalidPhone,
                "the user has no valid phone number",
            )
        })?;
        Ok(Recipient {
            address: phone.digits().to_string(),
            phone: Some(phone),
        })
    }

    fn send<'a>(
        &'a self,
        settings: &'a Settings,
        to: &'a Recipient,
        content: &'a Content,
        reference: &'a str,
    ) -> BoxFuture<'a, Result<String, SendError>> {
        Box::pin(async move {
            let creds = self.creds(settings)?;
            let body = message_body(&to.address, content, reference);
            self.graph.send(&creds, &body).await.map_err(send_error)
        })
    }

    fn sandbox_id(&self, to: &Recipient, _mid: &str) -> String {
        use base64::Engine;
        // Graph ids are `wamid.` + base64 of an opaque blob naming the number.
        let blob = format!("{}_{}", to.address, super::random_hex().to_uppercase());
        format!(
            "wamid.{}",
            base64::engine::general_purpose::STANDARD.encode(blob)
        )
    }

    fn sandbox_refusal(&self) -> SendError {
        send_error(GraphError::Api {
            http: 400,
            code: 131026,
            desc: "Message undeliverable".into(),
        })
    }

    fn rejected(&self, code: i64, desc: &str) -> ApiError {
        ApiError::new(ErrorCode::WhatsAppError, "WhatsApp error")
            .with_field("whatsappErrorCode", code)
            .with_field("whatsappErrorDesc", desc)
    }

    fn error_fields(&self) -> (&'static str, &'static str) {
        ("whatsappErrorCode", "whatsappErrorDesc")
    }

    /// The subscription handshake (Meta, "Webhooks: verification
    /// requests"): `hub.mode=subscribe` and the bot's `hub.verify_token` →
    /// 200 with `hub.challenge` as plain text; anything else → 403.
    fn handshake(&self, s: &Settings, q: &HashMap<String, String>) -> HttpReply {
        let given = q.get("hub.verify_token").map(String::as_str);
        let ok = q.get("hub.mode").map(String::as_str) == Some("subscribe")
            && matches!((s.get("verify_token"), given), (Some(e), Some(g))
                if subtle::ConstantTimeEq::ct_eq(e.as_bytes(), g.as_bytes()).into());
        match (ok, q.get("hub.challenge")) {
            (true, Some(challenge)) => HttpReply::text(200, challenge.clone()),
            _ => HttpReply::text(403, "verification failed\n"),
        }
    }

    /// `X-Hub-Signature-256` against the raw body with the app secret
    /// (constant time): 401 when missing or wrong, or when no app secret is
    /// configured.
    fn verify(&self, s: &Settings, req: &InboundRequest<'_>) -> Result<(), HttpReply> {
        let Some(secret) = s.get("app_secret") else {
            tracing::warn!("webhook POST for a bot without an app secret; refused");
            return Err(HttpReply::text(401, "no app secret configured\n"));
        };
        let sig = req
            .headers
            .get("x-hub-signature-256")
            .and_then(|v| v.to_str().ok());
        if webhook::signature_valid(secret, req.body, sig) {
            Ok(())
        } else {
            tracing::debug!("webhook POST with a wrong or missing signature");
            Err(HttpReply::text(401, "invalid signature\n"))
        }
    }

    /// A `whatsapp_business_account` notification's events; other objects
    /// are acknowledged and ignored (Meta would otherwise retry them).
    fn parse(&self, body: &[u8]) -> Result<Vec<Inbound>, HttpReply> {
        let n: webhook::Notification = serde_json::from_slice(body).map_err(|e| {
            tracing::debug!(error = %e, "unreadable webhook body");
            HttpReply::text(400, "not a webhook body\n")
        })?;
        if n.object != "whatsapp_business_account" {
            return Ok(Vec::new());
        }
        Ok(n.events())
    }

    fn templates<'a>(
        &'a self,
        settings: &'a Settings,
    ) -> Option<BoxFuture<'a, Result<Vec<Value>, SendError>>> {
        Some(Box::pin(async move {
            let creds = self.creds(settings)?;
            self.graph.templates(&creds).await.map_err(send_error)
        }))
    }

    fn keeps_state(&self) -> bool {
        true
    }

    fn note_send(&self, state: &mut Value, mid: &str, content: &Content) {
        if let Content::Template { .. } = content {
            let mut st = UserState::read(state);
            st.last_template_mid = Some(mid.to_string());
            st.write(state);
        }
    }

    fn note_inbound(&self, state: &mut Value, at_ms: i64) -> Option<String> {
        let mut st = UserState::read(state);
        st.last_inbound_ms = Some(st.last_inbound_ms.unwrap_or(0).max(at_ms));
        st.write(state);
        st.last_template_mid
    }
}

/// The body text of `template` (a Graph template object) with `parameters`
/// filled in: `{{1}}` … by position, `{{name}}` by `parameter_name` (Meta's
/// positional and named parameter formats).
pub fn render_template(template: &Value, parameters: &[Value]) -> String {
    let body = template
        .get("components")
        .and_then(Value::as_array)
        .and_then(|cs| {
            cs.iter().find(|c| {
                c.get("type")
                    .and_then(Value::as_str)
                    .is_some_and(|t| t.eq_ignore_ascii_case("body"))
            })
        })
        .and_then(|c| c.get("text"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    let mut out = body.to_string();
    for (i, p) in parameters.iter().enumerate() {
        let Some(text) = p.get("text").and_then(Value::as_str) else {
            continue;
        };
        out = out.replace(&format!("{{{{{}}}}}", i + 1), text);
        if let Some(n) = p.get("parameter_name").and_then(Value::as_str) {
            out = out.replace(&format!("{{{{{n}}}}}"), text);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_render_positional_and_named_parameters() {
        let t = json!({"components":[{"type":"HEADER","text":"x"},
            {"type":"BODY","text":"Hi {{1}}, order {{2}} ({{ref}})"}]});
        let p = [
            json!({"type":"text","text":"David"}),
            json!({"type":"text","text":"ORD-1"}),
            json!({"type":"text","text":"r9","parameter_name":"ref"}),
        ];
        assert_eq!(render_template(&t, &p), "Hi David, order ORD-1 (r9)");
    }

    #[test]
    fn state_keeps_the_window_and_the_last_template() {
        let w = WhatsApp {
            graph: Graph::new(reqwest::Client::new(), vec![]),
            default_base: String::new(),
        };
        let mut st = Value::Null;
        let tpl = Content::Template {
            name: "t".into(),
            language: "en".into(),
            body: vec![],
            header: None,
        };
        w.note_send(&mut st, "m1", &Content::Text { body: "x".into() });
        assert_eq!(w.note_inbound(&mut st.clone(), 5), None);
        w.note_send(&mut st, "m2", &tpl);
        assert_eq!(w.note_inbound(&mut st, 7).as_deref(), Some("m2"));
        assert_eq!(st["last_inbound_ms"], 7);
        // State written by the WhatsApp-only layout reads the same.
        let old = json!({"last_inbound_ms": 1, "last_template_mid": "m0"});
        assert_eq!(w.note_inbound(&mut old.clone(), 0).as_deref(), Some("m0"));
    }
}
