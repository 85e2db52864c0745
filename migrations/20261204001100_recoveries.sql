-- Recoveries: an endpoint's deliveries of a time window, in chosen statuses, given new chains of
-- attempts in the background (API.md, "Resend and recovery"). The API counts the deliveries and
-- writes the row in one transaction; workers then process it in bounded batches, one worker at
-- a time (the batch's transaction holds the row lock), each batch committed with the cursor it
-- reached, so a killed worker's recovery goes on from there.

CREATE TABLE recoveries (
    organization_id   uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    id                uuid NOT NULL,
    endpoint_id       uuid NOT NULL,
    -- The window on the deliveries' `created_at`: since inclusive, until exclusive.
    since             timestamptz NOT NULL,
    until             timestamptz NOT NULL,
    statuses          text[] NOT NULL,
    -- When the deliveries were counted: a delivery changed after it (resent, recovered by
    -- another call, newly failed) is not this recovery's.
    as_of             timestamptz NOT NULL,
    -- Deliveries that matched when counted, and those given a new chain so far (at most total).
    total             integer NOT NULL CHECK (total >= 0),
    enqueued          integer NOT NULL DEFAULT 0 CHECK (enqueued >= 0),
    -- The last delivery processed, in the order of deliveries_endpoint_idx (created_at,
    -- event_id); NULL before the first batch.
    cursor_created_at timestamptz,
    cursor_event_id   uuid,
    status            text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'done')),
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    finished_at       timestamptz,
    PRIMARY KEY (organization_id, id)
);

-- What workers pick up: the running recovery that progressed least recently first, so several
-- recoveries take turns batch by batch.
CREATE INDEX recoveries_running_idx ON recoveries (updated_at) WHERE status = 'running';
