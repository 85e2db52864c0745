//! The endpoints half of the console's journey (issue 17 §4), for a second organisation that
//! starts with nothing: open a portal link; create two endpoints with different filters (first
//! with mistakes the API points out beside the fields), each receiver verifying with the secret
//! the console showed once; send events, and a test event from the console; see each delivered
//! to the right endpoint with its attempt; break one receiver and see the failure and the
//! retry schedule; fix it and resend; recover the rest after a dry-run count; rotate a secret
//! (the new one signs from then on); the overview's chart; a read-only session; disable and
//! delete an endpoint.

use fantoccini::key::Key;
use serde_json::{Value, json};

use super::{Api, free_port, receiver_on};
use crate::common::browser::Browser;

/// The endpoint's id, by its description, as the API lists it.
async fn endpoint_id(api: &Api, key: &str, description: &str) -> String {
    let list = api.get("/api/endpoints", key).await;
    list["endpoints"]
        .as_array()
        .and_then(|all| all.iter().find(|e| e["description"] == description))
        .and_then(|e| e["id"].as_str())
        .unwrap_or_else(|| panic!("no endpoint {description}: {list}"))
        .to_owned()
}

/// Each delivery of the event, as `(endpoint_id, status)`.
fn deliveries(event: &Value) -> Vec<(String, String)> {
    event["deliveries"]
        .as_array()
        .map(|all| {
            all.iter()
                .map(|d| {
                    (
                        d["endpoint_id"].as_str().unwrap_or_default().to_owned(),
                        d["status"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Fill the new-endpoint form and submit it.
async fn fill_endpoint(browser: &Browser, url: &str, description: &str, types: &str, headers: &str) {
    for (css, value) in [
        ("#endpoint-url", url),
        ("#endpoint-description", description),
        ("#endpoint-event-types", types),
        ("#endpoint-headers", headers),
    ] {
        let input = browser.one("a field of the endpoint form", css).await;
        input.clear().await.expect("clear");
        input.send_keys(value).await.expect("type");
    }
    browser
        .click("save the endpoint", "#save-endpoint", "Create endpoint")
        .await;
}

/// Create an endpoint through the form: the signing secret the dialog showed once.
async fn create_endpoint(
    browser: &Browser,
    url: &str,
    description: &str,
    types: &str,
    headers: &str,
) -> String {
    browser
        .click("new endpoint", "#new-endpoint", "New endpoint")
        .await;
    browser.text("the form", "h1", "New endpoint").await;
    fill_endpoint(browser, url, description, types, headers).await;
    let secret = browser
        .one("the secret, shown once", "#secret-dialog #new-secret")
        .await
        .prop("value")
        .await
        .expect("value")
        .unwrap_or_default();
    assert!(secret.starts_with("whsec_"), "{secret}");
    secret
}

/// Click Refresh on an event's page, each time waiting for the page to be shown again, until
/// `ready` holds for the texts of `css`.
async fn refresh_until(
    browser: &Browser,
    what: &str,
    css: &str,
    ready: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    let started = std::time::Instant::now();
    loop {
        browser.click("refresh", "#refresh-button", "Refresh").await;
        // The click marks the page busy at once; the view is shown again when that ends.
        browser
            .one("the event shown again", "main:not([aria-busy]) #event-summary")
            .await;
        let texts = browser.until(what, css, |_| true).await;
        if ready(&texts) {
            return texts;
        }
        if started.elapsed() > crate::common::browser::PATIENCE {
            // `until` fails with a screenshot and the page's text.
            return browser.until(what, css, ready).await;
        }
    }
}

pub(super) async fn a_person_routes_events_to_endpoints_and_recovers_them(
    browser: &Browser,
    api: &Api,
    base: &str,
) {
    let org = api
        .post(
            "/api/keys/generate",
            "",
            json!({"organization_name": "Globex", "tier": "pro"}),
        )
        .await;
    let key = org["api_key"].as_str().expect("api_key").to_owned();
    let (_, link) = api.portal_link(&key, false).await;
    browser.goto(&link).await;
    browser.one("an empty events list", "#events-empty").await;
    browser.click("the endpoints", "#nav a", "Endpoints").await;
    browser.one("no endpoint yet", "#endpoints-empty").await;

    // The first endpoint, with mistakes first: each shows beside its field.
    let (orders_port, billing_port) = (free_port(), free_port());
    browser
        .click("new endpoint", "#new-endpoint", "New endpoint")
        .await;
    fill_endpoint(browser, "not a url", "Orders", "order*", "X-Team: orders").await;
    browser
        .text("the URL's problem", "#endpoint-url-problem", "url")
        .await;
    browser
        .text(
            "the pattern's problem",
            "#endpoint-event-types-problem",
            "event_types",
        )
        .await;
    assert_eq!(
        browser.focused().await,
        "endpoint-url",
        "focus goes to the first bad field"
    );
    browser.screenshot("endpoint-form-errors").await;
    browser.goto(&format!("{base}/console#/endpoints")).await;
    let orders_url = format!("http://127.0.0.1:{orders_port}/orders");
    let orders_secret = create_endpoint(browser, &orders_url, "Orders", "order.*", "X-Team: orders").await;
    browser.screenshot("endpoint-secret").await;
    browser.click("done", "#secret-done", "Done").await;
    browser.text("the endpoint's page", "h1", "Orders").await;
    browser.text("its filter", "#endpoint-summary", "order.*").await;
    browser
        .text("its header", "#endpoint-summary", "X-Team: orders")
        .await;
    let orders_receiver = receiver_on(orders_port, &orders_secret).await;

    browser.click("the endpoints", "#nav a", "Endpoints").await;
    let billing_url = format!("http://127.0.0.1:{billing_port}/billing");
    let billing_secret = create_endpoint(
        browser,
        &billing_url,
        "Billing",
        "invoice.*, payment.succeeded",
        "",
    )
    .await;
    browser.click("done", "#secret-done", "Done").await;
    browser.text("the endpoint's page", "h1", "Billing").await;
    let billing_receiver = receiver_on(billing_port, &billing_secret).await;
    let orders = endpoint_id(api, &key, "Orders").await;
    let billing = endpoint_id(api, &key, "Billing").await;

    // Events go where their filters say: each to one endpoint, delivered on the first attempt.
    let order = api.event(&key, "order.created", json!({"order": 1})).await;
    let invoice = api.event(&key, "invoice.paid", json!({"invoice": 1})).await;
    for (id, endpoint) in [(&order, &orders), (&invoice, &billing)] {
        let event = api
            .event_until(&key, id, "delivered to its one endpoint", |e| {
                e["status"] == "delivered"
            })
            .await;
        assert_eq!(
            deliveries(&event),
            [(endpoint.clone(), "delivered".to_owned())],
            "{event}"
        );
    }
    browser.goto(&format!("{base}/console#/events/{order}")).await;
    browser.text("the order's page", "h1", "order.created").await;
    let cards = browser
        .until("one delivery, to Orders", "#deliveries .delivery", |t| {
            t.len() == 1
        })
        .await;
    assert!(
        cards[0].contains("Orders") && cards[0].contains("delivered"),
        "{cards:?}"
    );
    browser
        .text(
            "its attempt",
            &format!("#attempts-{orders} li"),
            "HTTP 204 (success)",
        )
        .await;
    browser.goto(&format!("{base}/console#/events/{invoice}")).await;
    browser.text("the invoice's page", "h1", "invoice.paid").await;
    let cards = browser
        .until("one delivery, to Billing", "#deliveries .delivery", |t| {
            t.len() == 1
        })
        .await;
    assert!(cards[0].contains("Billing"), "{cards:?}");
    browser
        .text(
            "its attempt",
            &format!("#attempts-{billing} li"),
            "Attempt 1 · HTTP 204 (success)",
        )
        .await;

    // A test event from the endpoint's page: a type its filter takes, delivered to it alone.
    browser.goto(&format!("{base}/console#/endpoints/{orders}")).await;
    browser
        .click("send a test event", "#test-button", "Send test event")
        .await;
    let test_type = browser
        .one("the test type", "#test-type")
        .await
        .prop("value")
        .await
        .expect("value");
    assert_eq!(test_type.as_deref(), Some("order.test"));
    browser.click("send it", "#test-confirm", "Send").await;
    browser
        .click("open the test event", "#test-event-link", "order.test")
        .await;
    browser.text("the test event's page", "h1", "order.test").await;
    let cards = refresh_until(
        browser,
        "the test event delivered to Orders alone",
        "#deliveries .delivery",
        |t| t.len() == 1 && t[0].contains("HTTP 204 (success)"),
    )
    .await;
    assert!(cards[0].contains("Orders"), "{cards:?}");

    // Billing's receiver goes down: the failure, and the next attempt the schedule set.
    drop(billing_receiver);
    let overdue = api.event(&key, "invoice.overdue", json!({"invoice": 2})).await;
    let voided = api.event(&key, "invoice.voided", json!({"invoice": 3})).await;
    browser.goto(&format!("{base}/console#/events/{overdue}")).await;
    browser.text("the failing event", "h1", "invoice.overdue").await;
    let state = refresh_until(
        browser,
        "a failed attempt and the next one planned",
        "#deliveries .delivery",
        |t| t.len() == 1 && t[0].contains("No response (failed)") && t[0].contains("next attempt"),
    )
    .await;
    assert!(state[0].contains("pending"), "{state:?}");
    browser.screenshot("event-retrying").await;
    for id in [&overdue, &voided] {
        api.event_until(&key, id, "failed after three attempts", |e| {
            e["status"] == "failed"
        })
        .await;
    }
    let attempts = refresh_until(
        browser,
        "three failed attempts",
        &format!("#attempts-{billing} li"),
        |t| t.len() == 3,
    )
    .await;
    assert!(attempts.iter().all(|a| a.contains("(failed)")), "{attempts:?}");
    browser
        .text(
            "dead-lettered",
            "#deliveries .delivery-state",
            "failed · 3 attempts",
        )
        .await;
    browser.click("the endpoints", "#nav a", "Endpoints").await;
    let listed = browser
        .until("both endpoints", "#endpoints-table tbody tr", |t| t.len() == 2)
        .await;
    let billing_row = listed
        .iter()
        .find(|r| r.contains("Billing"))
        .expect("Billing's row");
    assert!(
        billing_row.contains("failed") && billing_row.contains("enabled"),
        "{billing_row}"
    );
    browser.screenshot("endpoints").await;

    // Fixed: the receiver is back; resend one delivery from the event's page.
    let _billing_receiver = receiver_on(billing_port, &billing_secret).await;
    browser.goto(&format!("{base}/console#/events/{overdue}")).await;
    browser
        .click("resend", &format!("#resend-{billing}"), "Resend")
        .await;
    browser
        .text(
            "the resend's answer",
            "#action-result",
            "Resend to Billing enqueued.",
        )
        .await;
    api.event_until(&key, &overdue, "resent and delivered", |e| {
        e["status"] == "delivered"
    })
    .await;
    let attempts = refresh_until(
        browser,
        "a fourth attempt",
        &format!("#attempts-{billing} li"),
        |t| t.len() == 4,
    )
    .await;
    assert!(
        attempts[3].contains("Attempt 4") && attempts[3].contains("HTTP 204 (success)"),
        "{attempts:?}"
    );
    browser.screenshot("event-resent").await;

    // Recovery: the one failed delivery left, counted first, then restarted.
    browser.click("recovery", "#nav a", "Recovery").await;
    let endpoint_select = browser.one("the endpoint", "#recovery-endpoint").await;
    endpoint_select
        .select_by_label("Billing")
        .await
        .expect("choose Billing");
    let window = browser.one("the window", "#recovery-window").await;
    window
        .select_by_label("Last hour")
        .await
        .expect("choose the last hour");
    let start = browser.one("start", "#start-recovery").await;
    assert!(
        !start.is_enabled().await.expect("enabled"),
        "no start before a count"
    );
    browser
        .click("count", "#dry-run-button", "Count matching deliveries")
        .await;
    browser
        .text("the dry run", "#dry-run-count", "1 delivery matches.")
        .await;
    browser.screenshot("recovery-count").await;
    browser.click("start", "#start-recovery", "Start recovery").await;
    browser
        .text(
            "the recovery done",
            "#recovery-status",
            "Done: 1 of 1 deliveries restarted (finished",
        )
        .await;
    browser
        .text(
            "what it recovered",
            "#recovery-scope",
            "that were failed or skipped",
        )
        .await;
    api.event_until(&key, &voided, "recovered and delivered", |e| {
        e["status"] == "delivered"
    })
    .await;
    browser.screenshot("recovery").await;

    // Rotate Orders' secret with a grace period: the dialog shows the new one once, and from
    // then on it signs (a receiver knowing only it verifies the next delivery).
    browser.goto(&format!("{base}/console#/endpoints/{orders}")).await;
    browser.click("rotate", "#rotate-button", "Rotate secret").await;
    browser
        .one("the grace period", "#grace-period")
        .await
        .select_by_label("1 hour")
        .await
        .expect("choose 1 hour");
    browser.click("confirm", "#rotate-confirm", "Rotate").await;
    let rotated = browser
        .one("the new secret", "#secret-dialog #new-secret")
        .await
        .prop("value")
        .await
        .expect("value")
        .unwrap_or_default();
    assert!(
        rotated.starts_with("whsec_") && rotated != orders_secret,
        "{rotated}"
    );
    browser.screenshot("rotate-secret").await;
    browser.click("done", "#secret-done", "Done").await;
    browser
        .text(
            "the grace",
            "#action-result",
            "The previous secret is valid until",
        )
        .await;
    drop(orders_receiver);
    let _orders_receiver = receiver_on(orders_port, &rotated).await;
    let shipped = api.event(&key, "order.shipped", json!({"order": 1})).await;
    api.event_until(&key, &shipped, "signed with the new secret", |e| {
        e["status"] == "delivered"
    })
    .await;

    // The overview: per endpoint, the day's deliveries by outcome and the attempts' latency.
    browser.click("the overview", "#nav a", "Overview").await;
    browser
        .until("both endpoints' numbers", "#endpoint-stats tbody tr", |t| {
            t.len() == 2
        })
        .await;
    // Orders: order.created, order.test, order.shipped; Billing: three invoices, all delivered
    // now, after 1 + 4 + 4 attempts.
    for (endpoint, delivered, failed, attempts) in [(&orders, "3", "0", "3"), (&billing, "3", "0", "9")] {
        let row = format!("#endpoint-stats tr[data-endpoint-id='{endpoint}']");
        let cells = browser
            .until("an endpoint's numbers", &format!("{row} td.num"), |t| {
                t.len() == 8
            })
            .await;
        assert_eq!(
            [&cells[0], &cells[1], &cells[5]],
            [delivered, failed, attempts],
            "delivered, failed, attempts: {cells:?}"
        );
        assert!(
            cells[6].ends_with("ms") && cells[7].ends_with("ms"),
            "p50 and p95: {cells:?}"
        );
    }
    let bars = browser
        .until("a delivered bar each", "#outcome-chart rect.bar-delivered", |t| {
            t.len() == 2
        })
        .await;
    assert_eq!(bars.len(), 2);
    browser.screenshot("overview-endpoints").await;

    // A read-only session sees the endpoint and can change nothing; the API refuses it too.
    let (_, read_only) = api.portal_link(&key, true).await;
    browser.goto(&read_only).await;
    browser.text("read-only", "#read-only-badge", "Read-only").await;
    browser
        .goto(&format!("{base}/console#/endpoints/{billing}"))
        .await;
    browser.text("Billing, read-only", "h1", "Billing").await;
    for button in [
        "#edit-button",
        "#toggle-button",
        "#rotate-button",
        "#test-button",
        "#delete-button",
    ] {
        let element = browser.one("an action", button).await;
        assert!(
            !element.is_enabled().await.expect("enabled"),
            "{button} is disabled"
        );
    }
    let refused = browser
        .script(
            "const c = JSON.parse(sessionStorage.getItem('triggers.console.credential')); \
             return fetch('/api/endpoints/' + arguments[0], {method: 'PATCH', \
               headers: {Authorization: 'Bearer ' + c.token, 'Content-Type': 'application/json'}, \
               body: JSON.stringify({enabled: false})}) \
               .then(async (r) => [r.status, (await r.json()).code])",
            vec![json!(billing)],
        )
        .await;
    assert_eq!(refused, json!([403, "read_only_session"]));
    browser.screenshot("endpoint-read-only").await;

    // Disable Billing, then delete it (after confirming).
    let (_, link) = api.portal_link(&key, false).await;
    browser.goto(&link).await;
    browser.one("signed in again: the events", "#events-table").await;
    browser
        .goto(&format!("{base}/console#/endpoints/{billing}"))
        .await;
    // Edit it: a rate limit, shown once saved.
    browser.click("edit", "#edit-button", "Edit").await;
    browser.text("the edit form", "h1", "Edit Billing").await;
    let rate = browser.one("the rate limit", "#endpoint-rate-limit").await;
    rate.send_keys("50").await.expect("type");
    browser.click("save", "#save-endpoint", "Save changes").await;
    browser
        .text("the new rate limit", "#endpoint-summary", "50 per second")
        .await;
    browser.click("disable", "#toggle-button", "Disable").await;
    browser
        .text("disabled", "#endpoint-summary", "disabled (manual)")
        .await;
    // Deleting asks first; Escape keeps the endpoint, and focus returns to the button.
    browser.click("delete", "#delete-button", "Delete").await;
    browser.one("the question", "dialog#delete-dialog").await;
    assert_eq!(browser.focused().await, "Cancel", "focus starts on Cancel");
    browser.press(Key::Escape).await;
    browser
        .until("the dialog closed", "dialog", |t| t.is_empty())
        .await;
    assert_eq!(browser.focused().await, "delete-button");
    browser.click("delete", "#delete-button", "Delete").await;
    browser.click("confirm", "#delete-confirm", "Delete").await;
    let left = browser
        .until("one endpoint left", "#endpoints-table tbody tr", |t| t.len() == 1)
        .await;
    assert!(left[0].contains("Orders"), "{left:?}");
    let (status, _) = api
        .send(
            reqwest::Method::GET,
            &format!("/api/endpoints/{billing}"),
            &key,
            None,
        )
        .await;
    assert_eq!(status, 404, "Billing is gone");
}
