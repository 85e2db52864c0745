//! The human-readable reference (`docs/API.md`) and the OpenAPI document the service serves
//! agree on the routes, both ways: the reference's route table is exactly the document's
//! operations, every route the reference's text names is in that table or among the planned
//! routes, and no planned route is served yet.

use std::collections::BTreeSet;

use crate::common::TestApp;
use serde_json::Value;

const REFERENCE: &str = include_str!("../../../docs/API.md");

/// Served, but the document and its page rather than operations of the document.
const NOT_OPERATIONS: [&str; 2] = ["GET /openapi.json", "GET /docs"];

type Routes = BTreeSet<String>;

/// The `| `METHOD` | `/path` | ... |` rows of the table that follows `heading`.
fn table_after(text: &str, heading: &str) -> Routes {
    let start = text
        .find(heading)
        .unwrap_or_else(|| panic!("docs/API.md has no `{heading}`"));
    text[start..]
        .lines()
        .skip(1)
        .skip_while(|line| !line.starts_with('|'))
        .take_while(|line| line.starts_with('|'))
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let method = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
            let path = cells.get(2)?.strip_prefix('`')?.strip_suffix('`')?;
            Some(format!("{method} {path}"))
        })
        .collect()
}

/// Every `` `METHOD /path...` `` the text names (a query string or what follows a space dropped;
/// the two may be split across lines).
fn named_routes(text: &str) -> Routes {
    let mut named = Routes::new();
    for quoted in text.split('`').skip(1).step_by(2) {
        let mut words = quoted.split_whitespace();
        let (Some(method), Some(path)) = (words.next(), words.next()) else {
            continue;
        };
        if ["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&method) && path.starts_with('/') {
            let path = path.split('?').next().unwrap_or(path);
            named.insert(format!("{method} {path}"));
        }
    }
    named
}

fn document_operations(doc: &Value) -> Routes {
    let paths = doc["paths"].as_object().expect("paths");
    paths
        .iter()
        .flat_map(|(path, item)| {
            let methods = item.as_object().expect("path item").keys();
            methods.map(move |method| format!("{} {path}", method.to_uppercase()))
        })
        .collect()
}

fn difference(a: &Routes, b: &Routes) -> Vec<String> {
    a.difference(b).cloned().collect()
}

/// What is wrong between the reference and the document's operations; empty when they agree.
fn drift(reference: &str, operations: &Routes) -> Vec<String> {
    let table = table_after(reference, "## Routes");
    let planned = table_after(reference, "## Planned");
    let mut problems = Vec::new();
    for route in difference(operations, &table) {
        problems.push(if planned.contains(&route) {
            format!("{route} is served: move it from Planned to the table of docs/API.md")
        } else {
            format!("{route} is served and documented in OpenAPI but missing from the table of docs/API.md")
        });
    }
    for route in difference(&table, operations) {
        problems.push(format!(
            "{route} is in the table of docs/API.md but not in the OpenAPI document"
        ));
    }
    let known: Routes = table
        .iter()
        .chain(&planned)
        .cloned()
        .chain(NOT_OPERATIONS.map(String::from))
        .collect();
    for route in difference(&named_routes(reference), &known) {
        problems.push(format!(
            "docs/API.md names {route}, which is neither in its table nor planned"
        ));
    }
    problems
}

#[tokio::test]
async fn the_reference_and_the_openapi_document_list_the_same_routes() {
    let app = TestApp::spawn().await;
    let res = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 200);
    let doc: Value = res.json().await.expect("json");
    let operations = document_operations(&doc);
    assert!(operations.len() >= 24, "{operations:?}");
    let problems = drift(REFERENCE, &operations);
    assert!(
        problems.is_empty(),
        "docs/API.md and /openapi.json disagree:\n{}",
        problems.join("\n")
    );
    // The page and the document are served, as the reference says.
    for route in NOT_OPERATIONS {
        let path = route.trim_start_matches("GET ");
        let res = app.client.get(app.url(path)).send().await.expect("request");
        assert!(
            res.status().is_success() || res.status().is_redirection(),
            "{route}: {}",
            res.status()
        );
    }
}

#[test]
fn drift_either_way_is_reported() {
    let reference = "## Routes\n\n| method | path | what |\n|---|---|---|\n| `GET` | `/a` | a |\n| `POST` | `/b` | b |\n\n\
                     Call `GET /a?x=1` or `DELETE\n/c`.\n\n## Planned\n\n| method | path | what |\n|---|---|---|\n| `PUT` | `/d` | d |\n";
    let served = |routes: &[&str]| routes.iter().map(|r| (*r).to_owned()).collect::<Routes>();
    assert_eq!(
        drift(reference, &served(&["GET /a", "POST /b", "PATCH /e", "PUT /d"])),
        [
            "PATCH /e is served and documented in OpenAPI but missing from the table of docs/API.md",
            "PUT /d is served: move it from Planned to the table of docs/API.md",
            "docs/API.md names DELETE /c, which is neither in its table nor planned",
        ]
    );
    assert_eq!(
        drift(reference, &served(&["GET /a"])),
        [
            "POST /b is in the table of docs/API.md but not in the OpenAPI document",
            "docs/API.md names DELETE /c, which is neither in its table nor planned",
        ]
    );
}

#[test]
fn the_reference_table_is_read_as_written() {
    let table = table_after(REFERENCE, "## Routes");
    assert!(table.contains("POST /api/events") && table.contains("GET /api/endpoints/{id}/deliveries"));
    let named = named_routes(REFERENCE);
    assert!(
        named.contains("PATCH /api/endpoints/{id}"),
        "a route split across lines"
    );
    assert!(named.contains("GET /api/inbox"), "a route with its query string");
}
