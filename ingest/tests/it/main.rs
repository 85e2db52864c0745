//! The integration tests of `triggers-ingest`, one binary with a module per area (as crates.io
//! does): the real app on port 0 against a database of its own per test (`common`), or the real
//! binary as a process (`triggers_testkit::ServiceProcess`).
//!
//! Metrics are process-wide (one recorder per process): tests that count them rely on running
//! in a process of their own, as nextest runs every test (`deploy/local/test.sh`); under plain
//! `cargo test` that script runs one test at a time.

mod common;

mod api_reference;
mod auth_cache;
mod batch;
mod batcher;
mod budget;
mod cli;
mod console;
mod console_browser;
mod endpoints;
mod events;
mod fanout;
mod fuzz_findings;
mod health;
mod inbox;
mod inbox_memory;
mod keys;
mod lifecycle;
mod openapi;
mod payloads;
mod portal;
mod properties;
mod ratelimit;
mod refusals;
mod server_limits;
mod stats;
mod webhook;
