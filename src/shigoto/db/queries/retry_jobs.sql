-- retry_job.sql for one batch of the jobs matching the filters (NULL = no filter) in the
-- given states; called until a batch comes back short (see cancel_jobs.sql).
UPDATE __schema__.jobs
SET state = 'available', scheduled_at = now(),
    max_attempts = GREATEST(max_attempts, attempt + 1),
    completed_at = NULL, discarded_at = NULL, cancelled_at = NULL
WHERE id = ANY(ARRAY(
    SELECT id FROM __schema__.jobs
    WHERE state = ANY(%(states)s::__schema__.job_state[])
      AND __include_job_filter__
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
))
