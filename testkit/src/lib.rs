//! What the integration tests of every crate share, written once: the real `triggers-ingest` or
//! `triggers-worker` as a process ([`process`]), a webhook receiver that records every request
//! ([`receiver`]), organisations and endpoints created by the same `shared::db` functions as the
//! API ([`fixtures`]), and Prometheus text read back ([`prometheus`]).
//!
//! A dev-dependency only: no binary links it. Helpers panic with a message instead of returning
//! errors, as test code does.

pub mod fixtures;
pub mod process;
pub mod prometheus;
pub mod receiver;

use std::{
    future::Future,
    time::{Duration, Instant},
};

pub use process::{ServiceProcess, binary, free_port};
pub use receiver::{Received, Receiver, Reply};

/// Poll `check` every 50 ms until it holds; panic with `what` after `timeout`. For what another
/// process or task does on its own time; never to show that nothing happened.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
