-- The janitor and the queue sampler look for pending events without a live delivery job, and
-- the janitor purges dead letters past their retention: both by `updated_at` within one status.
-- Partial indexes keep those scans proportional to the pending or failed events, not the table.
CREATE INDEX events_pending_updated_idx ON events (updated_at) WHERE status = 'pending';
CREATE INDEX events_failed_updated_idx ON events (updated_at) WHERE status = 'failed';
