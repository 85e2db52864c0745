use std::collections::BTreeMap;

use super::*;

/// `T` from its declared defaults, the given flags and a database URL.
fn defaults_with<T: Args + FromArgMatches>(flags: &[&str]) -> anyhow::Result<T> {
    let mut args = vec!["--database-url", "postgres://triggers:hunter2@db/triggers"];
    args.extend_from_slice(flags);
    parse(Source::Defaults, &args)
}

#[test]
fn the_declared_defaults_are_valid_and_retry_five_times() {
    let worker: WorkerConfig = defaults_with(&[]).expect("worker defaults");
    assert_eq!(
        worker.retry_schedule,
        [5, 30, 120, 600, 2700].map(Duration::from_secs).to_vec()
    );
    assert_eq!(
        worker.drain_timeout(),
        Duration::from_secs(20),
        "delivery timeout + 10 s"
    );
    assert_eq!(worker.recovery_rate, 1000);
    let ingest: IngestConfig = defaults_with(&[]).expect("ingest defaults");
    assert_eq!(ingest.addr, SocketAddr::from(([127, 0, 0, 1], 8080)));
    assert!(ingest.admin_token.is_none() && ingest.public_url.is_none());
    assert!(!ingest.common.allow_private_webhooks);
    assert_eq!(ingest.request_bytes_budget, 64 * 1024 * 1024);
}

/// Each of `cases` (flags, then how the error starts) is refused for `T`, in those words.
fn refused<T: Args + FromArgMatches + std::fmt::Debug>(cases: &[([&str; 2], &str)]) {
    for (flags, expected) in cases {
        let error = defaults_with::<T>(flags).expect_err(expected);
        assert!(error.to_string().starts_with(expected), "{error:#}");
    }
}

#[test]
fn a_value_out_of_its_range_is_refused_naming_the_variable() {
    refused::<WorkerConfig>(&[
        (
            ["--recovery-rate", "0"],
            "TRIGGERS_RECOVERY_RATE is invalid (`0`): must be from 1 to 100000",
        ),
        (
            ["--recovery-rate", "100001"],
            "TRIGGERS_RECOVERY_RATE is invalid (`100001`): must be from 1 to 100000",
        ),
        (
            ["--recovery-batch", "10001"],
            "TRIGGERS_RECOVERY_BATCH is invalid (`10001`): must be from 1 to 10000",
        ),
        (
            ["--rate-limit-window-retention-secs", "119"],
            "TRIGGERS_RATE_LIMIT_WINDOW_RETENTION_SECS is invalid (`119`): must be at least 120",
        ),
        (
            ["--worker-concurrency", "0"],
            "TRIGGERS_WORKER_CONCURRENCY is invalid (`0`): must be at least 1",
        ),
        (
            ["--db-pool-size", "many"],
            "TRIGGERS_DB_POOL_SIZE is invalid (`many`): invalid digit found in string",
        ),
        (
            ["--retry-schedule", "5s,3x"],
            "TRIGGERS_RETRY_SCHEDULE is invalid (`5s,3x`)",
        ),
        (
            ["--log-format", "xml"],
            "TRIGGERS_LOG_FORMAT is invalid (`xml`): expected one of json, pretty",
        ),
        (
            ["--allow-private-webhooks", "maybe"],
            "TRIGGERS_ALLOW_PRIVATE_WEBHOOKS is invalid (`maybe`): expected true or false",
        ),
    ]);
    refused::<IngestConfig>(&[
        (
            ["--max-endpoints-per-org", "0"],
            "TRIGGERS_MAX_ENDPOINTS_PER_ORG is invalid (`0`): must be at least 1",
        ),
        (
            ["--public-url", "https://example.com/triggers"],
            "TRIGGERS_PUBLIC_URL is invalid (`https://example.com/triggers`): must be an origin",
        ),
    ]);
    let worker: WorkerConfig = defaults_with(&["--recovery-rate", "100000", "--retry-schedule", ""])
        .expect("the bounds themselves are valid");
    assert_eq!(worker.recovery_rate, 100_000);
    assert!(
        worker.retry_schedule.is_empty(),
        "an empty schedule is no retries"
    );
}

