//! Validated values, parsed once at the edge and carried as types so that a
//! handler cannot forget a check: phone numbers, emails, names, notes, tags,
//! bot kinds and uids, and the `CreatedDate` filter.
//!
//! Each parser returns the reference's `errorCode` for its field (Convrs
//! reference, "API Error Codes" and "Phone Number Formats").

use crate::error::{ApiError, ErrorCode};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A phone number in E.164 form (`+447922029419`).
///
/// Accepts every format of the reference's "Phone Number Formats":
/// `+447922029419`, `447922021419`, `+44 792 202 1419`, `44-792-202-1419`.
/// Parsed and validated with the `phonenumber` crate (libphonenumber's
/// metadata). Errors: 1009 empty, 1007 wrong length, 1006 anything else that
/// is not a valid number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct E164 {
    e164: String,
    country: Option<String>,
}

impl E164 {
    /// Parses `input`; see the type's documentation for formats and errors.
    pub fn parse(input: &str) -> Result<E164, ApiError> {
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(ApiError::new(
                ErrorCode::MissingPhone,
                "missing phone number",
            ));
        }
        let invalid = || ApiError::new(ErrorCode::InvalidPhone, "invalid phone number");
        if !trimmed
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '+' | ' ' | '-' | '(' | ')' | '.'))
        {
            return Err(invalid());
        }
        let digits: String = trimmed.chars().filter(char::is_ascii_digit).collect();
        // E.164: at most 15 digits; no valid international number is under 7.
        if !(7..=15).contains(&digits.len()) {
            return Err(ApiError::new(
                ErrorCode::InvalidPhoneLength,
                "invalid phone number length",
            ));
        }
        let number = phonenumber::parse(None, format!("+{digits}")).map_err(|e| match e {
            phonenumber::ParseError::TooShortNsn
            | phonenumber::ParseError::TooShortAfterIdd
            | phonenumber::ParseError::TooLong => {
                ApiError::new(ErrorCode::InvalidPhoneLength, "invalid phone number length")
            }
            _ => invalid(),
        })?;
        if !phonenumber::is_valid(&number) {
            return Err(invalid());
        }
        let e164 = number.format().mode(phonenumber::Mode::E164).to_string();
        let country = number.country().id().map(|id| id.as_ref().to_string());
        Ok(E164 { e164, country })
    }

    /// The number as `+<digits>`.
    pub fn as_str(&self) -> &str {
        &self.e164
    }

    /// The digits without `+`, as used in uids (`3941-wa3-447922029419`).
    pub fn digits(&self) -> &str {
        &self.e164[1..]
    }

    /// ISO 3166-1 alpha-2 region of the number (`GB`), when known.
    pub fn country_iso2(&self) -> Option<&str> {
        self.country.as_deref()
    }
}

/// A syntactically valid email address (RFC 5322 addr-spec as checked by the
/// `email_address` crate), at most 254 characters. Error: 1024.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    /// Parses `input` (surrounding whitespace is ignored).
    pub fn parse(input: &str) -> Result<Email, ApiError> {
        let s = input.trim();
        if s.len() > 254 || !email_address::EmailAddress::is_valid(s) {
            return Err(ApiError::new(
                ErrorCode::InvalidEmail,
                "invalid email format",
            ));
        }
        Ok(Email(s.to_string()))
    }

    /// The address as given, trimmed.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A user's full name: 3–50 characters, no control characters (reference,
/// "SetUserName"). Error: 1022.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserName(String);

impl UserName {
    /// Parses `input`; inner runs of whitespace collapse to one space.
    pub fn parse(input: &str) -> Result<UserName, ApiError> {
        let s = input.split_whitespace().collect::<Vec<_>>().join(" ");
        let n = s.chars().count();
        if !(3..=50).contains(&n) || s.chars().any(char::is_control) {
            return Err(ApiError::new(
                ErrorCode::InvalidName,
                "invalid name format: 3-50 characters",
            ));
        }
        Ok(UserName(s))
    }

