//! Outbound HTTP to addresses that organizations choose (webhooks, delivery
//! callbacks, a bot's provider base URL): the SSRF guard and the client that
//! enforces it, and how a response's failure is read.
//!
//! Invariants: such requests never follow redirects, never use a proxy, and
//! connect only to public addresses unless `allow_private_webhooks` is set;
//! the check is made on the resolved addresses at connect time (no DNS
//! rebinding).

use crate::config::Config;
use reqwest::dns::{Name, Resolve, Resolving};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// Whether `ip` is a public unicast address: not loopback, private (RFC
/// 1918, fc00::/7), link-local, CGNAT (100.64/10), unspecified, multicast,
/// broadcast or documentation. IPv4-mapped IPv6 is judged as IPv4.
pub fn is_public_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_ip(IpAddr::V4(v4));
            }
            let seg = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (seg[0] & 0xfe00) == 0xfc00
                || (seg[0] & 0xffc0) == 0xfe80
                || seg[0] == 0x2001 && seg[1] == 0x0db8)
        }
    }
}

/// Checks a webhook URL when it is set: `https://` (or `http://` when
/// private webhooks are allowed), a host, and no private IP literal.
pub fn check_url(url: &str, allow_private: bool) -> Result<reqwest::Url, String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("invalid webhook URL: {e}"))?;
    match parsed.scheme() {
        "https" => {}
        "http" if allow_private => {}
        "http" => return Err("webhook URL must be https://".into()),
        other => return Err(format!("webhook URL scheme {other} is not allowed")),
    }
    if url.len() > 2048 {
        return Err("webhook URL longer than 2048 characters".into());
    }
    let host = parsed.host().ok_or("webhook URL has no host")?;
    let literal = match host {
        url::Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
        url::Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
        url::Host::Domain(_) => None,
    };
    if let Some(ip) = literal {
        if !allow_private && !is_public_ip(ip) {
            return Err(format!(
                "webhook address {ip} is private, loopback or link-local"
            ));
        }
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("webhook URL must not carry credentials".into());
    }
    Ok(parsed)
}

/// DNS resolution for deliveries that drops non-public addresses unless
/// private webhooks are allowed: the address connected to is the one checked.
struct GuardedResolver {
    allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow = self.allow_private;
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = addrs
                .into_iter()
                .filter(|a| allow || is_public_ip(a.ip()))
                .collect();
            if allowed.is_empty() {
                return Err(format!("{} resolves to no public address", name.as_str()).into());
            }
            Ok(Box::new(allowed.into_iter()) as Box<dyn Iterator<Item = SocketAddr> + Send>)
        })
    }
}

/// An outbound HTTP client for URLs that organizations choose (webhooks,
/// delivery callbacks, a bot's Graph API base): no redirects, no proxy,
/// `timeout` seconds per request, and only public addresses unless
/// `allow_private_webhooks`.
pub fn guarded_client(config: &Config, timeout: f64) -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(Duration::from_secs_f64(timeout))
        .connect_timeout(Duration::from_secs_f64(timeout.min(10.0)))
        .pool_max_idle_per_host(config.webhook_concurrency)
        .dns_resolver(Arc::new(GuardedResolver {
            allow_private: config.allow_private_webhooks,
        }))
        .user_agent(concat!("convgate/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("HTTP client builds")
}

/// The delay a 429 or 503 response asks for in `Retry-After`; `None` for
/// other statuses or without a readable header.
pub fn retry_after_of(r: &reqwest::Response) -> Option<Duration> {
    matches!(r.status().as_u16(), 429 | 503)
        .then(|| r.headers().get("retry-after"))
        .flatten()
        .and_then(|v| v.to_str().ok())
        .and_then(crate::time::parse_retry_after)
}

/// An error and its sources, joined by `": "` (for logs and dead letters).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_addresses_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "0.0.0.0",
        ] {
            assert!(!is_public_ip(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["1.1.1.1", "8.8.8.8", "2606:4700::1111"] {
            assert!(is_public_ip(ip.parse().unwrap()), "{ip}");
        }
        assert!(check_url("http://example.com/hook", false).is_err());
        assert!(check_url("https://127.0.0.1/hook", false).is_err());
        assert!(check_url("https://[::1]/hook", false).is_err());
        assert!(check_url("https://example.com/hook", false).is_ok());
        assert!(check_url("http://127.0.0.1:9/hook", true).is_ok());
        assert!(check_url("ftp://example.com/", true).is_err());
    }
}
