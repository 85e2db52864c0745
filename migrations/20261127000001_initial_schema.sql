-- The first Triggers schema: organisations, their keys, events, dedup keys, delivery attempts
-- and the fleet-wide rate-limit windows. apalis keeps its own schema (`apalis`).

CREATE TABLE organizations (
    id                    uuid PRIMARY KEY,
    name                  text NOT NULL,
    tier                  text NOT NULL CHECK (tier IN ('free', 'pro', 'business', 'enterprise')),
    rate_limit_per_minute integer NOT NULL CHECK (rate_limit_per_minute > 0),
    webhook_url           text,
    signing_secret        text,
    webhook_updated_at    timestamptz,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    id              uuid PRIMARY KEY,
    organization_id uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    prefix          text NOT NULL,
    key_hash        text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz,
    revoked_at      timestamptz
);
CREATE UNIQUE INDEX api_keys_prefix_key ON api_keys (prefix);
CREATE INDEX api_keys_organization_idx ON api_keys (organization_id);

CREATE TABLE events (
    id               uuid PRIMARY KEY,
    organization_id  uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    type             text NOT NULL,
    dedup_id         text,
    payload          jsonb NOT NULL,
    status           text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts         integer NOT NULL DEFAULT 0,
    response_status  integer,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    delivered_at     timestamptz,
    acknowledged_at  timestamptz
);
-- The inbox: one organisation, optionally one status, oldest first, keyset on (created_at, id).
CREATE INDEX events_inbox_status_idx ON events (organization_id, status, created_at, id);
CREATE INDEX events_inbox_all_idx ON events (organization_id, created_at, id);
-- Retention purge of delivered events.
CREATE INDEX events_delivered_at_idx ON events (delivered_at) WHERE status = 'delivered';

CREATE TABLE dedup_keys (
    organization_id uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    dedup_id        text NOT NULL,
    event_id        uuid NOT NULL,
    expires_at      timestamptz NOT NULL,
    PRIMARY KEY (organization_id, dedup_id)
);
CREATE INDEX dedup_keys_expires_at_idx ON dedup_keys (expires_at);

CREATE TABLE delivery_attempts (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id        uuid NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    organization_id uuid NOT NULL,
    attempt         integer NOT NULL,
    started_at      timestamptz NOT NULL,
    duration_ms     integer NOT NULL,
    response_status integer,
    error           text
);
CREATE INDEX delivery_attempts_event_idx ON delivery_attempts (event_id, attempt);

-- Fleet-wide rate limiting: tokens granted per organisation per clock minute. Ingest instances
-- lease small slices of the budget; the limit is judged as a sliding window (the previous
-- minute's grants weighted by how much of it still overlaps the last 60 seconds).
CREATE TABLE rate_limit_windows (
    organization_id uuid NOT NULL,
    window_start    timestamptz NOT NULL,
    granted         integer NOT NULL DEFAULT 0,
    PRIMARY KEY (organization_id, window_start)
);

-- Lease up to `want` tokens of `lim` per sliding minute for `org`. Returns the number granted
-- (0..want) and the sliding-window usage after the grant, so callers can report what remains.
CREATE FUNCTION triggers_lease_tokens(org uuid, lim integer, want integer,
                                      OUT tokens integer, OUT window_used double precision)
LANGUAGE plpgsql AS $$
DECLARE
    now_ts     timestamptz := clock_timestamp();
    cur_start  timestamptz := date_trunc('minute', now_ts);
    prev_used  integer;
    cur_used   integer;
    weight     double precision;
BEGIN
    INSERT INTO rate_limit_windows (organization_id, window_start, granted)
    VALUES (org, cur_start, 0)
    ON CONFLICT (organization_id, window_start) DO NOTHING;

    SELECT w.granted INTO cur_used FROM rate_limit_windows w
    WHERE w.organization_id = org AND w.window_start = cur_start FOR UPDATE;

    SELECT coalesce(max(w.granted), 0) INTO prev_used FROM rate_limit_windows w
    WHERE w.organization_id = org AND w.window_start = cur_start - interval '1 minute';

    weight := 1.0 - extract(epoch FROM now_ts - cur_start)::double precision / 60.0;
    tokens := greatest(0, least(want, floor(lim - prev_used * weight - cur_used)::integer));
    IF tokens > 0 THEN
        UPDATE rate_limit_windows w SET granted = w.granted + tokens
        WHERE w.organization_id = org AND w.window_start = cur_start;
    END IF;
    window_used := prev_used * weight + cur_used + tokens;
END;
$$;
