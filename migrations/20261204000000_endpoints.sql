-- Endpoints: an organisation may have many, each subscribed to the event types it wants
-- (API.md, "Endpoints"). The organisation's one webhook becomes its *default endpoint*
-- (`is_default`, patterns `{*}`), with the same URL and signing secret.
--
-- Keys lead with `organization_id`, so the table can be distributed by organisation later.
-- Endpoints are deleted for real: deliveries keep the endpoint's id (no foreign key), and a
-- delivery whose endpoint is gone is cancelled.

-- Bumped (in the same transaction) by every change of an organisation's endpoints, with a
-- NOTIFY on channel `triggers_endpoints` carrying the organisation id. Ingest caches each
-- organisation's endpoints with the version it read; its batch statement stores an event only
-- when the version is still current (else it reloads and tries again), so a change is seen by
-- every event whose request starts after the change's answer, on every ingest instance.
ALTER TABLE organizations ADD COLUMN endpoints_version bigint NOT NULL DEFAULT 0;

CREATE TABLE endpoints (
    organization_id       uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    id                    uuid NOT NULL,
    url                   text NOT NULL,
    description           text NOT NULL DEFAULT '',
    -- Patterns (`*`, an exact type, `prefix.*`); validated by `EventTypePattern::parse`.
    event_types           text[] NOT NULL DEFAULT '{*}',
    -- NULL while enabled; why it is disabled otherwise.
    disabled_reason       text CHECK (disabled_reason IN ('manual', 'failing')),
    -- Custom request headers: a JSON object of name -> value.
    headers               jsonb NOT NULL DEFAULT '{}',
    rate_limit_per_second integer CHECK (rate_limit_per_second BETWEEN 1 AND 10000),
    signing_secret        text NOT NULL,
    -- Secrets still valid during a rotation's grace period: [{"secret", "expires_at"}].
    previous_secrets      jsonb NOT NULL DEFAULT '[]',
    is_default            boolean NOT NULL DEFAULT false,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, id)
);
-- At most one default endpoint per organisation (what `/api/webhook/config` manages).
CREATE UNIQUE INDEX endpoints_default_key ON endpoints (organization_id) WHERE is_default;

-- A UUID v7 (48-bit millisecond timestamp, version 7 in bits 52-55 as numbered by set_bit, the
-- RFC variant and random bits of gen_random_uuid), as the application makes them: Postgres 15
-- has no generator of its own.
CREATE FUNCTION triggers_uuid_v7() RETURNS uuid LANGUAGE sql VOLATILE AS $$
    SELECT encode(
        set_bit(set_bit(set_bit(set_bit(
            overlay(uuid_send(gen_random_uuid())
                    PLACING substring(int8send(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
                    FROM 1 FOR 6),
            52, 1), 53, 1), 54, 1), 55, 0),
        'hex')::uuid
$$;

INSERT INTO endpoints (organization_id, id, url, signing_secret, is_default, created_at, updated_at)
SELECT id, triggers_uuid_v7(), webhook_url, signing_secret, true,
       coalesce(webhook_updated_at, created_at), coalesce(webhook_updated_at, updated_at)
FROM organizations
WHERE webhook_url IS NOT NULL AND signing_secret IS NOT NULL;
