-- Deliveries: one per (event, endpoint), the one source of delivery state (API.md, "Endpoints").
-- An event keeps what is its own (type, payload, acknowledgement) and a summary `status` for the
-- inbox's index-backed filter, which a trigger keeps in step with its deliveries.
--
-- Keys lead with `organization_id` (distribution by organisation) and then the event's UUID v7,
-- which is time-ordered: range partitions on `event_id` are time partitions, and an event's
-- deliveries fall into the partition of the event.

CREATE TABLE deliveries (
    organization_id uuid NOT NULL,
    event_id        uuid NOT NULL,
    endpoint_id     uuid NOT NULL,
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'delivered', 'failed', 'skipped', 'cancelled')),
    -- Attempts of this delivery over its whole life (a resend keeps counting).
    attempts        integer NOT NULL DEFAULT 0,
    response_status integer,
    last_error      text,
    -- The queue job that carries this delivery's next attempt (apalis.jobs.id). A job whose id is
    -- not this one belongs to a superseded chain and sends nothing.
    job_id          text,
    next_attempt_at timestamptz,
    last_attempt_at timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    PRIMARY KEY (organization_id, event_id, endpoint_id)
-- Room on each page for the attempt updates: no index covers a column they change, so they
-- are HOT (no new index entries, no index bloat) when the page has space.
) WITH (fillfactor = 80);

-- An endpoint's deliveries by time (its list, newest first, and what recovery scans).
CREATE INDEX deliveries_endpoint_idx ON deliveries (organization_id, endpoint_id, created_at, event_id);

ALTER TABLE delivery_attempts ADD COLUMN endpoint_id uuid;

-- The data of the one-webhook model, moved to deliveries of each organisation's default
-- endpoint (made from its webhook by the previous migration). Events of organisations without
-- a webhook had nothing to deliver and get no delivery.
INSERT INTO deliveries (organization_id, event_id, endpoint_id, status, attempts, response_status,
                        last_error, next_attempt_at, last_attempt_at, created_at, updated_at,
                        delivered_at)
SELECT e.organization_id, e.id, ep.id,
       CASE
           WHEN e.acknowledged_at IS NULL THEN e.status
           WHEN e.status = 'delivered' AND e.response_status BETWEEN 200 AND 299 THEN 'delivered'
           WHEN e.status = 'failed' THEN 'failed'
           ELSE 'cancelled'
       END,
       e.attempts, e.response_status, e.last_error,
       CASE WHEN e.status = 'pending' AND e.acknowledged_at IS NULL THEN e.updated_at END,
       (SELECT max(a.started_at) FROM delivery_attempts a WHERE a.event_id = e.id),
       e.created_at, e.updated_at,
       CASE WHEN e.status = 'delivered' AND e.response_status BETWEEN 200 AND 299 THEN e.delivered_at END
FROM events e
JOIN endpoints ep ON ep.organization_id = e.organization_id AND ep.is_default;

UPDATE delivery_attempts a SET endpoint_id = ep.id
FROM endpoints ep
WHERE ep.organization_id = a.organization_id AND ep.is_default;

-- Queued jobs named an event; they now name a delivery: the event's delivery to the default
-- endpoint. Each delivery takes one live job as its chain (a redelivery never left two).
UPDATE apalis.jobs j
SET job = convert_to(
        (convert_from(j.job, 'UTF8')::jsonb || jsonb_build_object('endpoint_id', ep.id))::text, 'UTF8')
FROM endpoints ep
WHERE j.job_type = 'triggers_deliveries'
  AND ep.is_default
  AND ep.organization_id = (convert_from(j.job, 'UTF8')::jsonb ->> 'organization_id')::uuid;

UPDATE deliveries d SET job_id = j.id
FROM (
    SELECT DISTINCT ON (event_id) id, event_id
    FROM (SELECT id, (convert_from(job, 'UTF8')::jsonb ->> 'event_id')::uuid AS event_id,
                 -- A live job first; a given-up one is what the janitor dead-letters by.
                 (status IN ('Pending', 'Queued', 'Running')
                  OR (status = 'Failed' AND attempts < max_attempts)) AS live,
                 run_at
          FROM apalis.jobs WHERE job_type = 'triggers_deliveries') l
    ORDER BY event_id, live DESC, run_at DESC
) j
WHERE d.event_id = j.event_id AND d.status = 'pending';

-- Jobs of events that had no webhook any more would never send anything: the old worker
-- dropped them; the new one could not decode them.
DELETE FROM apalis.jobs j
WHERE j.job_type = 'triggers_deliveries'
  AND NOT (convert_from(j.job, 'UTF8')::jsonb ? 'endpoint_id');

-- The event's delivery state is now its deliveries'.
ALTER TABLE events DROP COLUMN attempts, DROP COLUMN response_status, DROP COLUMN last_error;
ALTER TABLE organizations DROP COLUMN webhook_url, DROP COLUMN signing_secret, DROP COLUMN webhook_updated_at;

-- An event's status sums its deliveries up (API.md): `delivered` once acknowledged; otherwise
-- `pending` while any delivery is pending, else `failed` if any failed, else `delivered` if any
-- was delivered; with only skipped or cancelled deliveries (or none) it stays `pending`.
-- Maintained for every statement that changes a delivery's status, whoever runs it: the events
-- are locked (in id order, after the deliveries: every writer takes deliveries first), and only
-- then summed up, in a statement whose snapshot sees every change committed before the lock.
-- Deliveries are inserted with their event, whose status the inserting statement sets itself.
CREATE FUNCTION triggers_sum_up_events() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    changed uuid[];
BEGIN
    SELECT array_agg(DISTINCT n.event_id) INTO changed
    FROM new_deliveries n
    JOIN old_deliveries o USING (organization_id, event_id, endpoint_id)
    WHERE n.status <> o.status;
    IF changed IS NULL THEN
        RETURN NULL;
    END IF;
    PERFORM 1 FROM events WHERE id = ANY (changed) ORDER BY id FOR UPDATE;
    UPDATE events e
    SET status = s.status,
        delivered_at = CASE WHEN s.status = 'delivered' THEN coalesce(e.delivered_at, s.delivered_at, now()) END,
        updated_at = now()
    FROM (
        SELECT ev.id,
               CASE
                   WHEN ev.acknowledged_at IS NOT NULL THEN 'delivered'
                   WHEN bool_or(d.status = 'pending') THEN 'pending'
                   WHEN bool_or(d.status = 'failed') THEN 'failed'
                   WHEN bool_or(d.status = 'delivered') THEN 'delivered'
                   ELSE 'pending'
               END AS status,
               max(d.delivered_at) AS delivered_at
        FROM events ev
        LEFT JOIN deliveries d ON d.organization_id = ev.organization_id AND d.event_id = ev.id
        WHERE ev.id = ANY (changed)
        GROUP BY ev.id, ev.acknowledged_at
    ) s
    WHERE e.id = s.id AND e.status IS DISTINCT FROM s.status;
    RETURN NULL;
END;
$$;

CREATE TRIGGER deliveries_sum_up_events
AFTER UPDATE ON deliveries
REFERENCING OLD TABLE AS old_deliveries NEW TABLE AS new_deliveries
FOR EACH STATEMENT EXECUTE FUNCTION triggers_sum_up_events();
