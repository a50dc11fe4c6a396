//! Routes (reference: `SendMessage` "server-side routing logic", and
//! `SetUserData`'s `route`): named, per-organization lists of steps, and
//! the durable state of a run. This module holds the definitions, their
//! validation and placeholder rendering; the runner is
//! [`crate::cmd::route_run`]; `protocol/routes.md` is the format.
//!
//! A step is a JSON object with exactly one key naming its kind plus an
//! optional `label`:
//! `{"send_text":{"text":"Hi {{user.first_name}}!"}}`,
//! `{"send_template":{"templateName":…,"language":…,"parameters":[…]}}`,
//! `{"set_data":{…}}`, `{"add_tag":"Lead"}`, `{"remove_tag":"Lead"}`,
//! `{"assign_agent":"ann@example.com"|"round_robin"}`,
//! `{"close_conversation":{}}`, `{"webhook":{"url":…,"save_as":…}}`,
//! `{"wait_for_reply":{"timeout":3600,"save_as":"email","on_reply":…,"on_timeout":…}}`,
//! `{"branch":{"if":{"key":"plan","equals":"pro"},"then":…,"else":…}}`
//! (`not_equals`, or `exists: true`), `{"end":{}}`.

use crate::error::{ApiError, ErrorCode};
use crate::model::UserRecord;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Longest route name, in characters (reference: 1014 above it).
pub const MAX_NAME_CHARS: usize = 256;
/// Most steps in one route definition.
pub const MAX_STEPS: usize = 100;
/// Most steps one run executes before it stops with an error (loop guard).
pub const MAX_STEPS_PER_RUN: u32 = 100;

/// A route as stored: its definition as given (`steps` validated by
/// [`parse_steps`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Route {
    /// The route's name (1–256 characters).
    pub name: String,
    /// The bot its sends go through.
    #[serde(rename = "botID")]
    pub bot_id: u64,
    /// The steps, as given.
    pub steps: Vec<Value>,
    /// ISO 8601 UTC of the last `SetRoute`.
    pub updated: String,
}

/// A branch condition on a key of the user's data.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// `data[key] == value` (strings compare as given).
    Equals(String, Value),
    /// `data[key] != value`.
    NotEquals(String, Value),
    /// `data[key]` is present and not null.
    Exists(String),
}

impl Condition {
    /// Whether the condition holds on `data`.
    pub fn holds(&self, data: &Map<String, Value>) -> bool {
        match self {
            Condition::Equals(k, v) => data.get(k) == Some(v),
            Condition::NotEquals(k, v) => data.get(k) != Some(v),
            Condition::Exists(k) => data.get(k).is_some_and(|v| !v.is_null()),
        }
    }
}

/// What one step does.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Send a text (placeholders rendered) on the route's bot.
    SendText(String),
    /// Send a WhatsApp template: name, language, parameters (rendered).
    SendTemplate(String, String, Vec<String>),
    /// Merge keys into the user's data.
    SetData(Map<String, Value>),
    /// Tag the user (an existing tag).
    AddTag(String),
    /// Untag the user.
    RemoveTag(String),
    /// Assign the user's conversation: an agent's email, or `round_robin`.
    AssignAgent(String),
    /// Close the user's open conversation.
    CloseConversation,
    /// POST `{user, data, route}` to `url`; a JSON object reply is saved
    /// under `save_as` in the user's data.
    Webhook {
        /// Where to POST.
        url: String,
        /// Data key for the reply.
        save_as: Option<String>,
    },
    /// Pause until the user's next message or `timeout` seconds.
    WaitForReply {
        /// Seconds to wait.
        timeout: f64,
        /// Data key for the reply's text.
        save_as: Option<String>,
        /// Label to continue at on a reply (absent: the next step).
        on_reply: Option<String>,
        /// Label to continue at on timeout (absent: the run ends).
        on_timeout: Option<String>,
    },
    /// Continue at `then` or `else` (absent: the next step).
    Branch {
        /// The condition.
        cond: Condition,
        /// Label when it holds.
        then: Option<String>,
        /// Label when it does not.
        otherwise: Option<String>,
    },
    /// End the run.
    End,
}

