//! Test support: a fresh, migrated database per test, cloned from a template database that is
//! built once per migration set (so a test pays ~50 ms, not a full migration run).
//!
//! `DATABASE_URL` points at a server where the role may create databases (the README's test
//! command provisions one). Test databases are named `triggers_test_<uuid>`; the test command
//! drops them all when the run ends, and leftovers of an interrupted run before it starts.
//!
//! Compiled only with the `testing` feature, which only the crates' dev-dependencies enable.

use std::hash::{Hash, Hasher};

use anyhow::Context;
use sqlx::{Connection, Executor, PgConnection, PgPool, postgres::PgConnectOptions};

use crate::{config::CommonConfig, db};

/// A migrated database of its own, with a pool and its URL (to hand to spawned processes).
pub struct TestDb {
    pub name: String,
    pub url: String,
    pub pool: PgPool,
    admin_url: String,
}

impl TestDb {
    /// Create a fresh migrated database.
    pub async fn new() -> anyhow::Result<Self> {
        let base = std::env::var("DATABASE_URL")
            .context("DATABASE_URL is not set: run the tests through deploy/local/test.sh")?;
        let base_opts: PgConnectOptions = base.parse().context("DATABASE_URL")?;
        let mut admin = PgConnection::connect_with(&base_opts.clone().database("postgres"))
            .await
            .context("connecting to the test server")?;
        let template = ensure_template(&mut admin, &base_opts).await?;
        let name = format!("triggers_test_{}", uuid::Uuid::new_v4().simple());
        admin
            .execute(sqlx::AssertSqlSafe(format!(
                r#"CREATE DATABASE "{name}" TEMPLATE "{template}""#
            )))
            .await
            .with_context(|| format!("creating {name}"))?;
        let url = with_database(&base, &name);
        let pool = db::pool(&CommonConfig::for_database(url.clone()))?;
        Ok(Self {
            name,
            url,
            pool,
            admin_url: with_database(&base, "postgres"),
        })
    }

    /// A fresh database with no schema at all (to build an older schema in it, say).
    pub async fn empty() -> anyhow::Result<Self> {
        let base = std::env::var("DATABASE_URL")
            .context("DATABASE_URL is not set: run the tests through deploy/local/test.sh")?;
        let base_opts: PgConnectOptions = base.parse().context("DATABASE_URL")?;
        let mut admin = PgConnection::connect_with(&base_opts.clone().database("postgres"))
            .await
            .context("connecting to the test server")?;
        let name = format!("triggers_test_{}", uuid::Uuid::new_v4().simple());
        admin
            .execute(sqlx::AssertSqlSafe(format!(r#"CREATE DATABASE "{name}""#)))
            .await
            .with_context(|| format!("creating {name}"))?;
        let url = with_database(&base, &name);
        let pool = db::pool(&CommonConfig::for_database(url.clone()))?;
        Ok(Self {
            name,
            url,
            pool,
            admin_url: with_database(&base, "postgres"),
        })
    }

    /// Simulate an outage: refuse new connections to this database and end the open ones.
    pub async fn cut_off(&self) -> anyhow::Result<()> {
        self.set_allow_connections(false).await?;
        let mut admin = PgConnection::connect(&self.admin_url).await?;
        sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
            .bind(&self.name)
            .execute(&mut admin)
            .await?;
        Ok(())
    }

    /// End an outage started by [`TestDb::cut_off`].
    pub async fn restore(&self) -> anyhow::Result<()> {
        self.set_allow_connections(true).await
    }

    async fn set_allow_connections(&self, allow: bool) -> anyhow::Result<()> {
        let mut admin = PgConnection::connect(&self.admin_url).await?;
        admin
            .execute(sqlx::AssertSqlSafe(format!(
                r#"ALTER DATABASE "{}" WITH ALLOW_CONNECTIONS {allow}"#,
                self.name
            )))
            .await?;
        Ok(())
    }
}

/// Build the template database for the current migrations once (under an advisory lock, as
/// tests run in parallel processes) and return its name.
async fn ensure_template(admin: &mut PgConnection, base: &PgConnectOptions) -> anyhow::Result<String> {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for m in db::MIGRATOR
        .iter()
        .chain(apalis_postgres::PostgresStorage::migrations().iter())
    {
        m.version.hash(&mut hasher);
        m.checksum.hash(&mut hasher);
    }
    let digest = hasher.finish();
    let template = format!("triggers_template_{digest:016x}");
    let lock_key = (digest >> 1) as i64;
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(lock_key)
        .execute(&mut *admin)
        .await?;
    let result = async {
        let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&template)
            .fetch_one(&mut *admin)
            .await?;
        if !exists {
            let building = format!("{template}_building");
            admin
                .execute(sqlx::AssertSqlSafe(format!(
                    r#"DROP DATABASE IF EXISTS "{building}""#
                )))
                .await?;
            admin
                .execute(sqlx::AssertSqlSafe(format!(r#"CREATE DATABASE "{building}""#)))
                .await?;
            {
                let pool = PgPool::connect_with(base.clone().database(&building)).await?;
                db::migrate(&pool).await.context("migrating the template")?;
                pool.close().await;
            }
            admin
                .execute(sqlx::AssertSqlSafe(format!(
                    r#"ALTER DATABASE "{building}" RENAME TO "{template}""#
                )))
                .await?;
        }
        anyhow::Ok(())
    }
    .await;
    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(lock_key)
        .execute(&mut *admin)
        .await?;
    result.map(|()| template)
}

/// `url` with its database name replaced.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let prefix = match base.rfind('/') {
        Some(i) if i > "postgres://".len() => &base[..i],
        _ => base,
    };
    match query {
        Some(q) => format!("{prefix}/{name}?{q}"),
        None => format!("{prefix}/{name}"),
    }
}

/// Store events of `org` as ingest does: routed to the organisation's endpoints as they are
/// now, with their deliveries and first jobs, through the ingest statement itself
/// (`db::queue::event_batch`). `events` are `(dedup_id, payload)`; returns the ids of the
/// events, in their order.
pub async fn store_events(
    pool: &PgPool,
    org: uuid::Uuid,
    event_type: &str,
    events: &[(Option<String>, serde_json::Value)],
) -> anyhow::Result<Vec<uuid::Uuid>> {
    use db::queue::event_batch::{NewEvents, RowFate, insert_batch};

    let mut conn = pool.acquire().await?;
    let routes = db::routing::load(&mut conn, org)
        .await?
        .context("no such organisation")?;
    let fanout = routes.fanout(event_type);
    let texts: Vec<String> = events.iter().map(|(_, payload)| payload.to_string()).collect();
    let mut rows = NewEvents::default();
    for (i, text) in texts.iter().enumerate() {
        rows.ids.push(uuid::Uuid::now_v7());
        rows.organization_ids.push(org);
        rows.types.push(event_type);
        rows.dedup_ids.push(events[i].0.as_deref());
        rows.payloads.push(text);
        rows.endpoints_versions.push(fanout.version);
        rows.deliveries.extend(
            fanout
                .deliveries
                .iter()
                .map(|&(endpoint, status)| (i, endpoint, status)),
        );
    }
    let written = insert_batch(&mut conn, &rows, std::time::Duration::from_secs(3600)).await?;
    anyhow::ensure!(
        written.iter().all(|w| matches!(w, RowFate::Inserted { .. })),
        "not every event was stored: {written:?}"
    );
    Ok(rows.ids)
}
