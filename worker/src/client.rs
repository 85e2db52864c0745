//! The HTTP client that calls customers' webhooks: a total timeout, no redirects, no proxy,
//! a capped read of the answer, and the SSRF policy applied to every address it connects to.
//!
//! SSRF: the delivery code checks the URL with `net::resolve_allowed` before each request (that
//! covers IP-literal hosts and gives a clear `last_error`). Because a hostname could resolve to
//! something else a moment later (DNS rebinding), the client's own DNS resolver applies the same
//! policy again: reqwest connects only to addresses that resolver returned, so it never reaches
//! an address that was not checked. One client (one connection pool) serves all deliveries.

use std::{sync::Arc, time::Duration};

use reqwest::{
    StatusCode,
    dns::{Addrs, Name, Resolve, Resolving},
    header::HeaderMap,
    redirect,
};
use url::Url;

/// At most this much of a receiver's answer is read (and kept for `last_error`).
pub const MAX_RESPONSE_BYTES: usize = 4096;

/// A receiver's answer to one request.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// The start of the body, at most [`MAX_RESPONSE_BYTES`].
    pub body: Vec<u8>,
}

/// Sends webhook requests.
#[derive(Clone)]
pub struct WebhookClient {
    http: reqwest::Client,
    timeout: Duration,
}

impl WebhookClient {
    /// `max_idle_per_host`: connections kept open per host; the worker's concurrency, so a
    /// receiver serving many deliveries at once is not reconnected to under load.
    pub fn new(timeout: Duration, allow_private: bool, max_idle_per_host: usize) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .user_agent(format!("Triggers/{}", triggers_shared::VERSION))
            .redirect(redirect::Policy::none())
            .no_proxy()
            .connect_timeout(timeout)
            .timeout(timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(max_idle_per_host)
            .dns_resolver(Arc::new(PolicyResolver { allow_private }))
            .build()?;
        Ok(Self { http, timeout })
    }

    /// POST `body` to `url`. The timeout covers connecting, sending and reading the (capped)
    /// answer. Errors are transport failures, described for `last_error`.
    pub async fn post(&self, url: Url, headers: HeaderMap, body: Vec<u8>) -> Result<Answer, String> {
        let timeout = self.timeout;
        let exchange = async {
            let mut response = self
                .http
                .post(url)
                .headers(headers)
                .body(body)
                .send()
                .await
                .map_err(|e| describe(&e, timeout))?;
            let status = response.status();
            let headers = std::mem::take(response.headers_mut());
            let mut body = Vec::new();
            // Read only what we keep; a huge or endless answer costs us nothing more.
            while body.len() < MAX_RESPONSE_BYTES {
                match response.chunk().await {
                    Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                    Ok(None) => break,
                    // The status already counts; a broken body does not change the outcome.
                    Err(_) => break,
                }
            }
            body.truncate(MAX_RESPONSE_BYTES);
            Ok(Answer {
                status,
                headers,
                body,
            })
        };
        // reqwest's own timeout covers the body too; this outer bound is a backstop.
        match tokio::time::timeout(timeout + Duration::from_secs(1), exchange).await {
            Ok(result) => result,
            Err(_) => Err(format!("timed out after {} s", timeout.as_secs_f64())),
        }
    }
}

/// A transport error as one line: what happened and its causes, without the URL's query.
fn describe(err: &reqwest::Error, timeout: Duration) -> String {
    if err.is_timeout() {
        return format!("timed out after {} s", timeout.as_secs_f64());
    }
    let kind = if err.is_connect() {
        "connection failed"
    } else if err.is_builder() {
        "invalid request"
    } else {
        "request failed"
    };
    let mut text = kind.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// reqwest's resolver, with the delivery-time SSRF policy applied to every lookup.
struct PolicyResolver {
    allow_private: bool,
}

impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let url = Url::parse(&format!("http://{host}/"))?;
            let addrs = triggers_shared::net::resolve_allowed(&url, allow_private).await?;
            // Port 0: the connector then uses the URL's port.
            let addrs: Addrs = Box::new(addrs.into_iter().map(|mut a| {
                a.set_port(0);
                a
            }));
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    #[tokio::test]
    async fn the_resolver_refuses_internal_addresses_unless_allowed() {
        let strict = PolicyResolver { allow_private: false };
        let err = strict
            .resolve(Name::from_str("localhost").expect("name"))
            .await
            .err()
            .expect("refused");
        assert!(err.to_string().contains("internal"), "{err}");
        // A trailing dot slips past the name check; the address check (or DNS) still refuses it.
        let trailing = strict.resolve(Name::from_str("localhost.").expect("name")).await;
        assert!(trailing.is_err());
        let open = PolicyResolver { allow_private: true };
        let addrs: Vec<_> = open
            .resolve(Name::from_str("localhost").expect("name"))
            .await
            .expect("resolves")
            .collect();
        assert!(!addrs.is_empty());
        assert!(
            addrs.iter().all(|a| a.ip().is_loopback() && a.port() == 0),
            "{addrs:?}"
        );
    }
}
