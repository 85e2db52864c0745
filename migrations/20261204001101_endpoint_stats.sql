-- Endpoint stats (`GET /api/endpoints/{id}/stats`): per endpoint and hour, its deliveries by
-- status (by the hour they were created) and its attempts by duration bucket (by the hour they
-- started), so a window of up to 28 days is read from at most 672 hours of a few rows each,
-- however many deliveries the endpoint has.
--
-- Writers never touch the rollup itself: statement triggers append one delta row per (endpoint,
-- hour, metric) a statement changed (a delivery's status change is -1 on the old status and +1
-- on the new), so no two transactions ever wait for each other on a hot endpoint's counter, and
-- no lock is taken that another writer could take in another order. A worker folds the deltas
-- into `endpoint_stats` (`db::endpoint_stats::compact`); a reader sums both in one statement,
-- so it is exact whether or not the deltas were folded yet. Deleting deliveries (retention)
-- changes no count: the stats are what happened.

CREATE TABLE endpoint_stats (
    organization_id uuid NOT NULL,
    endpoint_id     uuid NOT NULL,
    hour            timestamptz NOT NULL,
    -- A delivery status, or `ms_<bucket>`: attempts whose duration fell in that bucket
    -- (`triggers_duration_bucket`).
    metric          text NOT NULL,
    n               bigint NOT NULL,
    PRIMARY KEY (organization_id, endpoint_id, hour, metric)
);
-- For pruning hours past the longest window.
CREATE INDEX endpoint_stats_hour_idx ON endpoint_stats (hour);

CREATE TABLE endpoint_stats_deltas (
    organization_id uuid NOT NULL,
    endpoint_id     uuid NOT NULL,
    hour            timestamptz NOT NULL,
    metric          text NOT NULL,
    n               bigint NOT NULL
);
CREATE INDEX endpoint_stats_deltas_idx ON endpoint_stats_deltas (organization_id, endpoint_id, hour);

-- Quarter-octave buckets of a duration in milliseconds: bucket b holds [2^(b/4) - 1, 2^((b+1)/4)
-- - 1), so a percentile read as its bucket's middle is within about 9% (0 ms is bucket 0, 1 s
-- bucket 39, 10 s bucket 53).
CREATE FUNCTION triggers_duration_bucket(ms integer) RETURNS integer LANGUAGE sql IMMUTABLE AS $$
    SELECT floor(4 * ln(greatest(ms, 0) + 1) / ln(2))::integer
$$;

CREATE FUNCTION triggers_count_new_deliveries() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO endpoint_stats_deltas (organization_id, endpoint_id, hour, metric, n)
    SELECT organization_id, endpoint_id, date_trunc('hour', created_at), status, count(*)
    FROM new_deliveries
    GROUP BY 1, 2, 3, 4;
    RETURN NULL;
END;
$$;

CREATE TRIGGER deliveries_count_new
AFTER INSERT ON deliveries
REFERENCING NEW TABLE AS new_deliveries
FOR EACH STATEMENT EXECUTE FUNCTION triggers_count_new_deliveries();

CREATE FUNCTION triggers_count_changed_deliveries() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO endpoint_stats_deltas (organization_id, endpoint_id, hour, metric, n)
    SELECT c.organization_id, c.endpoint_id, v.hour, v.metric, sum(v.n)
    FROM (
        SELECT n.organization_id, n.endpoint_id,
               date_trunc('hour', n.created_at) AS new_hour, n.status AS new_status,
               date_trunc('hour', o.created_at) AS old_hour, o.status AS old_status
        FROM new_deliveries n
        JOIN old_deliveries o USING (organization_id, event_id, endpoint_id)
    ) c
    CROSS JOIN LATERAL (VALUES (c.new_hour, c.new_status, 1), (c.old_hour, c.old_status, -1))
        AS v(hour, metric, n)
    WHERE (c.new_status, c.new_hour) IS DISTINCT FROM (c.old_status, c.old_hour)
    GROUP BY 1, 2, 3, 4
    HAVING sum(v.n) <> 0;
    RETURN NULL;
END;
$$;

CREATE TRIGGER deliveries_count_changed
AFTER UPDATE ON deliveries
REFERENCING OLD TABLE AS old_deliveries NEW TABLE AS new_deliveries
FOR EACH STATEMENT EXECUTE FUNCTION triggers_count_changed_deliveries();

CREATE FUNCTION triggers_count_attempts() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO endpoint_stats_deltas (organization_id, endpoint_id, hour, metric, n)
    SELECT organization_id, endpoint_id, date_trunc('hour', started_at),
           'ms_' || triggers_duration_bucket(duration_ms), count(*)
    FROM new_attempts
    WHERE endpoint_id IS NOT NULL
    GROUP BY 1, 2, 3, 4;
    RETURN NULL;
END;
$$;

CREATE TRIGGER delivery_attempts_count
AFTER INSERT ON delivery_attempts
REFERENCING NEW TABLE AS new_attempts
FOR EACH STATEMENT EXECUTE FUNCTION triggers_count_attempts();

-- What is there already, counted after the triggers exist: they hold the tables' write lock
-- until this migration commits, so nothing is counted twice or missed.
INSERT INTO endpoint_stats (organization_id, endpoint_id, hour, metric, n)
SELECT organization_id, endpoint_id, date_trunc('hour', created_at), status, count(*)
FROM deliveries
WHERE created_at >= now() - interval '29 days'
GROUP BY 1, 2, 3, 4;

INSERT INTO endpoint_stats (organization_id, endpoint_id, hour, metric, n)
SELECT organization_id, endpoint_id, date_trunc('hour', started_at),
       'ms_' || triggers_duration_bucket(duration_ms), count(*)
FROM delivery_attempts
WHERE endpoint_id IS NOT NULL AND started_at >= now() - interval '29 days'
GROUP BY 1, 2, 3, 4;