    /// The full name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `(first_name, last_name)`: the first word, then the rest (possibly empty).
    pub fn split(&self) -> (String, String) {
        split_name(&self.0)
    }
}

/// `(first_name, last_name)` of a full name: the first word, then the rest
/// (possibly empty), whitespace runs collapsed.
pub fn split_name(name: &str) -> (String, String) {
    let mut words = name.split_whitespace();
    let first = words.next().unwrap_or_default().to_string();
    (first, words.collect::<Vec<_>>().join(" "))
}

/// User notes: at most 1024 characters (reference, "SetUserNotes"). Error: 1023.
pub fn parse_notes(input: &str) -> Result<String, ApiError> {
    if input.chars().count() > 1024 {
        return Err(ApiError::new(
            ErrorCode::InvalidNotes,
            "invalid note format: at most 1024 characters",
        ));
    }
    Ok(input.to_string())
}

/// A tag name: 3–50 characters, no control characters (reference,
/// "SetUserTag", "CreateUserTag"). Tags match case-insensitively. Error: 3050.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagName(String);

impl TagName {
    /// Parses `input` (surrounding whitespace is ignored).
    pub fn parse(input: &str) -> Result<TagName, ApiError> {
        let s = input.trim();
        let n = s.chars().count();
        if !(3..=50).contains(&n) || s.chars().any(char::is_control) {
            return Err(ApiError::new(
                ErrorCode::InvalidTag,
                "invalid tag format: 3-50 characters",
            ));
        }
        Ok(TagName(s.to_string()))
    }

    /// The name as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The case-folded form tags are matched by.
    pub fn key(&self) -> String {
        self.0.to_lowercase()
    }
}

/// A tag color: `#RGB` or `#RRGGBB` hex (reference: "Hex color code (e.g.,
/// "#FF5733")"). Error: 3051.
pub fn parse_color(input: &str) -> Result<String, ApiError> {
    let ok = input
        .strip_prefix('#')
        .is_some_and(|h| matches!(h.len(), 3 | 6) && h.chars().all(|c| c.is_ascii_hexdigit()));
    if !ok {
        return Err(ApiError::new(
            ErrorCode::InvalidTagColor,
            "invalid tag color format: must be hex like #FF5733",
        ));
    }
    Ok(input.to_uppercase())
}

/// A tag description: at most 100 characters. Error: 3052.
pub fn parse_description(input: &str) -> Result<String, ApiError> {
    if input.chars().count() > 100 || input.chars().any(char::is_control) {
        return Err(ApiError::new(
            ErrorCode::InvalidTagDescription,
            "invalid tag description format: at most 100 characters",
        ));
    }
    Ok(input.to_string())
}

/// The messaging platform of a bot (extension `CreateBot`'s `kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BotKind {
    /// WhatsApp Cloud API; uid channel `wa3`, `bot` "WA3".
    Whatsapp,
    /// SMS; uid channel `cms`, `bot` "CMS".
    Sms,
    /// Telegram; uid channel `tel`, `bot` "Telegram".
    Telegram,
    /// Web chat; uid channel `web`, `bot` "Web".
    Web,
}

impl BotKind {
    /// Parses `whatsapp|sms|telegram|web`.
    pub fn parse(s: &str) -> Option<BotKind> {
        match s {
            "whatsapp" => Some(BotKind::Whatsapp),
            "sms" => Some(BotKind::Sms),
            "telegram" => Some(BotKind::Telegram),
            "web" => Some(BotKind::Web),
            _ => None,
        }
    }

    /// The uid's channel segment (reference: `73-tel-615940546`).
    pub fn channel(self) -> &'static str {
        match self {
            BotKind::Whatsapp => "wa3",
            BotKind::Sms => "cms",
            BotKind::Telegram => "tel",
            BotKind::Web => "web",
        }
    }

    /// The user object's `bot` field (reference, "User Object Fields").
    pub fn display(self) -> &'static str {
        match self {
            BotKind::Whatsapp => "WA3",
            BotKind::Sms => "CMS",
            BotKind::Telegram => "Telegram",
            BotKind::Web => "Web",
        }
    }

    /// Whether users of this channel are identified by their phone number.
    pub fn phone_based(self) -> bool {
        matches!(self, BotKind::Whatsapp | BotKind::Sms)
    }

    /// The lowercase name used in `CreateBot` and `GetBots`.
    pub fn as_str(self) -> &'static str {
        match self {
            BotKind::Whatsapp => "whatsapp",
            BotKind::Sms => "sms",
            BotKind::Telegram => "telegram",
            BotKind::Web => "web",
        }
    }
}

