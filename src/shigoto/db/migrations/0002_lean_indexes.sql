-- A job's row gets a new version at every change of state (insert, claim, outcome), and a
-- change of state is never a HOT update: every full index of the table gets an entry each
-- time. Keep only the indexes the hot path needs as full ones; the rest cost nothing for
-- the jobs they do not concern. (Measured: see docs/performance.md.)
DROP INDEX __schema__.jobs_queue_state_idx;   -- status() counts with a scan instead
DROP INDEX __schema__.jobs_worker_idx;        -- listing by worker walks the primary key
DROP INDEX __schema__.jobs_tags_idx;
CREATE INDEX jobs_tags_idx ON __schema__.jobs USING gin (tags) WHERE tags <> '{}';
