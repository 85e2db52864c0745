-- History for the scale benchmark (`bench.sh --prefill N`): N events of the last day, delivered,
-- with their dedup keys (unexpired), one delivery each (to their organisation's one endpoint) and
-- one attempt each, spread over 16 organisations of their own (the bench's organisations are made
-- afterwards, as always). psql variable: n.
-- Ids are time-ordered like the service's (UUIDv7 layout: milliseconds, then random bits).
\set ON_ERROR_STOP on
BEGIN;
INSERT INTO organizations (id, name, tier, rate_limit_per_minute)
SELECT gen_random_uuid(), 'history-' || g, 'enterprise', 1000000 FROM generate_series(1, 16) g;
CREATE TEMP TABLE history_orgs AS
SELECT id, gen_random_uuid() AS endpoint, row_number() OVER (ORDER BY id) - 1 AS k
FROM organizations WHERE name LIKE 'history-%';
INSERT INTO endpoints (organization_id, id, url, signing_secret, is_default)
SELECT id, endpoint, 'http://127.0.0.1:9/history', 'whsec_aGlzdG9yeS1oaXN0b3J5LWhpc3Rvcnk=', true FROM history_orgs;
CREATE TEMP TABLE history AS
SELECT
    (lpad(to_hex((extract(epoch FROM at) * 1000)::bigint), 12, '0')
        || '7' || substr(md5(g::text), 1, 3) || '8' || substr(md5(g::text), 4, 15))::uuid AS id,
    (SELECT id FROM history_orgs WHERE k = g % 16) AS org,
    (SELECT endpoint FROM history_orgs WHERE k = g % 16) AS endpoint,
    'hist-' || g AS dedup,
    at
FROM (SELECT g, now() - interval '1 day' + (g::float8 / :n) * interval '23 hours' AS at
      FROM generate_series(1, :n) g) s;
INSERT INTO events (id, organization_id, type, dedup_id, payload, status, created_at, updated_at,
                    delivered_at)
SELECT id, org, 'order.created', dedup,
       jsonb_build_object('order_id', dedup, 'amount', 42.5, 'currency', 'EUR',
                          'customer', jsonb_build_object('id', 'c-1', 'email', 'a@example.com'),
                          'items', jsonb_build_array(jsonb_build_object('sku', 'A1', 'qty', 2)),
                          'note', repeat('x', 200)),
       'delivered', at, at, at
FROM history ORDER BY id;
INSERT INTO deliveries (organization_id, event_id, endpoint_id, status, attempts, response_status,
                        last_attempt_at, created_at, updated_at, delivered_at)
SELECT org, id, endpoint, 'delivered', 1, 200, at, at, at, at FROM history ORDER BY org, id;
INSERT INTO dedup_keys (organization_id, dedup_id, event_id, expires_at)
SELECT org, dedup, id, at + interval '1 day' FROM history;
INSERT INTO delivery_attempts (event_id, organization_id, endpoint_id, attempt, started_at, duration_ms,
                               response_status)
SELECT id, org, endpoint, 1, at, 3, 200 FROM history ORDER BY id;
COMMIT;
VACUUM ANALYZE events;
VACUUM ANALYZE deliveries;
VACUUM ANALYZE dedup_keys;
VACUUM ANALYZE delivery_attempts;
