//! Code both Triggers binaries share: configuration, the database pool and its SQL, the queue's
//! job type, API-key hashing, webhook signing, address policy, telemetry, metric names and the
//! service shell both binaries run in.

pub mod apikey;
pub mod config;
pub mod db;
pub mod jobs;
pub mod metrics;
pub mod models;
pub mod net;
pub mod schemas;
pub mod service;
pub mod signing;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;

/// The version both binaries report (`/health`, `User-Agent`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
