//! Twilio's webhooks: the `X-Twilio-Signature` check and the form posts of
//! an incoming message ("A message comes in": `MessageSid`, `From`, `To`,
//! `Body`, `NumMedia`, `MediaUrl0`, `MediaContentType0`, `OptOutType`) and
//! of a status callback (`MessageSid`, `MessageStatus`, `ErrorCode`), read
//! leniently and turned into neutral [`Inbound`] events.
//!
//! Sources: Twilio docs "Webhooks security" (the signature), "Twilio's
//! request to your incoming message Webhook URL", "Outbound Message Status
//! in Status Callbacks", "Advanced Opt-Out" (`OptOutType`), and the
//! default opt-out and opt-in keywords of Twilio Messaging.

use crate::channel::{Inbound, InboundMessage, Profile, StatusUpdate, UserRef};
use crate::domain::E164;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use std::collections::HashMap;

/// Keywords that opt a number out (Twilio's defaults), matched trimmed, any case.
pub const OPT_OUT: &[&str] = &["STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"];

/// Keywords that opt a number in again (Twilio's defaults).
pub const OPT_IN: &[&str] = &["START", "YES", "UNSTOP"];

/// The form parameters of a body, in order.
pub fn params(body: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

/// `X-Twilio-Signature` of a request: base64 of HMAC-SHA1, keyed with the
/// auth token, over the full URL followed by every POST parameter's name and
/// value, sorted by name.
pub fn signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    let mut mac =
        Hmac::<Sha1>::new_from_slice(auth_token.as_bytes()).expect("HMAC takes any key length");
    mac.update(url.as_bytes());
    for (k, v) in sorted {
        mac.update(k.as_bytes());
        mac.update(v.as_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Whether `header` is the signature of the request, in constant time.
pub fn signature_valid(
    auth_token: &str,
    url: &str,
    params: &[(String, String)],
    header: Option<&str>,
) -> bool {
    let Some(given) = header.map(str::trim) else {
        return false;
    };
    let expected = signature(auth_token, url, params);
    subtle::ConstantTimeEq::ct_eq(expected.as_bytes(), given.as_bytes()).into()
}

/// The ack of a Twilio message status (reference, "Message Acknowledgement
/// Codes"), or `None` for statuses of inbound messages (`receiving`,
/// `received`) and unknown ones.
pub fn ack_of_status(status: &str) -> Option<i8> {
    match status {
        "queued" | "accepted" | "scheduled" => Some(0),
        "sending" | "sent" => Some(1),
        "delivered" => Some(2),
        "read" => Some(3),
        "undelivered" | "failed" | "canceled" => Some(-1),
        _ => None,
    }
}

/// A description of the delivery errors Twilio reports without an
/// `ErrorMessage` (Twilio "Errors and Warnings", 30001–30008).
fn describe(code: i64) -> &'static str {
    match code {
        30001 => "Queue overflow",
        30002 => "Account suspended",
        30003 => "Unreachable destination handset",
        30004 => "Message blocked",
        30005 => "Unknown destination handset",
        30006 => "Landline or unreachable carrier",
        30007 => "Message filtered",
        30008 => "Unknown error",
        _ => "Twilio delivery error",
    }
}

/// The neutral events of a form post: a status callback (it carries
/// `MessageStatus` and no `Body`), or an incoming message followed by an
/// opt-out or opt-in when its body is one of the keywords or Twilio says
/// so in `OptOutType`. `phone` reads `From` (`None`: not a phone number,
/// the post is ignored).
pub fn events(params: &[(String, String)], phone: impl Fn(&str) -> Option<E164>) -> Vec<Inbound> {
    let p: HashMap<&str, &str> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let sid = p
        .get("MessageSid")
        .or_else(|| p.get("SmsMessageSid"))
        .or_else(|| p.get("SmsSid"))
        .copied()
        .unwrap_or_default();
    if sid.is_empty() {
        return Vec::new();
    }
    if let (Some(status), None) = (p.get("MessageStatus"), p.get("Body")) {
        let Some(ack) = ack_of_status(status) else {
            return Vec::new();
        };
        let error = p
            .get("ErrorCode")
            .and_then(|c| c.trim().parse::<i64>().ok())
            .filter(|_| ack < 0)
            .map(|code| {
                let desc = p
                    .get("ErrorMessage")
                    .filter(|m| !m.trim().is_empty())
                    .map_or_else(|| describe(code).to_string(), |m| m.to_string());
                (code, desc)
            });
        return vec![Inbound::Status(StatusUpdate {
            provider_id: sid.to_string(),
            reference: None,
            ack,
            error,
            at_ms: None,
        })];
    }
    let raw_from = p.get("From").copied().unwrap_or_default();
    let Some(phone) = phone(raw_from) else {
        tracing::debug!(
            from = raw_from,
            "SMS from a sender that is not a phone number; ignored"
        );
        return Vec::new();
    };
    let body = p.get("Body").copied().unwrap_or_default();
    let media = p
        .get("NumMedia")
        .and_then(|n| n.parse::<u32>().ok())
        .filter(|&n| n > 0)
        .and_then(|_| p.get("MediaUrl0"));
    let typ = match (media, p.get("MediaContentType0")) {
        (None, _) => "text",
        (Some(_), Some(t)) if t.starts_with("video/") => "video",
        (Some(_), Some(t)) if t.starts_with("audio/") => "audio",
        (Some(_), Some(t)) if !t.starts_with("image/") => "document",
        (Some(_), _) => "image",
    };
    let user = UserRef {
        from: phone.digits().to_string(),
        phone: Some(phone.as_str().to_string()),
        profile: Profile::default(),
    };
    let mut out = vec![Inbound::Message(InboundMessage {
        from: user.from.clone(),
        phone: user.phone.clone(),
        profile: Profile::default(),
        provider_id: sid.to_string(),
        at_ms: None,
        typ: typ.to_string(),
        text: body.to_string(),
        media_id: media.map(|m| m.to_string()),
        reply_to: None,
    })];
    let keyword = body.trim().to_ascii_uppercase();
    let opt = p.get("OptOutType").map(|t| t.to_ascii_uppercase());
    if opt.as_deref() == Some("STOP") || OPT_OUT.contains(&keyword.as_str()) {
        out.push(Inbound::OptOut(user));
    } else if opt.as_deref() == Some("START") || OPT_IN.contains(&keyword.as_str()) {
        out.push(Inbound::OptIn(user));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn events(params: &[(String, String)]) -> Vec<Inbound> {
        super::events(params, |from| E164::parse(from).ok())
    }

    /// Twilio's published example ("Webhooks security": the URL with a query
    /// string, the call's POST parameters, auth token 12345).
    #[test]
    fn twilio_published_test_vector_verifies() {
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        let params = pairs(&[
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+12349013030"),
            ("Digits", "1234"),
            ("From", "+12349013030"),
            ("To", "+18005551212"),
        ]);
        assert_eq!(
            signature("12345", url, &params),
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
        );
        assert!(signature_valid(
            "12345",
            url,
            &params,
            Some("0/KCTR6DLpKmkAf8muzZqo1nDgQ=")
        ));
        assert!(!signature_valid(
            "12346",
            url,
            &params,
            Some("0/KCTR6DLpKmkAf8muzZqo1nDgQ=")
        ));
        assert!(!signature_valid("12345", url, &params, None));
    }

    #[test]
    fn keywords_and_statuses() {
        let stop = events(&pairs(&[
            ("MessageSid", "SM1"),
            ("From", "+14155552671"),
            ("Body", "  stop "),
        ]));
        assert!(matches!(stop[1], Inbound::OptOut(_)));
        let start = events(&pairs(&[
            ("MessageSid", "SM2"),
            ("From", "+14155552671"),
            ("Body", "hello"),
            ("OptOutType", "START"),
        ]));
        assert!(matches!(start[1], Inbound::OptIn(_)));
        let failed = events(&pairs(&[
            ("MessageSid", "SM3"),
            ("MessageStatus", "undelivered"),
            ("ErrorCode", "30003"),
        ]));
        match &failed[0] {
            Inbound::Status(s) => {
                assert_eq!(s.ack, -1);
                assert_eq!(
                    s.error,
                    Some((30003, "Unreachable destination handset".into()))
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(events(&pairs(&[
            ("MessageSid", "SM4"),
            ("MessageStatus", "received")
        ]))
        .is_empty());
    }
}
