//! Organisations and endpoints created by the same `shared::db` functions the API calls, so a
//! fixture cannot drift from production SQL (no statement of its own here).

use std::collections::BTreeMap;

use sqlx::PgPool;
use triggers_shared::{
    db::{
        endpoints::{self, Created, NewEndpoint},
        key_issuance, organizations,
    },
    models::{Description, EventTypes, OrganizationName, Tier},
    net::WebhookUrl,
    signing,
};
use uuid::Uuid;

/// An organisation of `tier` with one API key, by the transaction `POST /api/keys/generate` and
/// the CLI use (`db::key_issuance::create_organization`): its key and its id.
pub async fn org_with_key(pool: &PgPool, tier: &str) -> (String, Uuid) {
    let tier = Tier::parse(tier).expect("known tier");
    let name = OrganizationName::parse("test organisation").expect("a valid name");
    let (org, key) = key_issuance::create_organization(pool, &name, tier)
        .await
        .expect("create organisation");
    (key.key, org.id)
}

/// A `pro` organisation without a key (the worker never reads one), whose default endpoint (its
/// webhook, matching every type) is `webhook_url` when given: its id and the endpoint's signing
/// secret.
pub async fn org(pool: &PgPool, webhook_url: Option<&str>) -> (Uuid, String) {
    let id = Uuid::now_v7();
    let mut secret = signing::generate_secret();
    let mut tx = pool.begin().await.expect("begin");
    organizations::insert(&mut tx, id, &format!("org-{id}"), Tier::Pro)
        .await
        .expect("insert organization");
    if let Some(url) = webhook_url {
        let url = WebhookUrl::parse(url).expect("a webhook URL");
        secret = endpoints::set_default(&mut tx, id, &url, &secret)
            .await
            .expect("set webhook")
            .signing_secret;
    }
    tx.commit().await.expect("commit");
    (id, secret)
}

/// Point the organisation's webhook (its default endpoint) at `url`, by the function
/// `POST /api/webhook/config` calls: the endpoint's id.
pub async fn set_webhook(pool: &PgPool, org: Uuid, url: &str) -> Uuid {
    let url = WebhookUrl::parse(url).expect("a webhook URL");
    let mut conn = pool.acquire().await.expect("connection");
    endpoints::set_default(&mut conn, org, &url, "whsec_dGVzdA==")
        .await
        .expect("set webhook")
        .id
}

/// An enabled endpoint of `org` at `url`, subscribed to `patterns`, with custom `headers`,
/// created by `db::endpoints::create` as `POST /api/endpoints` creates it: its id and its signing
/// secret.
pub async fn endpoint(
    pool: &PgPool,
    org: Uuid,
    url: &str,
    patterns: &[&str],
    headers: &[(&str, &str)],
) -> (Uuid, String) {
    let new = NewEndpoint {
        url: WebhookUrl::parse(url).expect("a webhook URL"),
        description: Description::parse("").expect("description"),
        event_types: EventTypes::try_from(patterns.iter().map(|p| (*p).to_owned()).collect::<Vec<_>>())
            .expect("patterns"),
        enabled: true,
        headers: headers
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect::<BTreeMap<_, _>>()
            .into(),
        rate_limit_per_second: None,
    };
    let secret = signing::generate_secret();
    let mut conn = pool.acquire().await.expect("connection");
    match endpoints::create(&mut conn, org, i64::MAX, &new, &secret, false)
        .await
        .expect("create endpoint")
    {
        Created::Endpoint(e) => (e.id, secret),
        Created::OverCap => panic!("no cap in tests"),
    }
}