#[test]
fn a_missing_database_url_is_named() {
    let error = parse::<CommonConfig>(Source::Defaults, &[]).expect_err("required");
    assert!(
        error.to_string().starts_with("DATABASE_URL is not set"),
        "{error}"
    );
}

#[test]
fn durations_have_one_grammar() {
    for (text, expected) in [
        ("500ms", Duration::from_millis(500)),
        ("5s", Duration::from_secs(5)),
        ("2m", Duration::from_secs(120)),
        ("2min", Duration::from_secs(120)),
        ("1.5s", Duration::from_millis(1500)),
        ("1h 30m", Duration::from_secs(5400)),
        ("45", Duration::from_secs(45)),
    ] {
        assert_eq!(parse_duration(text).expect(text), expected, "{text}");
    }
    for bad in ["", "s", "3x", "10 parsecs", "-1s"] {
        assert!(parse_duration(bad).is_err(), "{bad}");
    }
    assert!(parse_schedule("5s,3x").is_err());
}

#[test]
fn a_public_url_is_an_origin() {
    for good in [
        "https://triggers.example.com",
        "https://triggers.example.com/",
        "http://10.0.0.5:8080",
    ] {
        let url = parse_public_url(good).expect(good);
        assert_eq!(url.as_str().trim_end_matches('/'), good.trim_end_matches('/'));
    }
    for bad in [
        "https://example.com/triggers",
        "ftp://example.com",
        "https://u:p@example.com",
        "https://example.com/?q=1",
        "https://example.com/#x",
        "example.com",
    ] {
        assert!(parse_public_url(bad).is_err(), "{bad}");
    }
}

#[test]
fn secrets_do_not_print() {
    let config: IngestConfig = defaults_with(&["--admin-token", "let-me-in-0123456789"]).expect("valid");
    let printed = format!("{config:?}");
    assert!(!printed.contains("hunter2"), "{printed}");
    assert!(!printed.contains("let-me-in"), "{printed}");
    assert_eq!(
        config.admin_token.as_ref().map(ExposeSecret::expose_secret),
        Some("let-me-in-0123456789")
    );
}

/// Each variable of both binaries with its declared default (`None`: no default).
fn declared() -> BTreeMap<String, Option<String>> {
    let mut all = BTreeMap::new();
    for command in [declarations::<IngestConfig>(), declarations::<WorkerConfig>()] {
        for arg in command.get_arguments() {
            let Some(name) = arg.get_env() else { continue };
            let defaults: Vec<String> = arg
                .get_default_values()
                .iter()
                .map(|v| v.to_string_lossy().into_owned())
                .collect();
            let default = (!defaults.is_empty()).then(|| defaults.join(","));
            let previous = all.insert(name.to_string_lossy().into_owned(), default.clone());
            assert!(
                previous.is_none_or(|p| p == default),
                "{name:?} is declared twice with different defaults"
            );
        }
    }
    all
}

/// The rows of the README's configuration table: variable and default column.
fn readme_rows() -> BTreeMap<String, String> {
    let readme = include_str!("../../../README.md");
    let table = readme
        .split("\n## Configuration\n")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("the README has a Configuration section");
    table
        .lines()
        .filter_map(|line| {
            let (name, rest) = line.strip_prefix("| `")?.split_once("` | ")?;
            Some((name.to_owned(), rest.split(" | ").next()?.to_owned()))
        })
        .collect()
}

#[test]
fn the_readme_lists_every_setting_with_its_declared_default() {
    let declared = declared();
    let rows = readme_rows();
    assert!(declared.len() > 30, "{declared:?}");
    for (name, default) in &declared {
        let Some(cell) = rows.get(name) else {
            panic!("README.md's Configuration table has no row for {name}");
        };
        if let Some(default) = default {
            assert!(
                cell.starts_with(&format!("`{default}`")),
                "README.md says {name} defaults to {cell}; it is declared with `{default}`"
            );
        }
    }
    for name in rows.keys() {
        assert!(
            declared.contains_key(name) || name == "RUST_LOG",
            "README.md's Configuration table lists {name}, which no binary reads"
        );
    }
}
