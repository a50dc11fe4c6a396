//! The protocol's error: one `errorCode` of the Convrs reference ("API Error
//! Codes") plus a human-readable message, mapped to the wire in one place.
//!
//! Every failure a command can meet becomes an [`ApiError`]; both transports
//! turn it into the reference's error reply (`ok:0`, `error`, `errorCode`), and
//! the POST transport also into an HTTP status via [`ApiError::http_status`].

use std::fmt;

/// A numeric `errorCode` from the Convrs reference, section "API Error Codes".
///
/// Only the codes convgate can produce are named; the table in
/// `protocol/error-codes.md` lists each with its HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum ErrorCode {
    /// 1000 Missing API Token.
    MissingToken = 1000,
    /// 1001 Invalid API Token.
    InvalidToken = 1001,
    /// 1004 Unknown command passed to the API.
    UnknownCommand = 1004,
    /// 1005 Unknown user (uid).
    UnknownUser = 1005,
    /// 1006 Invalid phone number.
    InvalidPhone = 1006,
    /// 1007 Invalid phone number length.
    InvalidPhoneLength = 1007,
    /// 1008 Missing Chatbot ID.
    MissingBotId = 1008,
    /// 1009 Missing phone number.
    MissingPhone = 1009,
    /// 1010 Missing message.
    MissingMessage = 1010,
    /// 1013 Message max characters reached (2000).
    MessageTooLong = 1013,
    /// 1020 Unknown Message ID.
    UnknownMessage = 1020,
    /// 1011 Missing route.
    MissingRoute = 1011,
    /// 1012 Unknown or invalid route.
    UnknownRoute = 1012,
    /// 1014 Route name too large (max 256).
    RouteTooLong = 1014,
    /// 1015 Unknown ChatBot ID.
    UnknownBot = 1015,
    /// 1016 Wrong chatbot type for this operation.
    WrongBotKind = 1016,
    /// 1017 Invalid JSON object passed to API.
    InvalidJson = 1017,
    /// 1018 Websocket connection reused (previous connection closed).
    ConnectionReused = 1018,
    /// 1019 Websocket Connect expected as first command.
    ConnectExpected = 1019,
    /// 1002 Invalid end date passed to the API.
    InvalidEndDate = 1002,
    /// 1021 Start date is after end date.
    StartAfterEnd = 1021,
    /// 1003 Invalid start date passed to the API (`CreatedDate`).
    InvalidStartDate = 1003,
    /// 1022 Invalid name format.
    InvalidName = 1022,
    /// 1023 Invalid note format.
    InvalidNotes = 1023,
    /// 1024 Invalid email format.
    InvalidEmail = 1024,
    /// 1025 Missing uid.
    MissingUid = 1025,
    /// 2000 Unable to create a user.
    CannotCreateUser = 2000,
    /// 2001 User is chatting to an agent, message cannot be sent.
    ChattingToAgent = 2001,
    /// 2002 Unable to assign user to agent (invalid agent email).
    UnknownAgent = 2002,
    /// 2003 Internal timeout (a provider did not answer).
    Timeout = 2003,
    /// 2004 Internal error.
    Internal = 2004,
    /// 2005 SMS sending error (see smsErrorCode and smsErrorDesc).
    SmsError = 2005,
    /// 2006 User has been unsubscribed from automatic content.
    Unsubscribed = 2006,
    /// 2007 Rate limit reached for this phone number.
    PhoneRateLimited = 2007,
    /// 2008 Rate limit reached for this token.
    TokenRateLimited = 2008,
    /// 2009 Too busy to send more messages (reference: "WhatsApp too busy
    /// to send more messages"; also a provider's flood limit, e.g. Telegram).
    ProviderBusy = 2009,
    /// 4100 (extension; 4100–4199 are convgate's own): the events asked for
    /// are no longer in the log, or the epoch differs — re-read state.
    CannotResume = 4100,
    /// 4101 (extension): a console password shorter than 12 or longer than
    /// 1024 characters (`SetAgentPassword`, `CreateAgent`).
    InvalidPassword = 4101,
    /// 4102 (extension): the command is not open to an agent's console
    /// session, or names another agent in `agentEmail`.
    AgentForbidden = 4102,
    /// 4103 (extension): console sign-in refused — wrong email or password
    /// (never says which), or the session is missing, expired or revoked.
    SignInFailed = 4103,
    /// 3000 No WhatsApp Templates exist for this ChatBot.
    NoTemplates = 3000,
    /// 3001 No WhatsApp template exists for this name and language.
    UnknownTemplate = 3001,
    /// 3002 WhatsApp API error (see whatsappErrorCode and whatsappErrorDesc).
    WhatsAppError = 3002,
    /// 3003 Missing WhatsApp Template name.
    MissingTemplateName = 3003,
    /// 3004 Missing WhatsApp Template language field.
    MissingTemplateLanguage = 3004,
    /// 3050 Invalid tag format.
    InvalidTag = 3050,
    /// 3051 Invalid tag color format (must be hex like #FF5733).
    InvalidTagColor = 3051,
    /// 3052 Invalid tag description format.
    InvalidTagDescription = 3052,
    /// 3053 Tag does not exist.
    UnknownTag = 3053,
}

