-- Auto-disable (API.md, "Endpoints", Lifecycle): each endpoint's record of failures since its
-- last success, kept by the worker's record statement (`deliveries::record_attempts`) in the
-- same statement that records the attempts. An endpoint whose attempts have all failed since
-- `failing_since` for TRIGGERS_ENDPOINT_DISABLE_AFTER_SECS, with at least 10 failed attempts,
-- is disabled there with `disabled_reason = 'failing'`. A success, and enabling the endpoint,
-- clear the record.
ALTER TABLE endpoints
    -- The first failed attempt since the last success; NULL while the record is clear.
    ADD COLUMN failing_since   timestamptz,
    -- Failed attempts since `failing_since`.
    ADD COLUMN failed_attempts integer NOT NULL DEFAULT 0;