/// One parsed step.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// Its label, if any.
    pub label: Option<String>,
    /// What it does.
    pub action: Action,
}

/// Checks a route name. Errors: 1011 missing or empty, 1014 over 256
/// characters.
pub fn check_name(name: Option<&str>) -> Result<String, ApiError> {
    let name = name.map(str::trim).unwrap_or_default();
    if name.is_empty() {
        return Err(ApiError::new(ErrorCode::MissingRoute, "missing route"));
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(ApiError::new(
            ErrorCode::RouteTooLong,
            format!("route name too large (max {MAX_NAME_CHARS})"),
        ));
    }
    Ok(name.to_string())
}

/// The placeholders a text may use.
fn placeholder_ok(p: &str) -> bool {
    matches!(
        p,
        "user.name" | "user.first_name" | "user.phone" | "message"
    ) || p.strip_prefix("data.").is_some_and(|k| !k.is_empty())
}

/// The placeholders of `text` (`{{name}}`, spaces inside allowed).
fn placeholders(text: &str) -> impl Iterator<Item = &str> {
    text.split("{{")
        .skip(1)
        .filter_map(|rest| rest.split_once("}}").map(|(p, _)| p.trim()))
}

fn check_text(i: usize, text: &str) -> Result<(), String> {
    match placeholders(text).find(|p| !placeholder_ok(p)) {
        Some(p) => Err(format!(
            "step {i}: unknown placeholder {{{{{p}}}}} (user.name, user.first_name, user.phone, data.<key>, message)"
        )),
        None => Ok(()),
    }
}

/// Renders the placeholders of `text` for `user`, their `data` and the
/// `message` of `SendMessage`: a missing value renders empty; a non-string
/// data value renders as its JSON.
pub fn render(text: &str, user: &UserRecord, data: &Map<String, Value>, message: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            out.push_str(&rest[start..]);
            return out;
        };
        let p = after[..end].trim();
        let first_name = || match user.user.first_name.as_str() {
            "" => user.user.name.split_whitespace().next().unwrap_or(""),
            f => f,
        };
        match p {
            "user.name" => out.push_str(&user.user.name),
            "user.first_name" => out.push_str(first_name()),
            "user.phone" => out.push_str(&user.user.phone),
            "message" => out.push_str(message),
            _ => match p.strip_prefix("data.").and_then(|k| data.get(k)) {
                Some(Value::String(s)) => out.push_str(s),
                Some(Value::Null) | None => {}
                Some(v) => out.push_str(&v.to_string()),
            },
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

fn opt_label(o: &Map<String, Value>, key: &str, i: usize) -> Result<Option<String>, String> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
        Some(_) => Err(format!("step {i}: {key} must be a step label")),
    }
}

