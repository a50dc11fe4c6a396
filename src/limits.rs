//! Rate limits (the `governor` crate): commands per token, messages per
//! token and messages per phone number (reference, "Sending Messages": 10
//! per second per token, 1 per second per phone number), each a keyed
//! limiter with an equal burst, reporting what is left for the
//! `X-RateLimit-*` headers.
//!
//! Memory is bounded: [`Limits::shrink`] drops the state of keys whose
//! budget is full again (the maintenance task calls it).

use crate::error::{ApiError, ErrorCode};
use crate::reply::RateInfo;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use std::hash::Hash;
use std::num::NonZeroU32;
use std::time::Duration;

/// A keyed `governor` limiter that reports its remaining budget.
type Keyed<K> = RateLimiter<K, DefaultKeyedStateStore<K>, DefaultClock, StateInformationMiddleware>;

/// One configured limit: `per_second` with an equal burst, keyed by `K`.
struct Limit<K: Hash + Eq + Clone> {
    limiter: Keyed<K>,
}

/// Over a limit: the wait until one unit is available, and the budget.
pub type Limited = (Duration, RateInfo);

impl<K: Hash + Eq + Clone> Limit<K> {
    fn new(per_second: u32) -> Option<Limit<K>> {
        NonZeroU32::new(per_second).map(|n| Limit {
            limiter: RateLimiter::keyed(Quota::per_second(n))
                .with_middleware::<StateInformationMiddleware>(),
        })
    }

    /// Takes one unit for `key`: the budget left, or the wait and the budget.
    fn check(&self, key: &K) -> Result<RateInfo, Limited> {
        let now_s = chrono::Utc::now().timestamp();
        let info = |quota: Quota, remaining: u32| {
            let limit = quota.burst_size().get();
            let refill = quota.replenish_interval() * (limit - remaining);
            RateInfo {
                limit,
                remaining,
                reset: now_s + refill.as_secs() as i64 + i64::from(refill.subsec_nanos() > 0),
            }
        };
        match self.limiter.check_key(key) {
            Ok(snap) => Ok(info(snap.quota(), snap.remaining_burst_capacity())),
            Err(not_until) => Err((
                not_until.wait_time_from(DefaultClock::default().now()),
                info(not_until.quota(), 0),
            )),
        }
    }
}

/// A cluster-wide limit of `per_second` units with an equal burst, as GCRA
/// parameters for [`crate::store::Store::take_rate`]: `(interval,
/// tolerance)`. `None` when 0 (off).
pub fn gcra(per_second: u32) -> Option<(Duration, Duration)> {
    let n = NonZeroU32::new(per_second)?;
    let interval = Duration::from_secs(1) / n.get();
    Some((interval, interval * (n.get() - 1)))
}

/// What a cluster-wide take of a `per_second` limit means for the caller:
/// `ahead` is how far the key's schedule runs past now after the take
/// (`Ok`) or the wait until one unit is free (`Err`). As [`Limits::send`].
pub fn shared_outcome(
    per_second: u32,
    outcome: Result<Duration, Duration>,
) -> Result<RateInfo, Limited> {
    let now_s = chrono::Utc::now().timestamp();
    let limit = per_second.max(1);
    let interval = Duration::from_secs(1) / limit;
    let info = |ahead: Duration, remaining: u32| RateInfo {
        limit,
        remaining,
        reset: now_s + ahead.as_secs() as i64 + i64::from(ahead.subsec_nanos() > 0),
    };
    match outcome {
        Ok(ahead) => {
            // Units left: what the burst (limit intervals) still holds.
            let full = interval * limit;
            let left = full.saturating_sub(ahead).as_nanos() / interval.as_nanos().max(1);
            Ok(info(ahead, left as u32))
        }
        Err(wait) => Err((wait, info(wait + interval * (limit - 1), 0))),
    }
}

/// The configured limits; `None` where a limit is 0 (off).
pub struct Limits {
    /// Failed authentications per client address (`auth_failure_limit`,
    /// burst five times that).
    auth: Option<Keyed<std::net::IpAddr>>,
    /// Failed authentications since start (`/metrics`).
    auth_failures: std::sync::atomic::AtomicU64,
    /// Console sign-ins per minute per email and per address
    /// (`console_sign_in_limit`).
    sign_ins: Option<Keyed<String>>,
    /// Commands per token (`rate_limit`).
    commands: Option<Limit<String>>,
    /// Messages per token (`send_rate_limit`, reference: 10/s).
    sends: Option<Limit<String>>,
    /// Messages per phone number (`phone_rate_limit`, reference: 1/s).
    phones: Option<Limit<(String, String)>>,
}

impl Limits {
    /// Limits of `commands`, `sends` per second per organization and
    /// messages per second per `phones` number; 0 turns one off.
    pub fn new(commands: u32, sends: u32, phones: u32) -> Limits {
        Limits {
            auth: None,
            sign_ins: None,
            auth_failures: Default::default(),
            commands: Limit::new(commands),
            sends: Limit::new(sends),
            phones: Limit::new(phones),
        }
    }

