-- apalis' queue table, trimmed for how Triggers uses it. Runs after apalis' own migrations
-- (`db::migrate` applies apalis' schema first), and only touches what apalis 1.0 created.

-- Two indexes duplicate others column for column: apalis' first migration made them, later ones
-- added the equivalents without dropping these. Every job insert and every change of a job's
-- status wrote both twice.
DROP INDEX IF EXISTS apalis.unique_job_id;   -- = jobs_pkey (id)
DROP INDEX IF EXISTS apalis.lidx;            -- = idx_apalis_jobs_lock_by (lock_by)

-- One NOTIFY per inserting statement and job type instead of one per row: ingest writes a batch
-- of first jobs in one statement, and a worker only needs to be woken once to fetch them all
-- (apalis' listener reads `job_type` and `id` from the payload; ours only takes the wake-up).
-- Jobs due later (retries) are found by the workers' interval poll, as before.
CREATE OR REPLACE FUNCTION apalis.notify_new_jobs() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify(
        'apalis::job::insert',
        json_build_object('job_type', n.job_type, 'id', n.id, 'run_at', n.run_at)::text
    )
    FROM (SELECT DISTINCT ON (job_type) job_type, id, run_at
          FROM new_jobs WHERE run_at <= now()
          ORDER BY job_type, run_at) n;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

DROP TRIGGER IF EXISTS notify_workers ON apalis.jobs;
CREATE TRIGGER notify_workers
AFTER INSERT ON apalis.jobs
REFERENCING NEW TABLE AS new_jobs
FOR EACH STATEMENT EXECUTE FUNCTION apalis.notify_new_jobs();