/// The uid of a user: `<botID>-<channel>-<id>`.
pub fn make_uid(bot_id: u64, kind: BotKind, id: &str) -> String {
    format!("{bot_id}-{}-{id}", kind.channel())
}

/// Parses a `CreatedDate` filter: ISO 8601 with or without offset, or a bare
/// date. The reference's example `2020-03-01T00:00:00` has no offset: it is
/// taken as UTC. Error: 1003.
pub fn parse_created_date(s: &str) -> Result<DateTime<Utc>, ApiError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %H:%M:%S",
    ] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, fmt) {
            return Ok(t.and_utc());
        }
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc());
    }
    Err(ApiError::new(
        ErrorCode::InvalidStartDate,
        "invalid CreatedDate: expected ISO 8601",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phone_formats_of_the_reference_normalise_to_e164() {
        for input in [
            "+447922029419",
            "447922029419",
            "+44 792 202 9419",
            "44-792-202-9419",
        ] {
            let p = E164::parse(input).unwrap();
            assert_eq!(p.as_str(), "+447922029419", "{input}");
            assert_eq!(p.digits(), "447922029419");
            assert_eq!(p.country_iso2(), Some("GB"));
        }
    }

    #[test]
    fn phone_errors_carry_their_codes() {
        assert_eq!(E164::parse("").unwrap_err().code, ErrorCode::MissingPhone);
        assert_eq!(
            E164::parse("+44 12").unwrap_err().code,
            ErrorCode::InvalidPhoneLength
        );
        assert_eq!(
            E164::parse("+4479220294191234567").unwrap_err().code,
            ErrorCode::InvalidPhoneLength
        );
        assert_eq!(
            E164::parse("call me").unwrap_err().code,
            ErrorCode::InvalidPhone
        );
        assert_eq!(
            E164::parse("+999 1234 5678").unwrap_err().code,
            ErrorCode::InvalidPhone
        );
    }

    #[test]
    fn names_split_into_first_and_last() {
        let n = UserName::parse("  John   van Doe ").unwrap();
        assert_eq!(n.as_str(), "John van Doe");
        assert_eq!(n.split(), ("John".into(), "van Doe".into()));
        assert_eq!(
            UserName::parse("Jo").unwrap_err().code,
            ErrorCode::InvalidName
        );
        assert_eq!(
            UserName::parse(&"x".repeat(51)).unwrap_err().code,
            ErrorCode::InvalidName
        );
    }

    #[test]
    fn colors_and_tags() {
        assert_eq!(parse_color("#ff5733").unwrap(), "#FF5733");
        assert!(parse_color("#FFF").is_ok());
        assert_eq!(
            parse_color("FF5733").unwrap_err().code,
            ErrorCode::InvalidTagColor
        );
        assert_eq!(
            parse_color("#GG5733").unwrap_err().code,
            ErrorCode::InvalidTagColor
        );
        assert_eq!(
            TagName::parse("ab").unwrap_err().code,
            ErrorCode::InvalidTag
        );
        assert_eq!(TagName::parse("Premium").unwrap().key(), "premium");
    }

    #[test]
    fn created_date_accepts_the_reference_example() {
        let t = parse_created_date("2020-03-01T00:00:00").unwrap();
        assert_eq!(crate::time::iso_millis(t), "2020-03-01T00:00:00.000Z");
        assert!(parse_created_date("2020-03-01T00:00:00.000Z").is_ok());
        assert_eq!(
            parse_created_date("yesterday").unwrap_err().code,
            ErrorCode::InvalidStartDate
        );
    }
}
