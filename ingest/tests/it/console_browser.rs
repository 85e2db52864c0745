//! The console in a real browser (headless chromium through WebDriver), against real processes:
//! `triggers-ingest`, `triggers-worker` and the example receiver. A person's journey, step by
//! step, each asserting what the page shows: open a portal link; see the events; filter them;
//! open one and its attempts; redeliver and acknowledge; the overview; move with the keyboard;
//! sign out and in with a pasted key; a read-only session; a revoked, an expired and a used
//! link landing on the sign-in page. Then, for a second organisation, endpoints, deliveries per
//! endpoint, resend, recovery and secret rotation (`console_browser/endpoints.rs`). Screenshots of
//! each view go to `target/console-screenshots/`.

mod endpoints;

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use crate::common::browser::{Browser, PATIENCE, Spawned, screenshot_dir};
use fantoccini::{Locator, key::Key};
use serde_json::{Value, json};
use triggers_shared::testing::TestDb;
use triggers_testkit::{ServiceProcess, binary, free_port};

/// The API, as the test's own client calls it.
struct Api {
    client: reqwest::Client,
    base: String,
}

impl Api {
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        key: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if !key.is_empty() {
            req = req.bearer_auth(key);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let res = req.send().await.expect("request");
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, key: &str, body: Value) -> Value {
        let (status, answer) = self.send(reqwest::Method::POST, path, key, Some(body)).await;
        assert!((200..300).contains(&status), "POST {path}: {status} {answer}");
        answer
    }

    async fn get(&self, path: &str, key: &str) -> Value {
        let (status, answer) = self.send(reqwest::Method::GET, path, key, None).await;
        assert_eq!(status, 200, "GET {path}: {answer}");
        answer
    }

    /// A portal link of the organisation: (session id, url).
    async fn portal_link(&self, key: &str, read_only: bool) -> (String, String) {
        let created = self
            .post("/api/portal/sessions", key, json!({ "read_only": read_only }))
            .await;
        (
            created["id"].as_str().expect("id").to_owned(),
            created["url"].as_str().expect("url").to_owned(),
        )
    }

    async fn event(&self, key: &str, event_type: &str, payload: Value) -> String {
        let accepted = self
            .post(
                "/api/events",
                key,
                json!({ "type": event_type, "payload": payload }),
            )
            .await;
        accepted["id"].as_str().expect("id").to_owned()
    }

