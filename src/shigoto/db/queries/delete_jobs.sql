-- Delete one batch of the jobs matching the filters (NULL = no filter) in the given states;
-- called until a batch comes back short (see cancel_jobs.sql).
DELETE FROM __schema__.jobs
WHERE id = ANY(ARRAY(
    SELECT id FROM __schema__.jobs
    WHERE state = ANY(%(states)s::__schema__.job_state[])
      AND __include_job_filter__
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
))
