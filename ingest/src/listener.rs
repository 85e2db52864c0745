//! One dedicated connection (not one of the pool's) LISTENing on the channels that keep this
//! instance's caches honest: key changes for the auth cache, endpoint changes for the routing
//! cache. Each notification goes to the subscriber of its channel. Whenever notifications may
//! have been missed (before the first subscription, after a lost connection) every subscriber
//! is told to forget what they would have invalidated; the loop resubscribes with backoff.

use std::{
    sync::{Arc, Weak},
    time::Duration,
};

use sqlx::postgres::PgListener;
use tokio_util::sync::{CancellationToken, DropGuard};
use triggers_shared::config::{ExposeSecret as _, SecretString};

/// How long start-up waits for the first subscription before serving without it.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_RECONNECT_BACKOFF: Duration = Duration::from_secs(5);

/// What a cache does with the notifications of its channel.
pub trait Subscriber: Send + Sync + 'static {
    /// A notification arrived; its payload (an organisation id, by convention).
    fn notified(&self, payload: &str);
    /// Notifications may have been missed: forget what they would have invalidated.
    /// `listening`: whether notifications flow again from now on.
    fn reset(&self, listening: bool);
}

/// The listener task; it stops when this is dropped.
pub struct Listener {
    _stop: DropGuard,
}

/// Subscribe every `(channel, subscriber)` on one connection and keep them subscribed. The
/// first subscription is made before this returns (so the caches are live when the app starts
/// serving); if the database refuses it, the task keeps trying in the background.
pub async fn start(url: SecretString, subscribers: Vec<(&'static str, Weak<dyn Subscriber>)>) -> Listener {
    let stop = CancellationToken::new();
    let channels: Vec<&'static str> = subscribers.iter().map(|(c, _)| *c).collect();
    let first = match subscribe(&url, &channels).await {
        Ok(listener) => {
            reset_all(&subscribers, true);
            Some(listener)
        }
        Err(e) => {
            tracing::warn!(error = ?e, "cannot subscribe to cache invalidations yet; retrying");
            None
        }
    };
    tokio::spawn(listen(subscribers, url, first, stop.clone()));
    Listener {
        _stop: stop.drop_guard(),
    }
}

async fn subscribe(url: &SecretString, channels: &[&'static str]) -> anyhow::Result<PgListener> {
    tokio::time::timeout(SUBSCRIBE_TIMEOUT, async {
        let mut listener = PgListener::connect(url.expose_secret()).await?;
        // Report a lost connection at once instead of reconnecting inside `try_recv`: the
        // caches must be cleared before anything else is trusted.
        listener.eager_reconnect(false);
        listener.listen_all(channels.iter().copied()).await?;
        anyhow::Ok(listener)
    })
    .await
    .map_err(|_| anyhow::anyhow!("timed out subscribing to {channels:?}"))?
}

/// Tell every live subscriber to forget; `false` when none is left (the task may end).
fn reset_all(subscribers: &[(&'static str, Weak<dyn Subscriber>)], listening: bool) -> bool {
    let mut any = false;
    for (_, subscriber) in subscribers {
        if let Some(s) = subscriber.upgrade() {
            s.reset(listening);
            any = true;
        }
    }
    any
}

/// The listener task: dispatch notifications; on any loss of the subscription reset every
/// subscriber (notifications may have been missed), resubscribe with backoff, reset again and
/// resume. Ends when stopped or when every subscriber is gone.
async fn listen(
    subscribers: Vec<(&'static str, Weak<dyn Subscriber>)>,
    url: SecretString,
    mut current: Option<PgListener>,
    stop: CancellationToken,
) {
    let channels: Vec<&'static str> = subscribers.iter().map(|(c, _)| *c).collect();
    let mut backoff = Duration::from_millis(100);
    loop {
        let mut listener = match current.take() {
            Some(listener) => listener,
            None => {
                let attempt = tokio::select! {
                    () = stop.cancelled() => return,
                    attempt = subscribe(&url, &channels) => attempt,
                };
                match attempt {
                    Ok(listener) => {
                        if !reset_all(&subscribers, true) {
                            return;
                        }
                        tracing::info!("subscribed to cache invalidations again");
                        backoff = Duration::from_millis(100);
                        listener
                    }
                    Err(e) => {
                        tracing::warn!(error = ?e, "resubscribing to cache invalidations failed");
                        tokio::select! {
                            () = stop.cancelled() => return,
                            () = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(MAX_RECONNECT_BACKOFF);
                        continue;
                    }
                }
            }
        };
        loop {
            let received = tokio::select! {
                () = stop.cancelled() => return,
                received = listener.try_recv() => received,
            };
            match received {
                Ok(Some(notification)) => {
                    let subscriber = subscribers
                        .iter()
                        .find(|(c, _)| *c == notification.channel())
                        .and_then(|(_, s)| s.upgrade());
                    // Upgraded only between waits, so a waiting listener keeps no cache alive.
                    let subscriber: Option<Arc<dyn Subscriber>> = subscriber;
                    if let Some(s) = subscriber {
                        s.notified(notification.payload());
                    }
                }
                Ok(None) => {
                    tracing::warn!("cache invalidation listener lost its connection");
                    if !reset_all(&subscribers, false) {
                        return;
                    }
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = ?e, "cache invalidation listener failed");
                    if !reset_all(&subscribers, false) {
                        return;
                    }
                    break;
                }
            }
        }
    }
}
