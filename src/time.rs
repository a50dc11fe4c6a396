//! Time and retry arithmetic shared by every layer: the protocol's timestamp
//! format (ISO 8601 UTC with milliseconds, reference "Heartbeat"), Unix
//! milliseconds, and the retry schedule rule of every outbound delivery.

use chrono::{DateTime, SecondsFormat, Utc};
use rand::Rng;
use std::time::Duration;

/// Formats `t` as the protocol's timestamp: ISO 8601 UTC with milliseconds,
/// e.g. `2020-04-29T14:34:34.376Z` (reference, "Heartbeat").
pub fn iso_millis(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The current time in the protocol's timestamp format; see [`iso_millis`].
pub fn now_iso() -> String {
    iso_millis(Utc::now())
}

/// Unix milliseconds now (from `SystemTime`: no calendar arithmetic, it
/// is read on every request).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Milliseconds on a monotonic clock since the first call: for deadlines
/// within this process, unaffected by changes of the wall clock. Read
/// from quanta's clock (the TSC, calibrated against the OS's monotonic
/// clock at the first call, or that clock where the TSC is not reliable):
/// connections read it twice per request, and `Instant::now` and its
/// subtraction were ~90 instructions a read (callgrind, M1).
pub fn mono_ms() -> i64 {
    static CLOCK: std::sync::OnceLock<(quanta::Clock, quanta::Instant)> =
        std::sync::OnceLock::new();
    let (clock, start) = CLOCK.get_or_init(|| {
        let clock = quanta::Clock::new();
        let start = clock.now();
        (clock, start)
    });
    clock.now().duration_since(*start).as_millis() as i64
}

/// Unix milliseconds as the protocol's timestamp (ISO 8601 UTC, milliseconds).
pub fn iso_of_ms(ms: i64) -> String {
    iso_millis(DateTime::from_timestamp_millis(ms).unwrap_or_default())
}

/// Unix milliseconds of an RFC 3339 timestamp; 0 when it does not parse.
pub fn ms_of_iso(s: &str) -> i64 {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_millis())
        .unwrap_or(0)
}

/// The wait before attempt `attempts + 1` on `schedule` (seconds, ±10%
/// jitter), or the receiver's `Retry-After` when it gave one. `schedule`
/// must not be empty (the configuration checks it).
pub fn retry_delay(schedule: &[f64], attempts: u32, retry_after: Option<Duration>) -> Duration {
    retry_after.unwrap_or_else(|| jittered(schedule[(attempts as usize).min(schedule.len() - 1)]))
}

/// `seconds` ±10%, so that retries of many failures do not arrive together.
pub fn jittered(seconds: f64) -> Duration {
    Duration::from_secs_f64(seconds * rand::thread_rng().gen_range(0.9..=1.1))
}

/// `Retry-After` as delay-seconds or an HTTP date (RFC 9110 §10.2.3), at most 24 h.
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let secs = match v.trim().parse::<u64>() {
        Ok(s) => s,
        Err(_) => {
            let t = DateTime::parse_from_rfc2822(v.trim()).ok()?;
            (t.timestamp() - Utc::now().timestamp()).max(0) as u64
        }
    };
    Some(Duration::from_secs(secs.min(86_400)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The monotonic milliseconds follow real time.
    #[test]
    fn mono_ms_follows_real_time() {
        let (a, t) = (mono_ms(), std::time::Instant::now());
        std::thread::sleep(std::time::Duration::from_millis(60));
        let (b, real) = (mono_ms(), t.elapsed().as_millis() as i64);
        assert!((b - a - real).abs() <= 5, "{} ms against {real} ms", b - a);
    }

    #[test]
    fn retry_after_parses_seconds_and_dates() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("999999"),
            Some(Duration::from_secs(86_400))
        );
        assert!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT").is_some());
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn timestamps_have_milliseconds_and_z() {
        assert_eq!(iso_of_ms(1_588_170_874_376), "2020-04-29T14:34:34.376Z");
        assert_eq!(ms_of_iso("2020-04-29T14:34:34.376Z"), 1_588_170_874_376);
        let d = retry_delay(&[10.0], 5, None);
        assert!(d >= Duration::from_secs(9) && d <= Duration::from_secs(11));
        assert_eq!(
            retry_delay(&[10.0], 0, Some(Duration::from_secs(3))),
            Duration::from_secs(3)
        );
    }
}