fn parse_step(i: usize, v: &Value) -> Result<Step, String> {
    let Value::Object(o) = v else {
        return Err(format!("step {i}: must be an object"));
    };
    let label = match o.get("label") {
        None => None,
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(_) => return Err(format!("step {i}: label must be a non-empty string")),
    };
    let kinds: Vec<(&String, &Value)> = o.iter().filter(|(k, _)| *k != "label").collect();
    let [(kind, body)] = kinds.as_slice() else {
        return Err(format!(
            "step {i}: must have exactly one key naming its kind (and an optional label), has {}",
            kinds.len()
        ));
    };
    let obj = |what: &str| -> Result<&Map<String, Value>, String> {
        body.as_object()
            .ok_or_else(|| format!("step {i}: {kind} takes an object ({what})"))
    };
    let string = |o: &Map<String, Value>, key: &str| -> Result<String, String> {
        match o.get(key) {
            Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
            _ => Err(format!("step {i}: {kind} needs {key} (a non-empty string)")),
        }
    };
    let action = match kind.as_str() {
        "send_text" => {
            let text = string(obj("text")?, "text")?;
            if text.chars().count() > 2000 {
                return Err(format!("step {i}: text over 2000 characters"));
            }
            check_text(i, &text)?;
            Action::SendText(text)
        }
        "send_template" => {
            let o = obj("templateName, language, parameters")?;
            let parameters = match o.get("parameters") {
                None => Vec::new(),
                Some(Value::Array(a)) => a
                    .iter()
                    .map(|p| match p {
                        Value::String(s) => check_text(i, s).map(|_| s.clone()),
                        _ => Err(format!("step {i}: parameters must be strings")),
                    })
                    .collect::<Result<_, _>>()?,
                Some(_) => return Err(format!("step {i}: parameters must be an array")),
            };
            Action::SendTemplate(
                string(o, "templateName")?,
                string(o, "language")?,
                parameters,
            )
        }
        "set_data" => {
            let o = obj("keys to merge")?;
            for v in o.values() {
                if let Value::String(s) = v {
                    check_text(i, s)?;
                }
            }
            Action::SetData(o.clone())
        }
        "add_tag" | "remove_tag" => {
            let tag = body
                .as_str()
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .ok_or_else(|| format!("step {i}: {kind} takes a tag name"))?
                .to_string();
            if kind.as_str() == "add_tag" {
                Action::AddTag(tag)
            } else {
                Action::RemoveTag(tag)
            }
        }
        "assign_agent" => Action::AssignAgent(
            body.as_str()
                .map(str::trim)
                .filter(|a| !a.is_empty())
                .ok_or_else(|| format!("step {i}: assign_agent takes an email or round_robin"))?
                .to_string(),
        ),
        "close_conversation" => Action::CloseConversation,
        "end" => Action::End,
        "webhook" => {
            let o = obj("url, save_as")?;
            let url = string(o, "url")?;
            Action::Webhook {
                url,
                save_as: opt_label(o, "save_as", i)?,
            }
        }
        "wait_for_reply" => {
            let o = obj("timeout, save_as, on_reply, on_timeout")?;
            let timeout = o
                .get("timeout")
                .and_then(Value::as_f64)
                .filter(|t| t.is_finite() && *t > 0.0 && *t <= 30.0 * 86400.0)
                .ok_or_else(|| {
                    format!(
                        "step {i}: wait_for_reply needs timeout (seconds, > 0, at most 30 days)"
                    )
                })?;
            Action::WaitForReply {
                timeout,
                save_as: opt_label(o, "save_as", i)?,
                on_reply: opt_label(o, "on_reply", i)?,
                on_timeout: opt_label(o, "on_timeout", i)?,
            }
        }
        "branch" => {
            let o = obj("if, then, else")?;
            let cond = o
                .get("if")
                .and_then(Value::as_object)
                .ok_or_else(|| format!("step {i}: branch needs if (an object)"))?;
            let key = string(cond, "key")?;
            let cond = match (
                cond.get("equals"),
                cond.get("not_equals"),
                cond.get("exists"),
            ) {
                (Some(v), None, None) => Condition::Equals(key, v.clone()),
                (None, Some(v), None) => Condition::NotEquals(key, v.clone()),
                (None, None, Some(Value::Bool(true))) => Condition::Exists(key),
                _ => {
                    return Err(format!(
                        "step {i}: branch if takes key and one of equals, not_equals, exists: true"
                    ))
                }
            };
            Action::Branch {
                cond,
                then: opt_label(o, "then", i)?,
                otherwise: opt_label(o, "else", i)?,
            }
        }
        other => return Err(format!("step {i}: unknown step kind {other:?}")),
    };
    Ok(Step { label, action })
}

