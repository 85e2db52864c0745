//! SQL of the `rate_limit_windows` table: leasing slices of an organisation's per-minute budget
//! through `triggers_lease_tokens` (see the initial migration for the sliding-window rule).

use sqlx::PgConnection;
use uuid::Uuid;

/// The answer of one lease call. Times are on the database's clock, so instances with skewed
/// clocks still agree on window boundaries.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Lease {
    /// Tokens granted (0..=want).
    pub tokens: i32,
    /// Sliding-window usage after this grant (may exceed the limit slightly while the previous
    /// minute's weight decays).
    pub window_used: f64,
    /// Tokens granted in the previous clock minute.
    pub prev_used: i32,
    /// Tokens granted in the current clock minute, this grant included.
    pub cur_used: i32,
    /// Seconds elapsed since the current clock minute began.
    pub window_elapsed: f64,
}

/// Lease up to `want` tokens of `limit` per sliding minute for the organisation.
pub async fn lease(
    conn: &mut PgConnection,
    organization_id: Uuid,
    limit: i32,
    want: i32,
) -> sqlx::Result<Lease> {
    sqlx::query_as!(
        Lease,
        r#"SELECT tokens AS "tokens!", window_used AS "window_used!", prev_used AS "prev_used!",
                  cur_used AS "cur_used!", window_elapsed AS "window_elapsed!"
           FROM triggers_lease_tokens($1, $2, $3)"#,
        organization_id,
        limit,
        want,
    )
    .fetch_one(conn)
    .await
}
