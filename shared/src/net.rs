//! Which webhook targets are allowed: the SSRF policy both ingest (at configuration) and the
//! worker (at delivery, after resolving again) apply.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use url::Url;

/// The longest webhook URL we accept.
pub const MAX_WEBHOOK_URL_LEN: usize = 2048;

/// What a refused target is told: never the address it resolved to, nor whether it resolved at
/// all (either would let a client map the internal network through our resolver).
pub const NOT_ALLOWED: &str =
    "the URL must point to a public address: internal and unresolvable targets are not allowed";

/// A webhook URL whose shape is checked ([`parse_webhook_url`]), in its normalised form: what
/// is stored is exactly what was checked and what the worker calls. Where it points is checked
/// separately ([`resolve_allowed`]), since that needs DNS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookUrl(Url);

impl WebhookUrl {
    pub fn parse(raw: &str) -> Result<Self, UrlRejection> {
        parse_webhook_url(raw).map(Self)
    }

    pub fn as_url(&self) -> &Url {
        &self.0
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

/// Why a webhook URL is refused. Messages do not name the field: the webhook route's
/// `webhook_url` and an endpoint's `url` follow the same rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlRejection {
    /// Malformed, wrong scheme, user-info, too long: a validation failure.
    #[error("{0}")]
    Invalid(String),
    /// The host is internal, resolves to an internal address, or does not resolve: the
    /// message is always [`NOT_ALLOWED`].
    #[error("{NOT_ALLOWED}")]
    NotAllowed,
}

/// Parse and check the shape of a webhook URL (no DNS). The length limit holds for the text as
/// given and for its normalised form (which percent-encoding can make three times longer).
pub fn parse_webhook_url(raw: &str) -> Result<Url, UrlRejection> {
    let too_long = || {
        UrlRejection::Invalid(format!(
            "must be at most {MAX_WEBHOOK_URL_LEN} characters, also once normalised"
        ))
    };
    if raw.len() > MAX_WEBHOOK_URL_LEN {
        return Err(too_long());
    }
    let url = Url::parse(raw).map_err(|e| UrlRejection::Invalid(format!("is not a valid URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(UrlRejection::Invalid("must use http or https".into()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(UrlRejection::Invalid("must not contain user info".into()));
    }
    if url.host().is_none() {
        return Err(UrlRejection::Invalid("must have a host".into()));
    }
    if url.as_str().len() > MAX_WEBHOOK_URL_LEN {
        return Err(too_long());
    }
    Ok(url)
}

/// Resolve the URL's host and, unless `allow_private`, refuse it when any address is internal.
/// Returns the resolved addresses (so a caller can connect to exactly what was checked).
pub async fn resolve_allowed(url: &Url, allow_private: bool) -> Result<Vec<SocketAddr>, UrlRejection> {
    let host = url
        .host_str()
        .ok_or_else(|| UrlRejection::Invalid("must have a host".into()))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = url.port_or_known_default().unwrap_or(443);
    if !allow_private {
        let lower = host.to_ascii_lowercase();
        if lower == "localhost"
            || lower.ends_with(".localhost")
            || lower.ends_with(".internal")
            || lower.ends_with(".local")
        {
            return Err(UrlRejection::NotAllowed);
        }
    }
    let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::net::lookup_host((host, port))
            .await
            .map_err(|_| UrlRejection::NotAllowed)?
            .collect(),
    };
    if addrs.is_empty() || (!allow_private && addrs.iter().any(|a| !is_public(a.ip()))) {
        return Err(UrlRejection::NotAllowed);
    }
    Ok(addrs)
}

/// Is `ip` a public unicast address (not loopback, private, link-local, CGNAT, multicast,
/// unspecified, documentation, benchmarking, reserved, an IPv6 local range, or an IPv6 prefix
/// that tunnels to IPv4 (6to4, Teredo, NAT64), where the real target hides in the address)?
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
        || first == 0x0064 && ip.segments()[1] == 0xff9b // NAT64: 64:ff9b::/96 and local-use 64:ff9b:1::/48
        || first == 0x2002 // 6to4 2002::/16
        || first == 0x2001 && ip.segments()[1] == 0 // Teredo 2001::/32
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
            "2002:a00:1::1",
            "2002:808:808::1",
            "64:ff9b::a00:1",
            "64:ff9b:1::a00:1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
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

    #[test]
    fn a_url_that_percent_encoding_makes_too_long_is_refused() {
        let raw = format!("https://example.com/{}x", " ".repeat(1000));
        assert!(raw.len() <= MAX_WEBHOOK_URL_LEN);
        assert!(matches!(parse_webhook_url(&raw), Err(UrlRejection::Invalid(_))));
    }

    #[tokio::test]
    async fn refusals_never_name_the_resolved_address() {
        let url = parse_webhook_url("http://10.96.0.1/x").expect("url");
        let err = resolve_allowed(&url, false).await.expect_err("refused");
        assert_eq!(err, UrlRejection::NotAllowed);
        assert!(!err.to_string().contains("10.96"), "{err}");
    }

    #[tokio::test]
    async fn loopback_is_refused_unless_allowed() {
        let url = parse_webhook_url("http://127.0.0.1:9/x").expect("url");
        assert!(matches!(
            resolve_allowed(&url, false).await,
            Err(UrlRejection::NotAllowed)
        ));
        assert!(resolve_allowed(&url, true).await.is_ok());
        let url = parse_webhook_url("http://localhost:9/x").expect("url");
        assert!(matches!(
            resolve_allowed(&url, false).await,
            Err(UrlRejection::NotAllowed)
        ));
    }
}