    /// These limits with at most `per_second` failed authentications per
    /// second per client address (burst five times that); 0: unlimited.
    pub fn with_auth_failures(mut self, per_second: u32) -> Limits {
        self.auth = NonZeroU32::new(per_second).map(|n| {
            let burst = n.saturating_mul(NonZeroU32::new(5).expect("5 > 0"));
            RateLimiter::keyed(Quota::per_second(n).allow_burst(burst))
                .with_middleware::<StateInformationMiddleware>()
        });
        self
    }

    /// These limits with at most `per_minute` console sign-ins per minute
    /// per email and per client address (burst equal); 0: unlimited.
    pub fn with_sign_ins(mut self, per_minute: u32) -> Limits {
        self.sign_ins = NonZeroU32::new(per_minute).map(|n| {
            RateLimiter::keyed(Quota::per_minute(n)).with_middleware::<StateInformationMiddleware>()
        });
        self
    }

    /// Takes one console sign-in for `email` (lowercase) from `ip`.
    /// Errors: the wait until both may try again.
    pub fn sign_in(&self, email: &str, ip: std::net::IpAddr) -> Result<(), Duration> {
        let Some(l) = &self.sign_ins else {
            return Ok(());
        };
        let now = DefaultClock::default().now();
        let by_ip = l.check_key(&format!("ip {ip}"));
        let by_email = l.check_key(&format!("email {email}"));
        match (by_ip, by_email) {
            (Ok(_), Ok(_)) => Ok(()),
            (Err(a), Err(b)) => Err(a.wait_time_from(now).max(b.wait_time_from(now))),
            (Err(n), _) | (_, Err(n)) => Err(n.wait_time_from(now)),
        }
    }

    /// Counts a failed authentication from `ip`. Errors: the wait until
    /// that address may try again, when it failed too often.
    pub fn auth_failed(&self, ip: std::net::IpAddr) -> Result<(), Duration> {
        self.auth_failures
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match &self.auth {
            None => Ok(()),
            Some(l) => l
                .check_key(&ip)
                .map(|_| ())
                .map_err(|n| n.wait_time_from(DefaultClock::default().now())),
        }
    }

    /// Failed authentications since start.
    pub fn auth_failures(&self) -> u64 {
        self.auth_failures
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Takes one command of organization `org`: the budget left (`None`
    /// when unlimited), or the wait and budget when over.
    pub fn command(&self, org: &str) -> Result<Option<RateInfo>, Limited> {
        self.commands
            .as_ref()
            .map(|l| l.check(&org.to_string()))
            .transpose()
    }

    /// Takes one message of organization `org`'s send budget.
    pub fn send(&self, org: &str) -> Result<Option<RateInfo>, Limited> {
        self.sends
            .as_ref()
            .map(|l| l.check(&org.to_string()))
            .transpose()
    }

    /// Takes one message to `phone` (E.164) of `org`. Errors: 2007 with the wait.
    pub fn phone(&self, org: &str, phone: &str) -> Result<(), ApiError> {
        let Some(l) = &self.phones else {
            return Ok(());
        };
        l.check(&(org.to_string(), phone.to_string()))
            .map(|_| ())
            .map_err(|(wait, _)| {
                ApiError::new(
                    ErrorCode::PhoneRateLimited,
                    "rate limit reached for this phone number",
                )
                .with_retry_after(wait)
            })
    }

    /// Drops limiter state of keys that are full again (bounded memory).
    pub fn shrink(&self) {
        if let Some(l) = &self.commands {
            l.limiter.retain_recent();
        }
        if let Some(l) = &self.sends {
            l.limiter.retain_recent();
        }
        if let Some(l) = &self.phones {
            l.limiter.retain_recent();
        }
        if let Some(l) = &self.auth {
            l.retain_recent();
        }
        if let Some(l) = &self.sign_ins {
            l.retain_recent();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_run_out_and_report_what_is_left() {
        let l = Limits::new(2, 0, 1);
        assert_eq!(l.command("o").unwrap().unwrap().remaining, 1);
        assert_eq!(l.command("o").unwrap().unwrap().remaining, 0);
        let (wait, info) = l.command("o").unwrap_err();
        assert!(wait > Duration::ZERO && info.remaining == 0);
        assert!(l.command("other").is_ok(), "budgets are per organization");
        assert_eq!(l.send("o").unwrap(), None, "0 turns a limit off");
        assert!(l.phone("o", "+447922029419").is_ok());
        let e = l.phone("o", "+447922029419").unwrap_err();
        assert_eq!(e.code, ErrorCode::PhoneRateLimited);
    }

    #[test]
    fn shared_limits_are_gcra_with_an_equal_burst() {
        assert_eq!(gcra(0), None);
        assert_eq!(gcra(1), Some((Duration::from_secs(1), Duration::ZERO)));
        assert_eq!(
            gcra(10),
            Some((Duration::from_millis(100), Duration::from_millis(900)))
        );
        // After the first of ten: one interval ahead, nine left.
        let info = shared_outcome(10, Ok(Duration::from_millis(100))).unwrap();
        assert_eq!((info.limit, info.remaining), (10, 9));
        let (wait, info) = shared_outcome(1, Err(Duration::from_millis(400))).unwrap_err();
        assert_eq!((wait, info.remaining), (Duration::from_millis(400), 0));
    }
}
