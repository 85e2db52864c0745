//! SQL of the endpoint stats rollup (`endpoint_stats`, `endpoint_stats_deltas`): per endpoint
//! and hour, deliveries by status and attempts by duration bucket.
//!
//! Statement triggers on `deliveries` and `delivery_attempts` append deltas (see the
//! migration); [`compact`] folds them into the rollup (any worker, any number at once: rows are
//! taken with `SKIP LOCKED` and upserted in key order); [`read`] sums the rollup and the deltas
//! not folded yet in one statement, so it is exact either way and reads at most a few rows per
//! hour of the window, however many deliveries the endpoint has.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::models::DeliveryStatus;

/// An endpoint's numbers over a window.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointStats {
    /// Deliveries created in the window, by their status now.
    pub deliveries: Vec<(DeliveryStatus, i64)>,
    /// Attempts started in the window, by duration bucket (ascending).
    pub durations: Vec<(i32, i64)>,
}

impl EndpointStats {
    /// How many deliveries are in `status`.
    pub fn deliveries_in(&self, status: DeliveryStatus) -> i64 {
        self.deliveries
            .iter()
            .find(|(s, _)| *s == status)
            .map_or(0, |(_, n)| *n)
    }

    pub fn attempts(&self) -> i64 {
        self.durations.iter().map(|(_, n)| n).sum()
    }

    /// The `q`-quantile (0 < q <= 1) of the attempts' durations in milliseconds, as the middle
    /// of the bucket holding it; `None` without attempts.
    pub fn duration_quantile_ms(&self, q: f64) -> Option<f64> {
        let total = self.attempts();
        if total == 0 {
            return None;
        }
        // The rank of the quantile, from 1 (nearest-rank method).
        let rank = ((q * total as f64).ceil() as i64).clamp(1, total);
        let mut seen = 0;
        self.durations.iter().find_map(|&(bucket, n)| {
            seen += n;
            (seen >= rank).then(|| bucket_middle_ms(bucket))
        })
    }
}

/// The middle (geometric, on the `ms + 1` scale) of duration bucket `bucket`, which holds
/// `[2^(b/4) - 1, 2^((b+1)/4) - 1)` milliseconds (`triggers_duration_bucket` in SQL).
pub fn bucket_middle_ms(bucket: i32) -> f64 {
    (2f64.powf((f64::from(bucket) + 0.5) / 4.0) - 1.0).max(0.0)
}

/// The endpoint's deliveries created, and attempts started, in the hours from `since`'s hour
/// on (the rollup's grain: `since` is rounded down to the hour).
pub async fn read(
    conn: &mut PgConnection,
    organization_id: Uuid,
    endpoint_id: Uuid,
    since: DateTime<Utc>,
) -> sqlx::Result<EndpointStats> {
    let rows = sqlx::query!(
        r#"SELECT metric AS "metric!", sum(n)::int8 AS "n!" FROM (
             SELECT metric, n FROM endpoint_stats
             WHERE organization_id = $1 AND endpoint_id = $2 AND hour >= date_trunc('hour', $3::timestamptz)
             UNION ALL
             SELECT metric, n FROM endpoint_stats_deltas
             WHERE organization_id = $1 AND endpoint_id = $2 AND hour >= date_trunc('hour', $3::timestamptz)
         ) s
         GROUP BY metric"#,
        organization_id,
        endpoint_id,
        since,
    )
    .fetch_all(conn)
    .await?;
    let mut stats = EndpointStats::default();
    for row in rows {
        let (metric, n) = (row.metric, row.n);
        if n == 0 {
            continue;
        }
        if let Some(bucket) = metric.strip_prefix("ms_").and_then(|b| b.parse().ok()) {
            stats.durations.push((bucket, n));
        } else if let Some(status) = DeliveryStatus::parse(&metric) {
            stats.deliveries.push((status, n));
        }
    }
    stats.durations.sort_unstable();
    Ok(stats)
}

/// Fold up to `limit` deltas into the rollup, in one statement. Returns how many were folded
/// (callers repeat while it is `limit`).
pub async fn compact(conn: &mut PgConnection, limit: i64) -> sqlx::Result<u64> {
    let folded = sqlx::query_scalar!(
        r#"WITH moved AS (
             DELETE FROM endpoint_stats_deltas
             WHERE ctid = ANY (ARRAY(SELECT ctid FROM endpoint_stats_deltas LIMIT $1 FOR UPDATE SKIP LOCKED))
             RETURNING organization_id, endpoint_id, hour, metric, n
         ),
         upserted AS (
             INSERT INTO endpoint_stats (organization_id, endpoint_id, hour, metric, n)
             SELECT organization_id, endpoint_id, hour, metric, sum(n) FROM moved
             GROUP BY 1, 2, 3, 4
             ORDER BY 1, 2, 3, 4
             ON CONFLICT (organization_id, endpoint_id, hour, metric)
             DO UPDATE SET n = endpoint_stats.n + EXCLUDED.n
         )
         SELECT count(*) AS "folded!" FROM moved"#,
        limit,
    )
    .fetch_one(conn)
    .await?;
    Ok(u64::try_from(folded).unwrap_or(0))
}

/// Delete up to `limit` rollup rows of hours before `before`. Returns how many.
pub async fn prune(conn: &mut PgConnection, before: DateTime<Utc>, limit: i64) -> sqlx::Result<u64> {
    let res = sqlx::query!(
        "DELETE FROM endpoint_stats WHERE ctid = ANY (ARRAY(
             SELECT ctid FROM endpoint_stats WHERE hour < $1 LIMIT $2 FOR UPDATE SKIP LOCKED))",
        before,
        limit,
    )
    .execute(conn)
    .await?;
    Ok(res.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_middle_lies_inside_its_bucket() {
        for bucket in 0..70 {
            let low = 2f64.powf(f64::from(bucket) / 4.0) - 1.0;
            let high = 2f64.powf(f64::from(bucket + 1) / 4.0) - 1.0;
            let middle = bucket_middle_ms(bucket);
            assert!(low <= middle && middle < high, "{bucket}: {low} {middle} {high}");
        }
        assert!(
            (bucket_middle_ms(39) - 1000.0).abs() / 1000.0 < 0.1,
            "bucket 39 is about 1 s"
        );
    }

    #[test]
    fn quantiles_take_the_bucket_of_the_nearest_rank() {
        let stats = EndpointStats {
            deliveries: Vec::new(),
            durations: vec![(10, 50), (20, 45), (30, 5)],
        };
        assert_eq!(stats.attempts(), 100);
        assert_eq!(stats.duration_quantile_ms(0.5), Some(bucket_middle_ms(10)));
        assert_eq!(stats.duration_quantile_ms(0.51), Some(bucket_middle_ms(20)));
        assert_eq!(stats.duration_quantile_ms(0.95), Some(bucket_middle_ms(20)));
        assert_eq!(stats.duration_quantile_ms(0.96), Some(bucket_middle_ms(30)));
        assert_eq!(EndpointStats::default().duration_quantile_ms(0.5), None);
    }
}
