-- Events area: `triggers_lease_tokens` also reports the raw per-minute counts and the seconds
-- elapsed in the current minute (so ingest computes Retry-After and X-RateLimit-Reset on the
-- database's clock), and drops an organisation's stale windows as it opens a new one. Its OUT
-- columns change, so the initial version is dropped first. Leases are short statements; the
-- swap happens inside this migration's transaction.

DROP FUNCTION IF EXISTS triggers_lease_tokens(uuid, integer, integer);

-- Lease up to `want` tokens of `lim` per sliding minute for `org`. Returns the number granted
-- (0..want), the sliding-window usage after the grant (the previous minute's grants weighted by
-- the part of it still inside the last 60 seconds, plus this minute's grants), the two raw
-- counts, and the seconds elapsed in the current minute: callers compute Retry-After and
-- X-RateLimit-* from them on the database's clock. The row lock serialises leases of one
-- organisation across every ingest instance. When a minute's row is created, rows of that
-- organisation older than the previous minute are deleted, so the table stays small.
CREATE FUNCTION triggers_lease_tokens(org uuid, lim integer, want integer,
                                      OUT tokens integer, OUT window_used double precision,
                                      OUT prev_used integer, OUT cur_used integer,
                                      OUT window_elapsed double precision)
LANGUAGE plpgsql AS $$
DECLARE
    now_ts     timestamptz := clock_timestamp();
    cur_start  timestamptz := date_trunc('minute', now_ts);
    weight     double precision;
BEGIN
    INSERT INTO rate_limit_windows (organization_id, window_start, granted)
    VALUES (org, cur_start, 0)
    ON CONFLICT (organization_id, window_start) DO NOTHING;
    IF FOUND THEN
        DELETE FROM rate_limit_windows w
        WHERE w.organization_id = org AND w.window_start < cur_start - interval '1 minute';
    END IF;

    SELECT w.granted INTO cur_used FROM rate_limit_windows w
    WHERE w.organization_id = org AND w.window_start = cur_start FOR UPDATE;

    SELECT coalesce(max(w.granted), 0) INTO prev_used FROM rate_limit_windows w
    WHERE w.organization_id = org AND w.window_start = cur_start - interval '1 minute';

    window_elapsed := extract(epoch FROM now_ts - cur_start)::double precision;
    weight := greatest(0.0, 1.0 - window_elapsed / 60.0);
    tokens := greatest(0, least(want, floor(lim - prev_used * weight - cur_used)::integer));
    IF tokens > 0 THEN
        UPDATE rate_limit_windows w SET granted = w.granted + tokens
        WHERE w.organization_id = org AND w.window_start = cur_start;
    END IF;
    cur_used := cur_used + tokens;
    window_used := prev_used * weight + cur_used;
END;
$$;
