-- The queue table turns over every row it holds once per delivery: each job is inserted, claimed
-- (a new row version) and deleted, so it gathers two dead versions per delivery, and each claim's
-- index scan walks the dead entries ahead of the first pending job until a vacuum removes them.
-- Autovacuum's defaults wait for dead rows to reach a fifth of the table and then throttle the
-- vacuum (2 ms of sleep per 200 units of cost), tuned for large tables that change slowly. For
-- this one: due at 10,000 dead rows whatever its size, and never throttled (the table holds at
-- most a backlog, so an unthrottled vacuum takes tens of milliseconds). Autovacuum still visits
-- a database only once per `autovacuum_naptime` (a server setting), so the workers also vacuum
-- the table themselves between visits (worker/src/vacuum.rs).
ALTER TABLE apalis.jobs SET (
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 10000,
    autovacuum_vacuum_cost_delay = 0
);
