//! Telegram's webhook body, an `Update` (Bot API, "Getting updates"), read
//! leniently: only the fields convgate uses, every one optional, so that an
//! update kind Telegram adds later is acknowledged and ignored rather than
//! refused (a refusal makes Telegram redeliver it forever).
//!
//! Used: `message` from a private chat (text, or a photo with its caption:
//! the largest `PhotoSize`'s `file_id`), and `my_chat_member` in a private
//! chat (`new_chat_member.status` `kicked`: the user blocked the bot;
//! `member`: unblocked). Ignored: group and channel chats, edits, and every
//! other kind.

use crate::channel::{Inbound, InboundMessage, Profile, UserRef};
use serde::Deserialize;

/// An `Update`.
#[derive(Debug, Deserialize)]
pub struct Update {
    /// Unique, increasing id of the update.
    #[serde(default)]
    pub update_id: i64,
    /// A new incoming message.
    #[serde(default)]
    pub message: Option<Message>,
    /// The bot's member status in a chat changed.
    #[serde(default)]
    pub my_chat_member: Option<ChatMemberUpdated>,
}

/// A `Message`.
#[derive(Debug, Deserialize)]
pub struct Message {
    /// Unique within the chat.
    #[serde(default)]
    pub message_id: i64,
    /// The sender.
    #[serde(default)]
    pub from: Option<User>,
    /// The chat it belongs to.
    pub chat: Chat,
    /// Unix seconds.
    #[serde(default)]
    pub date: i64,
    /// Text of a text message.
    #[serde(default)]
    pub text: Option<String>,
    /// Caption of a media message.
    #[serde(default)]
    pub caption: Option<String>,
    /// A photo in its available sizes.
    #[serde(default)]
    pub photo: Vec<PhotoSize>,
    /// The message it replies to.
    #[serde(default)]
    pub reply_to_message: Option<Box<Message>>,
}

/// A `User`.
#[derive(Debug, Deserialize)]
pub struct User {
    /// User id.
    #[serde(default)]
    pub id: i64,
    /// First name.
    #[serde(default)]
    pub first_name: String,
    /// Last name.
    #[serde(default)]
    pub last_name: Option<String>,
    /// IETF language tag of the user's language.
    #[serde(default)]
    pub language_code: Option<String>,
}

/// A `Chat`.
#[derive(Debug, Deserialize)]
pub struct Chat {
    /// Chat id (a private chat's id is the user's id).
    pub id: i64,
    /// private, group, supergroup or channel.
    #[serde(rename = "type", default)]
    pub kind: String,
}

/// A `PhotoSize`.
#[derive(Debug, Deserialize)]
pub struct PhotoSize {
    /// Id to download or resend the file.
    #[serde(default)]
    pub file_id: String,
    /// Width in pixels.
    #[serde(default)]
    pub width: u64,
    /// Height in pixels.
    #[serde(default)]
    pub height: u64,
}

/// A `ChatMemberUpdated`.
#[derive(Debug, Deserialize)]
pub struct ChatMemberUpdated {
    /// The chat.
    pub chat: Chat,
    /// Who changed it.
    #[serde(default)]
    pub from: Option<User>,
    /// The bot's new status.
    pub new_chat_member: ChatMember,
}

/// A `ChatMember` (only its status is read).
#[derive(Debug, Deserialize)]
pub struct ChatMember {
    /// creator, administrator, member, restricted, left or kicked.
    #[serde(default)]
    pub status: String,
}

/// The provider id of a message: chat and message id (message ids are
/// unique only within a chat).
pub fn provider_id(chat: i64, message_id: i64) -> String {
    format!("{chat}:{message_id}")
}

fn profile(u: Option<&User>) -> Profile {
    let Some(u) = u else {
        return Profile::default();
    };
    let last = u.last_name.clone().unwrap_or_default();
    let name = [u.first_name.trim(), last.trim()]
        .iter()
        .filter(|s| !s.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join(" ");
    Profile {
        name,
        first_name: Some(u.first_name.trim().to_string()),
        last_name: Some(last.trim().to_string()),
        lang: u.language_code.clone().filter(|l| !l.is_empty()),
        current: true,
    }
}

impl Update {
    /// The neutral events of this update; none for what convgate does not use.
    pub fn events(&self) -> Vec<Inbound> {
        if let Some(m) = self.message.as_ref().filter(|m| m.chat.kind == "private") {
            let user = UserRef {
                from: m.chat.id.to_string(),
                phone: None,
                profile: profile(m.from.as_ref()),
            };
            let (typ, text, media) = match m.photo.iter().max_by_key(|p| p.width * p.height) {
                Some(p) => ("image", m.caption.clone(), Some(p.file_id.clone())),
                None => ("text", m.text.clone(), None),
            };
            if typ == "text" && text.is_none() {
                return Vec::new();
            }
            return vec![
                // A message from a user who had blocked the bot enables them again.
                Inbound::OptIn(user.clone()),
                Inbound::Message(InboundMessage {
                    from: user.from,
                    phone: None,
                    profile: user.profile,
                    provider_id: provider_id(m.chat.id, m.message_id),
                    at_ms: (m.date > 0).then(|| m.date.checked_mul(1000)).flatten(),
                    typ: typ.into(),
                    text: text.unwrap_or_default(),
                    media_id: media,
                    reply_to: m
                        .reply_to_message
                        .as_ref()
                        .map(|r| provider_id(r.chat.id, r.message_id)),
                }),
            ];
        }
        if let Some(c) = self
            .my_chat_member
            .as_ref()
            .filter(|c| c.chat.kind == "private")
        {
            let user = UserRef {
                from: c.chat.id.to_string(),
                phone: None,
                profile: profile(c.from.as_ref()),
            };
            return match c.new_chat_member.status.as_str() {
                "kicked" => vec![Inbound::OptOut(user)],
                "member" => vec![Inbound::OptIn(user)],
                _ => Vec::new(),
            };
        }
        Vec::new()
    }
}