/// Parses and validates `steps` as a whole: every step well formed, labels
/// unique, every jump naming a label that exists, every placeholder known.
/// Error: 1017 naming the first bad step (0-based).
pub fn parse_steps(steps: &[Value]) -> Result<Vec<Step>, ApiError> {
    let bad = |m: String| ApiError::new(ErrorCode::InvalidJson, m);
    if steps.is_empty() || steps.len() > MAX_STEPS {
        return Err(bad(format!("steps must hold 1 to {MAX_STEPS} steps")));
    }
    let parsed: Vec<Step> = steps
        .iter()
        .enumerate()
        .map(|(i, s)| parse_step(i, s))
        .collect::<Result<_, _>>()
        .map_err(bad)?;
    let mut labels = std::collections::HashSet::new();
    for (i, s) in parsed.iter().enumerate() {
        if let Some(l) = &s.label {
            if !labels.insert(l.as_str()) {
                return Err(bad(format!("step {i}: label {l:?} is used twice")));
            }
        }
    }
    for (i, s) in parsed.iter().enumerate() {
        let jumps = match &s.action {
            Action::WaitForReply {
                on_reply,
                on_timeout,
                ..
            } => [on_reply, on_timeout],
            Action::Branch {
                then, otherwise, ..
            } => [then, otherwise],
            _ => continue,
        };
        for l in jumps.into_iter().flatten() {
            if !labels.contains(l.as_str()) {
                return Err(bad(format!("step {i}: no step is labelled {l:?}")));
            }
        }
    }
    Ok(parsed)
}

/// The index of the step labelled `label`.
pub fn find_label(steps: &[Step], label: &str) -> Option<usize> {
    steps.iter().position(|s| s.label.as_deref() == Some(label))
}

/// A paused run's wait for the user's reply.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Wait {
    /// Unix ms when it times out.
    pub until_ms: i64,
}

/// The durable state of one run of a route for one user: at most one per
/// (user, route); starting the route again replaces it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Run {
    /// Unique id of the run (`run_` + 32 hex).
    #[serde(rename = "runId")]
    pub run_id: String,
    /// Organization (or sandbox) id.
    pub org: String,
    /// The user.
    pub uid: String,
    /// The route's name.
    pub route: String,
    /// Index of the step to run next.
    pub pc: usize,
    /// Steps run so far (loop guard at [`MAX_STEPS_PER_RUN`]).
    pub steps_run: u32,
    /// `SendMessage`'s `message`, for `{{message}}`.
    pub message: String,
    /// Set while the run waits for a reply.
    pub wait: Option<Wait>,
    /// Unix ms the run started.
    pub started_ms: i64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_whole_route_is_validated_with_the_bad_step_named() {
        let ok = json!([
            {"send_text": {"text": "Hi {{user.first_name}}! {{ data.plan }}"}},
            {"wait_for_reply": {"timeout": 5, "save_as": "email", "on_timeout": "bye"}},
            {"branch": {"if": {"key": "email", "exists": true}, "then": "bye"}},
            {"label": "bye", "send_text": {"text": "Bye"}}
        ]);
        assert_eq!(parse_steps(ok.as_array().unwrap()).unwrap().len(), 4);
        for (steps, needle) in [
            (
                json!([{"send_text": {"text": "{{user.age}}"}}]),
                "step 0: unknown placeholder",
            ),
            (
                json!([{"end": {}}, {"add_tag": "x", "end": {}}]),
                "step 1: must have exactly one key",
            ),
            (
                json!([{"wait_for_reply": {"timeout": 1, "on_reply": "nope"}}]),
                "step 0: no step is labelled",
            ),
            (
                json!([{"label": "a", "end": {}}, {"label": "a", "end": {}}]),
                "used twice",
            ),
            (json!([{"teleport": {}}]), "unknown step kind"),
            (json!([]), "1 to 100"),
        ] {
            let e = parse_steps(steps.as_array().unwrap()).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidJson);
            assert!(e.message.contains(needle), "{steps}: {}", e.message);
        }
    }

    #[test]
    fn names_are_checked_as_the_reference_says() {
        assert_eq!(check_name(None).unwrap_err().code, ErrorCode::MissingRoute);
        let long = "r".repeat(257);
        assert_eq!(
            check_name(Some(&long)).unwrap_err().code,
            ErrorCode::RouteTooLong
        );
        assert_eq!(check_name(Some(&"r".repeat(256))).unwrap().len(), 256);
    }
}
