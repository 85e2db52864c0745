//! Memory of the real `triggers-ingest` binary, as a process, while the inbox serves large
//! payloads: its peak resident set (`VmHWM` in /proc/<pid>/status) must stay under 256 MB
//! while 8 clients ask at once for `limit=1000` over 300 events of 256 KB payloads (each
//! client then follows its cursor once more). That every event is served exactly once across
//! byte-bounded pages is `inbox.rs`' business.

mod common;
#[path = "common/events_fixtures.rs"]
mod fixtures;

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::TestApp;
use fixtures::{LARGE_PAYLOAD_ITEMS, insert_large_events, org_with_key};
use serde_json::Value;
use triggers_shared::testing::TestDb;

const EVENTS: i64 = 300;
const CLIENTS: usize = 8;
const PAGES: usize = 2;
const RSS_BOUND_KB: u64 = 256 * 1024;

struct Ingest(Child);

impl Drop for Ingest {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `kB` line of /proc/<pid>/status.
fn status_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|line| {
            line.strip_prefix(field)?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("{field} missing from /proc/{pid}/status"))
}

/// The first `PAGES` pages of the inbox; returns how many events they held.
async fn read_pages(client: reqwest::Client, base: String, key: String) -> usize {
    let mut events = 0;
    let mut path = "/api/inbox?limit=1000".to_owned();
    for _ in 0..PAGES {
        let res = client
            .get(format!("{base}{path}"))
            .header("X-API-Key", &key)
            .send()
            .await
            .expect("inbox request");
        assert_eq!(res.status(), 200);
        let page: Value = res.json().await.expect("inbox json");
        let items = page["events"].as_array().expect("events");
        assert_eq!(
            items[0]["payload"]["data"].as_array().map(Vec::len),
            Some(LARGE_PAYLOAD_ITEMS as usize)
        );
        events += items.len();
        let cursor = page["next_cursor"]
            .as_str()
            .expect("300 large payloads need more pages");
        path = format!("/api/inbox?limit=1000&cursor={cursor}");
    }
    events
}

#[tokio::test]
async fn eight_concurrent_inbox_pages_over_300_large_payloads_keep_ingest_under_256_mb() {
    let db = TestDb::new().await.expect("test database");
    let (key, org_id) = org_with_key(&db.pool, "enterprise").await;
    insert_large_events(&db.pool, org_id, EVENTS).await;

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port");
    let child = Command::new(env!("CARGO_BIN_EXE_triggers-ingest"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", &db.url)
        .env("TRIGGERS_INGEST_ADDR", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn triggers-ingest");
    let ingest = Ingest(child);
    let pid = ingest.0.id();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let started = Instant::now();
    while !client
        .get(format!("{base}/health/ready"))
        .send()
        .await
        .is_ok_and(|r| r.status() == 200)
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "ingest never became ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let idle_kb = status_kb(pid, "VmHWM:");

    let readers: Vec<_> = (0..CLIENTS)
        .map(|_| tokio::spawn(read_pages(client.clone(), base.clone(), key.clone())))
        .collect();
    for reader in readers {
        let events = reader.await.expect("reader");
        assert!(
            events > 2 && events < EVENTS as usize,
            "{events} events in {PAGES} pages"
        );
    }

    let peak_kb = status_kb(pid, "VmHWM:");
    eprintln!("ingest VmHWM: {idle_kb} kB idle, {peak_kb} kB after {CLIENTS} concurrent readers");
    assert!(
        peak_kb < RSS_BOUND_KB,
        "ingest peaked at {peak_kb} kB (bound {RSS_BOUND_KB} kB)"
    );
}
