//! Payloads against the real database: what Postgres' jsonb cannot store is refused before it
//! gets there (`422 validation_failed` on `payload`), the batcher's backstop answers what still
//! slips through with `422 payload_not_storable` without failing other events, and any valid
//! JSON payload is either stored and read back as the same value or refused with a `4xx`, never
//! a `500` (issue 15).

use std::{
    cell::Cell,
    collections::{BTreeMap, BTreeSet},
};

use crate::common::fixtures::{count_events, org_with_key, poison_events, post_event, post_raw};
use crate::common::{TestApp, error_of};
use proptest::{
    prelude::*,
    test_runner::{TestCaseError, TestRunner},
};
use serde::Deserialize;
use serde_json::{Value, json, value::RawValue};
use sqlx::PgPool;
use triggers_shared::{models::Payload, testing::TestDb};

/// A body of `POST /api/events` around a payload's JSON text.
fn event_body(payload: &str) -> String {
    format!(r#"{{"type": "payload.test", "payload": {payload}}}"#)
}

#[tokio::test]
async fn the_five_payloads_of_issue_15_are_refused_with_422_naming_the_payload() {
    let app = TestApp::spawn().await;
    let (key, _) = org_with_key(&app.db, "enterprise").await;
    let five = [
        (
            "objects nested 20,000 deep",
            format!("{}1{}", r#"{"a":"#.repeat(20_000), "}".repeat(20_000)),
            "64 levels",
        ),
        (
            "arrays nested 20,000 deep",
            format!(r#"{{"a":{}{}}}"#, "[".repeat(20_000), "]".repeat(20_000)),
            "64 levels",
        ),
        (
            "a lone surrogate escape",
            r#"{"s":"\ud800"}"#.to_owned(),
            "lone UTF-16 surrogate",
        ),
        ("1e1000000", r#"{"n":1e1000000}"#.to_owned(), "Postgres numeric"),
        (
            "a number of 200,000 digits",
            format!(r#"{{"n":{}}}"#, "9".repeat(200_000)),
            "Postgres numeric",
        ),
    ];
    for (what, payload, message) in five {
        assert!(payload.len() < 256 * 1024, "{what} is under the size limit");
        let res = post_raw(
            &app,
            &key,
            Some("application/json"),
            event_body(&payload).into_bytes(),
        )
        .await;
        let (status, body) = error_of(res).await;
        assert_eq!(
            (status.as_u16(), &body["code"]),
            (422, &json!("validation_failed")),
            "{what}: {body}"
        );
        let details = body["details"].as_array().expect("details");
        assert_eq!(details.len(), 1, "{what}: {body}");
        assert_eq!(details[0]["field"], "payload", "{what}: {body}");
        let said = details[0]["message"].as_str().expect("message");
        assert!(said.contains(message), "{what}: {said}");
    }
    let stored = count_events(&app.db).await;
    assert_eq!(stored, 0);
}

#[tokio::test]
async fn events_postgres_refuses_among_concurrent_requests_get_422_and_the_others_are_stored() {
    let app = TestApp::spawn().await;
    let (key, _) = org_with_key(&app.db, "enterprise").await;
    poison_events(&app.db).await;
    let unstorable = app.metric("triggers_events_unstorable_total").await;
    let rejected = app
        .metric(r#"triggers_events_rejected_total{reason="payload_not_storable"}"#)
        .await;
    let poison = [(7, "22P02"), (23, "54001")];
    let bodies: Vec<Value> = (0..40)
        .map(|i| match poison.iter().find(|(at, _)| *at == i) {
            Some((_, code)) => json!({"type": "t", "payload": {"poison": code}}),
            None => json!({"type": "t", "payload": {"n": i}}),
        })
        .collect();
    // How many statements this costs depends on how the requests happen to be grouped:
    // tests/batcher.rs counts them for one batch of known size.
    let answers = futures::future::join_all(bodies.iter().map(|b| post_event(&app, &key, b))).await;

    let mut accepted = BTreeSet::new();
    for (i, res) in answers.into_iter().enumerate() {
        let (status, body) = error_of(res).await;
        if poison.iter().any(|(at, _)| *at == i) {
            assert_eq!(status, 422, "{i}: {body}");
            assert_eq!(body["code"], "payload_not_storable", "{i}: {body}");
        } else {
            assert_eq!(status, 202, "{i}: {body}");
            accepted.insert(i as i64);
        }
    }
    let stored: BTreeSet<i64> = sqlx::query_scalar("SELECT (payload ->> 'n')::bigint FROM events")
        .fetch_all(&app.db)
        .await
        .expect("events")
        .into_iter()
        .collect();
    assert_eq!(stored, accepted);
    assert_eq!(accepted.len(), 38);
    assert_eq!(
        app.metric("triggers_events_unstorable_total").await - unstorable,
        2.0
    );
    assert_eq!(
        app.metric(r#"triggers_events_rejected_total{reason="payload_not_storable"}"#)
            .await
            - rejected,
        2.0
    );
}

/// A multi-threaded runtime for the property tests, whose runner is synchronous.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Numbers around every edge of Postgres `numeric`: 131,072 digits before the point, 16,383
/// after it, exponents that move the point across either edge, and the exponent's own limit.
fn edge_number() -> impl Strategy<Value = String> {
    let int = prop_oneof![
        Just("0".to_owned()),
        "[1-9][0-9]{0,3}",
        (131_068usize..131_076).prop_map(|n| format!("1{}", "0".repeat(n - 1))),
    ];
    let frac = prop_oneof![
        Just(String::new()),
        "[0-9]{1,4}",
        (16_379usize..16_388).prop_map(|n| format!("{}1", "0".repeat(n - 1))),
        (16_379usize..16_388).prop_map(|n| "0".repeat(n)),
    ];
    let exponent = prop_oneof![
        Just(None),
        (-5i64..5).prop_map(Some),
        (131_066i64..131_076).prop_map(Some),
        (-16_390i64..-16_376).prop_map(Some),
        (1_073_741_819i64..1_073_741_826).prop_map(Some),
        (-1_073_741_826i64..-1_073_741_819).prop_map(Some),
        Just(Some(i64::MAX)),
    ];
    (any::<bool>(), int, frac, exponent, any::<(bool, bool, bool)>()).prop_map(
        |(negative, int, frac, exponent, (upper, plus, zeros))| {
            let mut n = format!("{}{int}", if negative { "-" } else { "" });
            if !frac.is_empty() {
                n = format!("{n}.{frac}");
            }
            if let Some(e) = exponent {
                let sign = if e < 0 {
                    "-"
                } else if plus {
                    "+"
                } else {
                    ""
                };
                let zeros = if zeros { "000" } else { "" };
                n = format!(
                    "{n}{}{sign}{zeros}{}",
                    if upper { "E" } else { "e" },
                    e.unsigned_abs()
                );
            }
            n
        },
    )
}

/// One piece of a JSON string literal: text, astral characters, every kind of escape and
/// surrogate pairs as escapes; when `refusable`, also surrogate escapes alone and `\u0000`.
fn string_piece(refusable: bool) -> impl Strategy<Value = String> {
    let refused = if refusable { 1 } else { 0 };
    prop_oneof![
        4 => "[a-zA-Z0-9 ]{1,8}",
        1 => Just("é".to_owned()),
        1 => Just("😀".to_owned()),
        1 => Just("日本".to_owned()),
        2 => prop::sample::select(vec![r"\n", r#"\""#, r"\\", r"\/", r"\t", r"\b\f\r"]).prop_map(str::to_owned),
        2 => (1u16..0xD800).prop_map(|u| format!("\\u{u:04x}")),
        1 => (0xE000u32..=0xFFFF).prop_map(|u| format!("\\u{u:04X}")),
        3 => (0xD800u16..0xDC00, 0xDC00u16..0xE000).prop_map(|(h, l)| format!("\\u{h:04x}\\u{l:04X}")),
        refused => (0xD800u16..0xE000).prop_map(|u| format!("\\u{u:04x}")),
        refused => Just(r"\u0000".to_owned()),
    ]
}

fn string_literal(refusable: bool) -> impl Strategy<Value = String> {
    prop::collection::vec(string_piece(refusable), 0..5).prop_map(|pieces| format!("\"{}\"", pieces.concat()))
}

/// Does Postgres store this JSON text as jsonb? Refusals must be data exceptions (class 22).
async fn postgres_stores(pool: &PgPool, text: &str) -> Result<bool, TestCaseError> {
    match sqlx::query("SELECT $1::jsonb").bind(text).execute(pool).await {
        Ok(_) => Ok(true),
        Err(e)
            if e.as_database_error()
                .and_then(|d| d.code())
                .is_some_and(|c| c.starts_with("22")) =>
        {
            Ok(false)
        }
        Err(e) => Err(TestCaseError::fail(format!("{e}"))),
    }
}

#[test]
fn the_payload_checks_refuse_exactly_the_numbers_and_escapes_postgres_refuses() {
    let rt = runtime();
    let db = rt.block_on(TestDb::new()).expect("db");
    let (stored, refused) = (Cell::new(0), Cell::new(0));
    let values = prop_oneof![edge_number(), string_literal(true)];
    let mut runner = TestRunner::new(ProptestConfig::with_cases(1000));
    let result = runner.run(&values, |value| {
        let text = format!(r#"{{"v": {value}}}"#);
        let raw = RawValue::from_string(text.clone()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let ours = Payload::parse(raw).is_ok();
        let theirs = rt.block_on(postgres_stores(&db.pool, &text))?;
        let shown = &text[..text.len().min(80)];
        prop_assert_eq!(
            ours,
            theirs,
            "Payload::parse and Postgres disagree on {} ({} bytes)",
            shown,
            text.len()
        );
        let count = if theirs { &stored } else { &refused };
        count.set(count.get() + 1);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    // Both verdicts were tried, often enough to mean something.
    assert!(
        stored.get() > 100 && refused.get() > 100,
        "{stored:?} stored, {refused:?} refused"
    );
}

/// Any valid JSON value as text, with the spellings clients use: escapes of every kind, astral
/// characters, numbers at numeric's edges (huge exponents, long mantissas, `-0`, `1e-400`) and
/// nesting past the limit; lone surrogate escapes and `\u0000` only when `refusable`.
fn json_value(refusable: bool) -> impl Strategy<Value = String> {
    let number = prop_oneof![
        4 => any::<i64>().prop_map(|n| n.to_string()),
        2 => any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| format!("{f:e}")),
        2 => prop::sample::select(vec!["-0", "-0.0", "0e0", "1e-400", "1E+400", "-1.0e-16383", "1e131071", "1e131072", "0.000e5"]).prop_map(str::to_owned),
        1 => (1usize..20_000, any::<bool>()).prop_map(|(n, point)| {
            let digits: String = "1234567890".chars().cycle().take(n).collect();
            if point { format!("0.{digits}") } else { format!("9{digits}") }
        }),
        1 => edge_number(),
    ];
    let leaf = prop_oneof![
        1 => prop::sample::select(vec!["null", "true", "false"]).prop_map(str::to_owned),
        3 => number,
        3 => string_literal(refusable),
    ];
    let separator = prop::sample::select(vec![",", ", ", ",\n  "]);
    leaf.prop_recursive(4, 32, 5, move |inner| {
        prop_oneof![
            (prop::collection::vec(inner.clone(), 0..5), separator.clone())
                .prop_map(|(items, sep)| format!("[{}]", items.join(sep))),
            (
                prop::collection::vec((string_literal(refusable), inner.clone()), 0..5),
                separator.clone()
            )
                .prop_map(|(members, sep)| object(&members, sep)),
            // A chain of objects and arrays, to past the depth limit.
            (1usize..70, inner).prop_map(|(depth, leaf)| {
                let open: String = (0..depth)
                    .map(|d| if d % 2 == 0 { "[" } else { r#"{"k":"# })
                    .collect();
                let close: String = (0..depth)
                    .rev()
                    .map(|d| if d % 2 == 0 { "]" } else { "}" })
                    .collect();
                format!("{open}{leaf}{close}")
            }),
        ]
    })
}

fn object(members: &[(String, String)], separator: &str) -> String {
    let members: Vec<String> = members.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    format!("{{{}}}", members.join(separator))
}

/// A payload: an object of generated members (keys may repeat: jsonb keeps the last); one in
/// four may hold lone surrogate escapes and `\u0000` (in a payload of many strings, nearly
/// every one would otherwise).
fn payload() -> impl Strategy<Value = String> {
    let members = |refusable| prop::collection::vec((string_literal(refusable), json_value(refusable)), 0..6);
    prop_oneof![3 => members(false), 1 => members(true)].prop_map(|members| object(&members, ", "))
}

/// A JSON value compared as a value: numbers by their decimal value (Postgres prints `1e2` as
/// `100` and `-0` as `0`; serde_json would round or refuse them), strings decoded, objects by
/// key (the last of a repeated key).
#[derive(Debug, PartialEq)]
enum Canonical {
    Null,
    Bool(bool),
    /// Sign, significant digits and the power of ten of the first; zero has no digits.
    Number(bool, String, i64),
    String(String),
    Array(Vec<Canonical>),
    Object(BTreeMap<String, Canonical>),
}

fn canonical(raw: &RawValue) -> Result<Canonical, String> {
    let text = raw.get();
    let err = |e: serde_json::Error| e.to_string();
    Ok(match text.as_bytes().first() {
        Some(b'{') => Canonical::Object(
            serde_json::from_str::<BTreeMap<String, Box<RawValue>>>(text)
                .map_err(err)?
                .into_iter()
                .map(|(k, v)| Ok((k, canonical(&v)?)))
                .collect::<Result<_, String>>()?,
        ),
        Some(b'[') => Canonical::Array(
            serde_json::from_str::<Vec<Box<RawValue>>>(text)
                .map_err(err)?
                .iter()
                .map(|v| canonical(v))
                .collect::<Result<_, _>>()?,
        ),
        Some(b'"') => Canonical::String(serde_json::from_str(text).map_err(err)?),
        Some(b't') => Canonical::Bool(true),
        Some(b'f') => Canonical::Bool(false),
        Some(b'n') => Canonical::Null,
        _ => decimal(text)?,
    })
}

fn decimal(text: &str) -> Result<Canonical, String> {
    let negative = text.starts_with('-');
    let (mantissa, exponent) = match text.trim_start_matches('-').split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i64>().map_err(|e| format!("{text}: {e}"))?),
        None => (text.trim_start_matches('-'), 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = format!("{int}{frac}");
    let Some(first) = digits.find(|c| c != '0') else {
        return Ok(Canonical::Number(false, String::new(), 0));
    };
    let power = int.len() as i64 - 1 - first as i64 + exponent;
    Ok(Canonical::Number(
        negative,
        digits[first..].trim_end_matches('0').to_owned(),
        power,
    ))
}

#[derive(Deserialize)]
struct StoredEvent {
    payload: Box<RawValue>,
}

/// POST a payload: `Ok(true)` when stored and read back as the same value, `Ok(false)` when
/// refused for the payload with a `4xx`; a failure for anything else.
async fn round_trip(app: &TestApp, key: &str, payload: &str) -> Result<bool, TestCaseError> {
    let fail =
        |what: String| TestCaseError::fail(format!("{what} for {}", &payload[..payload.len().min(200)]));
    let res = post_raw(
        app,
        key,
        Some("application/json"),
        event_body(payload).into_bytes(),
    )
    .await;
    let status = res.status();
    let body: Value = res.json().await.map_err(|e| fail(format!("{status}: {e}")))?;
    match status.as_u16() {
        202 => {}
        413 if body["code"] == "payload_too_large" => return Ok(false),
        422 if body["code"] == "validation_failed" && body["details"][0]["field"] == "payload" => {
            return Ok(false);
        }
        _ => return Err(fail(format!("{status} {body}"))),
    }
    let id = body["id"]
        .as_str()
        .ok_or_else(|| fail(format!("no id in {body}")))?;
    let res = app
        .client
        .get(app.url(&format!("/api/events/{id}")))
        .header("X-API-Key", key)
        .send()
        .await
        .map_err(|e| fail(e.to_string()))?;
    let stored: StoredEvent = serde_json::from_str(&res.text().await.map_err(|e| fail(e.to_string()))?)
        .map_err(|e| fail(e.to_string()))?;
    let sent = RawValue::from_string(payload.to_owned()).map_err(|e| fail(e.to_string()))?;
    let (sent, got) = (
        canonical(&sent).map_err(fail)?,
        canonical(&stored.payload).map_err(fail)?,
    );
    if sent != got {
        return Err(fail(format!("read back as {}", stored.payload.get())));
    }
    Ok(true)
}

#[test]
fn any_valid_json_payload_is_stored_and_read_back_as_the_same_value_or_refused_with_a_4xx() {
    let rt = runtime();
    let app = rt.block_on(TestApp::spawn());
    let (key, _) = rt.block_on(org_with_key(&app.db, "enterprise"));
    let (stored, refused) = (Cell::new(0), Cell::new(0));
    let mut runner = TestRunner::new(ProptestConfig::with_cases(500));
    let result = runner.run(&payload(), |payload| {
        let count = if rt.block_on(round_trip(&app, &key, &payload))? {
            &stored
        } else {
            &refused
        };
        count.set(count.get() + 1);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    assert!(
        stored.get() > 50 && refused.get() > 50,
        "{stored:?} stored, {refused:?} refused"
    );
    rt.block_on(app.stop());
}
