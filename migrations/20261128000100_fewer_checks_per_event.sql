-- Less work per stored event and per job, with the same guarantees.

-- A dedup key is only ever written by the statement that stores its event (of the same
-- organisation), whose own foreign key already checks the organisation: this second check ran
-- once per row for nothing. (Organisations are never deleted, so the cascade was never used;
-- expired keys are purged by the janitor.)
ALTER TABLE dedup_keys DROP CONSTRAINT IF EXISTS dedup_keys_organization_id_fkey;

-- apalis' lock_by and idempotency-key indexes took an entry for every job, though only claimed
-- jobs have a lock_by and Triggers sets no idempotency keys. Partial, they index what is looked
-- up (`lock_by = <worker>`; uniqueness of keys that are set, as before: NULLs never collided).
CREATE INDEX IF NOT EXISTS apalis_jobs_lock_by_set ON apalis.jobs (lock_by) WHERE lock_by IS NOT NULL;
DROP INDEX IF EXISTS apalis.idx_apalis_jobs_lock_by;
CREATE UNIQUE INDEX IF NOT EXISTS apalis_jobs_idempotency_key_set
    ON apalis.jobs (job_type, idempotency_key) WHERE idempotency_key IS NOT NULL;
DROP INDEX IF EXISTS apalis.idx_jobs_idempotency_key;
