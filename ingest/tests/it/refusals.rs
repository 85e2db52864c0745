//! Bodies refused in a loop (issue 15 §1: one organisation's stream beside another resending
//! unstorable payloads): past its budget, an organisation's refusals are answered the same, but
//! later; nobody else's are, and its own accepted events are not.

use crate::common::fixtures::{org_with_key, post_event, post_raw};
use crate::common::{TestApp, error_of};
use futures::StreamExt;
use serde_json::json;
use triggers_ingest::refusals::BURST;

const DELAYED: &str = "triggers_refusals_delayed_total";

/// An event whose payload holds a lone surrogate escape: `422`, decided before the database.
const UNSTORABLE: &str = r#"{"type": "poison.lone-surrogate", "payload": {"s": "\ud800"}}"#;

#[tokio::test]
async fn bodies_refused_in_a_loop_are_answered_the_same_but_later_and_only_for_their_organisation() {
    let app = TestApp::spawn().await;
    let (loud, _) = org_with_key(&app.db, "enterprise").await;
    let (quiet, _) = org_with_key(&app.db, "enterprise").await;

    // Three times the burst, 50 at a time: every one is answered 422 validation_failed.
    let sent = 3 * BURST.get() as usize;
    let answers: Vec<_> = futures::stream::iter(0..sent)
        .map(|_| async {
            error_of(post_raw(&app, &loud, Some("application/json"), UNSTORABLE.into()).await).await
        })
        .buffer_unordered(50)
        .collect()
        .await;
    assert_eq!(answers.len(), sent);
    for (status, body) in &answers {
        assert_eq!(status.as_u16(), 422, "{body}");
        assert_eq!(body["code"], "validation_failed", "{body}");
    }
    // The burst went out at once; of the rest, all but what the budget refilled meanwhile (100 a
    // second, over the second or so the delayed ones took) were held back.
    let delayed = app.metric(DELAYED).await;
    assert!(
        (50.0..=(sent - BURST.get() as usize) as f64).contains(&delayed),
        "{delayed} of {sent} delayed"
    );

    // Another organisation's refusal is not held back, nor is the loud one's valid event.
    let (status, _) =
        error_of(post_raw(&app, &quiet, Some("application/json"), UNSTORABLE.into()).await).await;
    assert_eq!(status.as_u16(), 422);
    let accepted = post_event(
        &app,
        &loud,
        &json!({"type": "order.created", "payload": {"n": 1}}),
    )
    .await;
    assert_eq!(accepted.status().as_u16(), 202);
    assert_eq!(app.metric(DELAYED).await, delayed);
    app.stop().await;
}

#[tokio::test]
async fn a_large_refused_body_spends_more_of_the_budget_than_a_small_one() {
    let app = TestApp::spawn().await;
    let (org, _) = org_with_key(&app.db, "enterprise").await;
    // A 200 KB payload refused for its lone surrogate: 13 units of the budget's 100, so only
    // the first 7 or 8 of 20 are answered at once (20 small ones would all be).
    let large = format!(
        r#"{{"type": "poison.lone-surrogate", "payload": {{"s": "\ud800", "pad": "{}"}}}}"#,
        "x".repeat(200_000)
    );
    for _ in 0..20 {
        let (status, body) =
            error_of(post_raw(&app, &org, Some("application/json"), large.clone().into_bytes()).await).await;
        assert_eq!(status.as_u16(), 422, "{body}");
    }
    let delayed = app.metric(DELAYED).await;
    assert!(
        (5.0..=13.0).contains(&delayed),
        "{delayed} of 20 large refusals delayed"
    );
    app.stop().await;
}
