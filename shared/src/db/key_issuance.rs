//! The transactions that issue an organisation an API key, over `organizations` and
//! `api_keys`: creating an organisation with its first key ([`create_organization`]) and
//! rotating its keys ([`rotate`]), each one function for the API and the operator command
//! alike. Both retry with another key when the new key's prefix is taken ([`with_fresh_key`]).

use std::time::Duration;

use sqlx::PgPool;
use uuid::Uuid;

use super::{
    api_keys::{self, Retired},
    is_unique_violation, organizations,
};
use crate::{
    apikey::{self, GeneratedKey},
    models::{Organization, OrganizationName, Tier},
};

/// Create an organisation with its first API key, in one transaction. The key's secret is in
/// the returned [`GeneratedKey`] only: show it once.
pub async fn create_organization(
    pool: &PgPool,
    name: &OrganizationName,
    tier: Tier,
) -> anyhow::Result<(Organization, GeneratedKey)> {
    let org_id = Uuid::now_v7();
    with_fresh_key(|key| async move {
        let created = async {
            let mut tx = pool.begin().await?;
            let organization = organizations::insert(&mut tx, org_id, name.as_str(), tier).await?;
            api_keys::insert(&mut tx, Uuid::now_v7(), org_id, &key.prefix, &key.hash).await?;
            tx.commit().await?;
            Ok(organization)
        }
        .await;
        (created, key)
    })
    .await
}

/// Attempts at finding an unused key prefix (48 random bits: a second attempt is already rare).
const KEY_ATTEMPTS: usize = 3;

/// Run `transaction` with a fresh key (hashed on the process's hash pool) until it does not
/// collide with a stored prefix: a unique violation means the prefix is taken, so the work is
/// retried, up to [`KEY_ATTEMPTS`] times, with another key. `transaction` owns its transaction
/// (rolled back on error) and hands the key back with its result. Returns that result and the
/// key it stored.
async fn with_fresh_key<T, Fut>(
    mut transaction: impl FnMut(GeneratedKey) -> Fut,
) -> anyhow::Result<(T, GeneratedKey)>
where
    Fut: Future<Output = (sqlx::Result<T>, GeneratedKey)>,
{
    for attempt in 1..=KEY_ATTEMPTS {
        let (done, key) = transaction(apikey::generate().await?).await;
        match done {
            Err(e) if is_unique_violation(&e) && attempt < KEY_ATTEMPTS => continue,
            done => return Ok((done?, key)),
        }
    }
    anyhow::bail!("no free key prefix after {KEY_ATTEMPTS} attempts")
}

/// What [`rotate`] did.
pub struct Rotation {
    /// The organisation (its `updated_at` is the rotation's).
    pub organization: Organization,
    /// The new key: its secret is shown once, to whoever asked for the rotation.
    pub key: GeneratedKey,
    pub retired: Retired,
}

/// Issue a new key for the organisation and retire its active key(s) (see [`api_keys::retire_active`]), in
/// one transaction that announces the change on `channel` ([`api_keys::notify_change`]). `None` when there
/// is no such organisation. The organisation's row lock serialises rotations of one organisation,
/// so two concurrent rotations cannot both leave a "new" key active.
pub async fn rotate(
    pool: &PgPool,
    org_id: Uuid,
    grace: Duration,
    channel: &str,
) -> anyhow::Result<Option<Rotation>> {
    let (rotated, key) = with_fresh_key(|key| async move {
        let rotated = async {
            let mut tx = pool.begin().await?;
            // First: the organisation's row lock serialises its rotations.
            if !organizations::touch(&mut tx, org_id).await? {
                return Ok(None);
            }
            let organization = organizations::get(&mut tx, org_id)
                .await?
                .ok_or(sqlx::Error::RowNotFound)?;
            let retired = api_keys::retire_active(&mut tx, org_id, grace).await?;
            api_keys::insert(&mut tx, Uuid::now_v7(), org_id, &key.prefix, &key.hash).await?;
            api_keys::notify_change(&mut tx, channel, org_id).await?;
            tx.commit().await?;
            Ok(Some((organization, retired)))
        }
        .await;
        (rotated, key)
    })
    .await?;
    Ok(rotated.map(|(organization, retired)| Rotation {
        organization,
        key,
        retired,
    }))
}
