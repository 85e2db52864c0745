//! Which webhook targets are allowed: the SSRF policy both ingest (at configuration) and the
//! worker (at delivery, after resolving again) apply.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use url::Url;

/// The longest webhook URL we accept.
pub const MAX_WEBHOOK_URL_LEN: usize = 2048;

/// Why a webhook URL is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlRejection {
    /// Malformed, wrong scheme, user-info, too long: a validation failure.
    #[error("{0}")]
    Invalid(String),
    /// The host is or resolves to an internal address.
    #[error("{0}")]
    NotAllowed(String),
}

/// Parse and check the shape of a webhook URL (no DNS).
pub fn parse_webhook_url(raw: &str) -> Result<Url, UrlRejection> {
    if raw.len() > MAX_WEBHOOK_URL_LEN {
        return Err(UrlRejection::Invalid(format!(
            "webhook_url must be at most {MAX_WEBHOOK_URL_LEN} characters"
        )));
    }
    let url =
        Url::parse(raw).map_err(|e| UrlRejection::Invalid(format!("webhook_url is not a valid URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(UrlRejection::Invalid("webhook_url must use http or https".into()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(UrlRejection::Invalid(
            "webhook_url must not contain user info".into(),
        ));
    }
    if url.host().is_none() {
        return Err(UrlRejection::Invalid("webhook_url must have a host".into()));
    }
    Ok(url)
}

/// Resolve the URL's host and, unless `allow_private`, refuse it when any address is internal.
/// Returns the resolved addresses (so a caller can connect to exactly what was checked).
pub async fn resolve_allowed(url: &Url, allow_private: bool) -> Result<Vec<SocketAddr>, UrlRejection> {
    let host = url
        .host_str()
        .ok_or_else(|| UrlRejection::Invalid("webhook_url must have a host".into()))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = url.port_or_known_default().unwrap_or(443);
    if !allow_private {
        let lower = host.to_ascii_lowercase();
        if lower == "localhost"
            || lower.ends_with(".localhost")
            || lower.ends_with(".internal")
            || lower.ends_with(".local")
        {
            return Err(UrlRejection::NotAllowed(format!(
                "webhook host `{host}` is internal"
            )));
        }
    }
    let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::net::lookup_host((host, port))
            .await
            .map_err(|_| UrlRejection::NotAllowed(format!("webhook host `{host}` does not resolve")))?
            .collect(),
    };
    if addrs.is_empty() {
        return Err(UrlRejection::NotAllowed(format!(
            "webhook host `{host}` does not resolve"
        )));
    }
    if !allow_private && let Some(bad) = addrs.iter().find(|a| !is_public(a.ip())) {
        return Err(UrlRejection::NotAllowed(format!(
            "webhook host `{host}` resolves to an internal address ({})",
            bad.ip()
        )));
    }
    Ok(addrs)
}

/// Is `ip` a public unicast address (not loopback, private, link-local, CGNAT, multicast,
/// unspecified, documentation, benchmarking, reserved, or an IPv6 local range)?
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            is_public_v6(v6)
        }
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local() // includes 169.254.169.254, the cloud metadata service
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // CGNAT 100.64/10
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (18..20).contains(&b)) // benchmarking
        || a >= 240) // reserved
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (first & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (first & 0xffc0) == 0xfec0 // site-local (deprecated)
        || first == 0x2001 && ip.segments()[1] == 0x0db8 // documentation
        || first == 0x0064 && ip.segments()[1] == 0xff9b // NAT64
        || ip.to_ipv4().is_some_and(|v4| !is_public_v4(v4)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fc00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "ff02::1",
        ] {
            let ip: IpAddr = ip.parse().expect("ip");
            assert!(!is_public(ip), "{ip} should be internal");
        }
        for ip in ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"] {
            let ip: IpAddr = ip.parse().expect("ip");
            assert!(is_public(ip), "{ip} should be public");
        }
    }

    #[test]
    fn url_shapes_are_checked() {
        assert!(parse_webhook_url("https://example.com/hook").is_ok());
        assert!(parse_webhook_url("ftp://example.com/").is_err());
        assert!(parse_webhook_url("https://user:pw@example.com/").is_err());
        assert!(parse_webhook_url(&format!("https://example.com/{}", "a".repeat(2100))).is_err());
    }

    #[tokio::test]
    async fn loopback_is_refused_unless_allowed() {
        let url = parse_webhook_url("http://127.0.0.1:9/x").expect("url");
        assert!(matches!(
            resolve_allowed(&url, false).await,
            Err(UrlRejection::NotAllowed(_))
        ));
        assert!(resolve_allowed(&url, true).await.is_ok());
        let url = parse_webhook_url("http://localhost:9/x").expect("url");
        assert!(matches!(
            resolve_allowed(&url, false).await,
            Err(UrlRejection::NotAllowed(_))
        ));
    }
}
