//! `heartbeat` (reference, "Heartbeat"): keeps a socket alive and tells the
//! server's time.
//!
//! # Format
//! `{"cmd":"heartbeat"}` → `{"ok":1,"cmd":"heartbeat","data":{"datetime":"2020-04-29T14:34:34.376Z"}}`

use crate::error::ApiError;
use crate::reply::Reply;
use crate::time::now_iso;
use serde_json::json;

/// The heartbeat command; it has no fields.
#[derive(Debug)]
pub struct Heartbeat;

impl Heartbeat {
    /// Replies with the current time, ISO 8601 UTC with milliseconds.
    pub fn apply(self) -> Result<Reply, ApiError> {
        Ok(Reply::ok("heartbeat").with_data(json!({ "datetime": now_iso() })))
    }
}