impl ErrorCode {
    /// The number sent as `errorCode`.
    pub fn as_u16(self) -> u16 {
        self as u16
    }

    /// HTTP status of a POST reply carrying this code (issue "Endpoints"):
    /// 401 for token problems, 404 for unknown user/tag/bot, 429 for rate
    /// limits, 500 for internal errors, 400 for every other validation error.
    pub fn http_status(self) -> u16 {
        status_of(self.as_u16())
    }
}

/// An error reply: the reference's `errorCode` and the `error` text.
///
/// The text is for humans; clients branch on the code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The reference's numeric code.
    pub code: ErrorCode,
    /// Human-readable explanation, sent as `error`.
    pub message: String,
    /// Further top-level reply fields, e.g. 3002's `whatsappErrorCode` and
    /// `whatsappErrorDesc` (reference, SendWhatsAppTemplate error response).
    pub fields: Vec<(&'static str, serde_json::Value)>,
    /// For rate limits: when a retry can succeed (POST: `Retry-After`).
    pub retry_after: Option<std::time::Duration>,
    /// HTTP status overriding the code's class (409 for an idempotency
    /// key reused with another body).
    pub status: Option<u16>,
}

impl ApiError {
    /// 1017 for a write over one of the configured storage caps: says which
    /// limit (`setting`) and its value; nothing is written.
    pub fn over_cap(what: &str, max: usize, setting: &str) -> ApiError {
        ApiError::new(
            ErrorCode::InvalidJson,
            format!("limit reached: at most {max} {what} ({setting}); nothing was written"),
        )
    }

    /// An error with `code` and the explanation `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
            fields: Vec::new(),
            retry_after: None,
            status: None,
        }
    }

    /// Adds a top-level reply field.
    pub fn with_field(mut self, name: &'static str, value: impl Into<serde_json::Value>) -> Self {
        self.fields.push((name, value.into()));
        self
    }

    /// Sets the wait before a retry can succeed.
    pub fn with_retry_after(mut self, wait: std::time::Duration) -> Self {
        self.retry_after = Some(wait);
        self
    }

    /// 2004 Internal error. The cause is logged by the caller, never sent.
    pub fn internal() -> ApiError {
        ApiError::new(ErrorCode::Internal, "internal error")
    }

    /// HTTP status for the POST transport; see [`ErrorCode::http_status`].
    pub fn http_status(&self) -> u16 {
        self.status.unwrap_or_else(|| self.code.http_status())
    }
}

/// HTTP status for a numeric `errorCode`; see [`ErrorCode::http_status`].
pub fn status_of(code: u16) -> u16 {
    match code {
        1000 | 1001 | 4103 => 401,
        4102 => 403,
        1005 | 1015 | 1020 | 3053 => 404,
        2007 | 2008 => 429,
        2000 | 2003 | 2004 => 500,
        _ => 400,
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.code.as_u16())
    }
}

impl std::error::Error for ApiError {}