    /// Wait until the event satisfies `done`: its final state.
    async fn event_until(&self, key: &str, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let started = Instant::now();
        loop {
            let event = self.get(&format!("/api/events/{id}"), key).await;
            if done(&event) {
                return event;
            }
            assert!(started.elapsed() < PATIENCE * 2, "{what}: {event}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// The example receiver (verifies signatures, answers 204) on a free port: the process and its URL.
async fn receiver(secret: &str) -> (Spawned, String) {
    let port = free_port();
    (
        receiver_on(port, secret).await,
        format!("http://127.0.0.1:{port}/"),
    )
}

/// The example receiver on `port`, once it listens.
async fn receiver_on(port: u16, secret: &str) -> Spawned {
    let child = Command::new(binary("example-receiver"))
        .env("WEBHOOK_SECRET", secret)
        .env("PORT", port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn example-receiver");
    let started = Instant::now();
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(started.elapsed() < PATIENCE, "the receiver never listened");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Spawned(child)
}

fn worker(db_url: &str) -> ServiceProcess {
    ServiceProcess::worker(binary("triggers-worker"), db_url)
        // Three attempts: a retry after 1 s, then one after 4 s, long enough for the page to
        // show a delivery waiting for its next attempt.
        .env("TRIGGERS_RETRY_SCHEDULE", "1s,4s")
        .env("RUST_LOG", "warn")
        .spawn()
}

/// The number of rows the events table shows.
async fn rows(browser: &Browser, what: &str, n: usize) -> Vec<String> {
    browser
        .until(what, "#events-table tbody tr", |texts| texts.len() == n)
        .await
}

/// The sign-in page, saying why, with none of the organisation's data (nor its navigation).
async fn lands_on_sign_in(browser: &Browser, what: &str, reason: &str) {
    browser.text(what, "#signin-reason", reason).await;
    let data = browser
        .driver()
        .find_all(Locator::Css(
            "#events-table, #event-summary, #backlog, #org-name, #nav a",
        ))
        .await
        .expect("find");
    assert!(data.is_empty(), "{what}: the sign-in page shows data");
}

#[tokio::test]
async fn a_person_debugs_deliveries_in_the_console_in_a_real_browser() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let db = TestDb::new().await.expect("test database");
    let ingest = ServiceProcess::ingest(env!("CARGO_BIN_EXE_triggers-ingest"), &db.url)
        .env("TRIGGERS_ALLOW_PRIVATE_WEBHOOKS", "true")
        .start()
        .await;
    let api = Api {
        client: reqwest::Client::new(),
        base: ingest.base.clone(),
    };
    let _worker = worker(&db.url);

    // Acme's webhook first points where nothing listens: two events fail all three attempts.
    let org = api
        .post(
            "/api/keys/generate",
            "",
            json!({"organization_name": "Acme Rockets", "tier": "pro"}),
        )
        .await;
    let key = org["api_key"].as_str().expect("api_key").to_owned();
    let dead = format!("http://127.0.0.1:{}/hooks", free_port());
    let hook = api
        .post("/api/webhook/config", &key, json!({ "webhook_url": dead }))
        .await;
    let secret = hook["signing_secret"]
        .as_str()
        .expect("signing_secret")
        .to_owned();
    let failing = api
        .event(&key, "order.failed", json!({"order": 7, "note": "will fail"}))
        .await;
    let acked = api.event(&key, "payment.failed", json!({"payment": 9})).await;
    for id in [&failing, &acked] {
        api.event_until(&key, id, "dead-lettered after 3 attempts", |e| {
            e["status"] == "failed"
        })
        .await;
    }
    // Then a working receiver: two more events are delivered.
    let (_receiver, receiver_url) = receiver(&secret).await;
    api.post(
        "/api/webhook/config",
        &key,
        json!({ "webhook_url": receiver_url }),
    )
    .await;
    for (event_type, payload) in [
        ("order.created", json!({"order": 1})),
        ("invoice.paid", json!({"invoice": 2})),
    ] {
        let id = api.event(&key, event_type, payload).await;
        api.event_until(&key, &id, "delivered", |e| e["status"] == "delivered")
            .await;
    }

    // A portal link opens the events list, and its token leaves the address bar.
    let (_, link) = api.portal_link(&key, false).await;
    let opened = Instant::now();
    browser.goto(&link).await;
    let listed = rows(&browser, "the events list after opening a portal link", 4).await;
    let usable = opened.elapsed();
    for expected in ["order.failed", "payment.failed", "order.created", "invoice.paid"] {
        assert!(
            listed.iter().any(|r| r.contains(expected)),
            "{expected} in {listed:?}"
        );
    }
    let address = browser.driver().current_url().await.expect("url").to_string();
    assert!(
        !address.contains("trg_link_"),
        "the link's token stays in the address bar: {address}"
    );
    assert!(address.ends_with("/console#/events"), "{address}");
    browser
        .text("the organisation's name", "#org-name", "Acme Rockets")
        .await;
    let stored = browser
        .script(
            "return [sessionStorage.length, localStorage.length, document.cookie]",
            Vec::new(),
        )
        .await;
    assert_eq!(
        stored,
        json!([1, 0, ""]),
        "the credential lives in sessionStorage only"
    );
    // Milliseconds from the navigation's start, measured by the page itself.
    let timing = browser
        .script(
            "const n = performance.getEntriesByType('navigation')[0]; \
             const shown = performance.getEntriesByName('console:view-shown')[0]; \
             return [n.responseEnd, n.domContentLoadedEventEnd, shown.startTime].map(Math.round)",
            Vec::new(),
        )
        .await;
    let shown = timing[2].as_u64().expect("the view was shown");
    let timings = format!(
        "cold load of a portal link, ms from navigation start (page: {}; link exchanged and events listed, the view shown: {shown}; DOMContentLoaded: {}); seen by the test's polling after {} ms\n",
        timing[0],
        timing[1],
        usable.as_millis()
    );
    print!("{timings}");
    std::fs::write(screenshot_dir().join("timings.txt"), &timings).expect("timings");
    assert!(
        shown < 3_000,
        "the first page took over 3 s to be usable: {timings}"
    );
    browser.screenshot("events").await;

    // Filters: by status, then by type too.
    let status = browser.one("the status filter", "#filter-status").await;
    status.send_keys("Failed").await.expect("choose failed");
    browser
        .click("apply the filters", "button", "Apply filters")
        .await;
    let failed = rows(&browser, "only the failed events", 2).await;
    assert!(failed.iter().all(|r| r.contains("failed")), "{failed:?}");
    browser.screenshot("events-filtered").await;
    let type_filter = browser.one("the type filter", "#filter-type").await;
    type_filter.send_keys("order.failed").await.expect("type");
    type_filter
        .send_keys(&Key::Enter)
        .await
        .expect("submit with Enter");
    let one = rows(&browser, "only order.failed", 1).await;
    assert!(one[0].contains("order.failed"), "{one:?}");
    let address = browser.driver().current_url().await.expect("url").to_string();
    assert!(
        address.contains("status=failed") && address.contains("type=order.failed"),
        "{address}"
    );

    // An event: its payload, and its three failed attempts on the timeline.
    browser
        .click("open order.failed", "a.event-link", "order.failed")
        .await;
    browser.text("the event's heading", "h1", "order.failed").await;
    browser
        .text("the payload", "#payload", "\"note\": \"will fail\"")
        .await;
    let attempts = browser
        .until("three failed attempts", ".timeline li", |texts| texts.len() == 3)
        .await;
    for text in &attempts {
        assert!(
            text.contains("No response (failed)") && text.contains("took"),
            "{text}"
        );
    }
    let errors = browser
        .until("each attempt's error", ".timeline .attempt-error", |t| {
            t.len() == 3
        })
        .await;
    assert!(!errors[0].trim().is_empty());
    browser.text("the status", "#event-summary", "failed").await;
    browser.screenshot("event-failed").await;

    // Redeliver: a fourth attempt, answered 204 by the receiver.
    browser.click("redeliver", "#redeliver-button", "Redeliver").await;
    browser
        .text(
            "the redelivery's answer",
            "#action-result",
            "Redelivery enqueued.",
        )
        .await;
    api.event_until(&key, &failing, "redelivered", |e| e["status"] == "delivered")
        .await;
    browser.click("refresh", "#refresh-button", "Refresh").await;
    let attempts = browser
        .until("four attempts", ".timeline li", |texts| texts.len() == 4)
        .await;
    let last = &attempts[3];
    assert!(
        last.contains("Attempt 4") && last.contains("HTTP 204 (success)"),
        "{last}"
    );
    browser.text("delivered now", "#event-summary", "delivered").await;
    browser.screenshot("event-redelivered").await;

    // Acknowledge another, from the list (back link keeps the filters).
    browser.click("back to the list", "a", "← Events").await;
    browser.one("the filtered list again", "#filter-type").await;
    browser
        .goto(&format!("{}/console#/events/{acked}", ingest.base))
        .await;
    browser
        .text("payment.failed's page", "h1", "payment.failed")
        .await;
    browser.click("acknowledge", "#ack-button", "Acknowledge").await;
    browser
        .text("the acknowledgement", "#action-result", "Event acknowledged.")
        .await;
    let button = browser
        .text("the button after", "#ack-button", "Acknowledged")
        .await;
    assert!(
        !button.is_enabled().await.expect("enabled"),
        "nothing more to acknowledge"
    );
    let event = api.get(&format!("/api/events/{acked}"), &key).await;
    assert!(event["acknowledged_at"].is_string(), "{event}");

    // The overview: the backlog by status, and the organisation.
    browser.click("the overview", "#nav a", "Overview").await;
    browser.text("delivered count", "#stat-delivered", "4").await;
    assert_eq!(
        browser
            .one("failed count", "#stat-failed")
            .await
            .text()
            .await
            .expect("text"),
        "0"
    );
    assert_eq!(
        browser
            .one("pending count", "#stat-pending")
            .await
            .text()
            .await
            .expect("text"),
        "0"
    );
    browser.text("the webhook", "#organization", &receiver_url).await;
    browser.screenshot("overview").await;

    // The keyboard: Tab order from the skip link through the navigation to the filters, and Enter opens an event.
    browser.click("the events", "#nav a", "Events").await;
    rows(&browser, "all events again", 4).await;
    browser.one("the skip link", "#skip-link").await;
    browser
        .script("document.getElementById('skip-link').focus()", Vec::new())
        .await;
    let mut order = vec![browser.focused().await];
    for _ in 0..11 {
        browser.press(Key::Tab).await;
        order.push(browser.focused().await);
    }
    assert_eq!(
        order,
        [
            "skip-link",
            "Overview",
            "Endpoints",
            "Events",
            "Recovery",
            "sign-out",
            "filter-status",
            "filter-type",
            "filter-since",
            "Apply filters",
            "Clear",
            format!("order.failed, event {failing}").as_str(),
        ],
        "focus order"
    );
    browser.press(Key::Enter).await;
    browser
        .text("the event opened with Enter", "h1", "order.failed")
        .await;
    assert_eq!(
        browser.focused().await,
        "page-title",
        "focus moves to the new page's heading"
    );

    // Sign out: the sign-in page, no data; a wrong key is refused; the right one signs in.
    browser.click("sign out", "#sign-out", "Sign out").await;
    lands_on_sign_in(&browser, "signed out", "You are signed out.").await;
    browser.screenshot("sign-in").await;
    let input = browser.one("the key field", "#api-key").await;
    input
        .send_keys("trg_live_000000000000_wrong")
        .await
        .expect("type");
    input.send_keys(&Key::Enter).await.expect("submit");
    browser
        .text("the refusal", "#api-key-problem", "This API key was refused")
        .await;
    input.clear().await.expect("clear");
    input.send_keys(key.as_str()).await.expect("type");
    browser.click("sign in", "button", "Sign in").await;
    browser
        .text(
            "the page signed out from, signed in with a key",
            "h1",
            "order.failed",
        )
        .await;
    let stored = browser
        .script(
            "return sessionStorage.getItem('triggers.console.credential')",
            Vec::new(),
        )
        .await;
    assert!(
        stored.as_str().is_some_and(|s| s.contains("\"api_key\"")),
        "{stored}"
    );

    // A read-only session sees everything, cannot act, and the API refuses it too.
    let (_, link) = api.portal_link(&key, true).await;
    browser.goto(&link).await;
    rows(&browser, "the events in a read-only session", 4).await;
    browser
        .text("the read-only badge", "#read-only-badge", "Read-only")
        .await;
    browser
        .goto(&format!("{}/console#/events/{failing}", ingest.base))
        .await;
    browser.text("the event, read-only", "h1", "order.failed").await;
    for button in ["#ack-button", "#redeliver-button"] {
        let element = browser.one("an action button", button).await;
        assert!(
            !element.is_enabled().await.expect("enabled"),
            "{button} is disabled"
        );
    }
    browser.text("why", "#read-only-note", "read-only").await;
    browser.screenshot("event-read-only").await;
    let status = browser
        .script(
            "const c = JSON.parse(sessionStorage.getItem('triggers.console.credential')); \
             return fetch('/api/ack/' + arguments[0], {method: 'POST', headers: {Authorization: 'Bearer ' + c.token}}) \
               .then(async (r) => [r.status, (await r.json()).code])",
            vec![json!(failing)],
        )
        .await;
    assert_eq!(status, json!([403, "read_only_session"]));

    // A revoked session lands on the sign-in page at its next request, showing no data.
    let (id, link) = api.portal_link(&key, false).await;
    browser.goto(&link).await;
    rows(&browser, "the events before revocation", 4).await;
    let (status, _) = api
        .send(
            reqwest::Method::DELETE,
            &format!("/api/portal/sessions/{id}"),
            &key,
            None,
        )
        .await;
    assert_eq!(status, 204);
    browser
        .click("the overview after revocation", "#nav a", "Overview")
        .await;
    lands_on_sign_in(&browser, "revoked", "Your session has ended").await;
    browser.screenshot("sign-in-revoked").await;

    // So does an expired one.
    let pool = sqlx::PgPool::connect(&db.url).await.expect("database");
    let (id, link) = api.portal_link(&key, false).await;
    browser.goto(&link).await;
    rows(&browser, "the events before expiry", 4).await;
    sqlx::query(
        "UPDATE portal_sessions
         SET created_at = now() - interval '2 hours', expires_at = now() - interval '1 second'
         WHERE id = $1::uuid",
    )
    .bind(&id)
    .execute(&pool)
    .await
    .expect("expire the session");
    browser
        .click("refresh the list after expiry", "button", "Apply filters")
        .await;
    lands_on_sign_in(&browser, "expired", "Your session has ended").await;

    // And a link opened twice.
    browser.goto(&link).await;
    lands_on_sign_in(&browser, "a used link", "already used").await;
    browser.screenshot("sign-in-used-link").await;

    endpoints::a_person_routes_events_to_endpoints_and_recovers_them(&browser, &api, &ingest.base).await;

    browser.quit().await;
}
