//! Memory of the real `triggers-ingest` binary, as a process, while the inbox serves large
//! payloads: its peak resident set (`VmHWM` in /proc/<pid>/status) must stay under 256 MB
//! while 8 clients ask at once for `limit=1000` over 300 events of 256 KB payloads (each
//! client then follows its cursor once more). That every event is served exactly once across
//! byte-bounded pages is `inbox.rs`' business.

use crate::common::fixtures::{LARGE_PAYLOAD_ITEMS, insert_large_events, org_with_key};
use serde_json::Value;
use triggers_shared::testing::TestDb;
use triggers_testkit::ServiceProcess;

const EVENTS: i64 = 300;
const CLIENTS: usize = 8;
const PAGES: usize = 2;
const RSS_BOUND_KB: u64 = 256 * 1024;

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

    let ingest = ServiceProcess::ingest(env!("CARGO_BIN_EXE_triggers-ingest"), &db.url)
        .start()
        .await;
    let base = ingest.base.clone();
    let client = reqwest::Client::new();
    let idle_kb = ingest.peak_rss_kb();

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

    let peak_kb = ingest.peak_rss_kb();
    eprintln!("ingest VmHWM: {idle_kb} kB idle, {peak_kb} kB after {CLIENTS} concurrent readers");
    assert!(
        peak_kb < RSS_BOUND_KB,
        "ingest peaked at {peak_kb} kB (bound {RSS_BOUND_KB} kB)"
    );
}
