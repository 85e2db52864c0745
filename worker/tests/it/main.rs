//! The integration tests of `triggers-worker`, one binary with a module per area (as crates.io
//! does): the real worker in this process or as a process, against a database of its own per
//! test, delivering to recording receivers (`triggers_testkit`).
//!
//! Metrics are process-wide (one recorder per process): tests that read them rely on running in
//! a process of their own, as nextest runs every test (`deploy/local/test.sh`); under plain
//! `cargo test` that script runs one test at a time.

mod common;

mod admin;
mod delivery;
mod end_to_end;
mod endpoint_limits;
mod endpoints;
mod fleet;
mod lifecycle;
mod maintenance;
mod migration;
mod outage;
mod process;
mod queue_vacuum;
mod secrets_in_logs;
mod stranded;
