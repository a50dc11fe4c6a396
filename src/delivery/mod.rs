//! Outbound delivery: one engine, two queues.
//!
//! Organization webhooks ([`webhooks`]: every event, signed per Standard
//! Webhooks) and delivery callbacks ([`callbacks`]: ack changes to a send's
//! `webhookURL`) are the same job: POST through the SSRF-guarded client
//! ([`crate::net::guarded_client`]), read the status and `Retry-After`,
//! retry on `webhook_retry_schedule`, keep a dead letter when the schedule is
//! spent. This module is that job; the two queues differ only in what they
//! send, how they sign it, and where they keep their bookkeeping.
//!
//! Invariant: an attempt's outcome is decided here, in one place, for both
//! queues ([`Attempt::post`], [`next`]).

pub mod callbacks;
pub mod webhooks;

use std::time::Duration;

/// What one POST gave: the HTTP status when one came back, the transport
/// error otherwise, and the wait a 429/503 asked for in `Retry-After`.
#[derive(Debug, Clone, Default)]
pub struct Attempt {
    /// HTTP status of the response, if any.
    pub status: Option<u16>,
    /// Transport error (connect, timeout, refused address), if no status.
    pub error: Option<String>,
    /// `Retry-After` of a 429 or 503 response (at most 24 h).
    pub retry_after: Option<Duration>,
}

impl Attempt {
    /// Sends `req` and reads the outcome; never fails.
    pub async fn post(req: reqwest::RequestBuilder) -> Attempt {
        match req.send().await {
            Ok(r) => Attempt {
                status: Some(r.status().as_u16()),
                error: None,
                retry_after: crate::net::retry_after_of(&r),
            },
            Err(e) => Attempt::failed(crate::net::error_chain(&e)),
        }
    }

    /// An attempt that could not be made (`why`: e.g. a refused URL).
    pub fn failed(why: String) -> Attempt {
        Attempt {
            error: Some(why),
            ..Attempt::default()
        }
    }

    /// Whether the receiver acknowledged with a 2xx.
    pub fn ok(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }

    /// Whether the receiver answered 410 Gone (it asks to stop).
    pub fn gone(&self) -> bool {
        self.status == Some(410)
    }

    /// The failure as text: `HTTP <status>` or the transport error.
    pub fn failure(&self) -> Option<String> {
        match (self.ok(), self.status) {
            (true, _) => None,
            (false, Some(s)) => Some(format!("HTTP {s}")),
            (false, None) => self.error.clone(),
        }
    }
}

/// What follows an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Acknowledged: done.
    Delivered,
    /// Try again at this Unix ms.
    RetryAt(i64),
    /// The schedule is spent: keep it as a dead letter.
    Dead,
}

/// What follows `attempt`, the `attempts`-th of a delivery (counting it), on
/// `schedule` (seconds before each attempt, ±10% jitter; a `Retry-After`
/// given by the receiver wins).
pub fn next(schedule: &[f64], attempts: u32, attempt: &Attempt, now_ms: i64) -> Next {
    if attempt.ok() {
        Next::Delivered
    } else if attempts as usize >= schedule.len() {
        Next::Dead
    } else {
        let delay = crate::time::retry_delay(schedule, attempts, attempt.retry_after);
        Next::RetryAt(now_ms + delay.as_millis() as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_follow_the_schedule_and_retry_after() {
        let ok = Attempt {
            status: Some(204),
            ..Attempt::default()
        };
        assert_eq!(next(&[0.0], 1, &ok, 0), Next::Delivered);
        let busy = Attempt {
            status: Some(503),
            retry_after: Some(Duration::from_secs(7)),
            ..Attempt::default()
        };
        assert_eq!(next(&[0.0, 60.0], 1, &busy, 1_000), Next::RetryAt(8_000));
        assert_eq!(next(&[0.0, 60.0], 2, &busy, 1_000), Next::Dead);
        assert_eq!(busy.failure().as_deref(), Some("HTTP 503"));
        let down = Attempt::failed("connection refused".into());
        assert_eq!(down.failure().as_deref(), Some("connection refused"));
        assert!(Attempt {
            status: Some(410),
            ..Attempt::default()
        }
        .gone());
    }
}
