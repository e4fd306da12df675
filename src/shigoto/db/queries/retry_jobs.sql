-- retry_job.sql for one batch of the jobs matching the filters in the given states
-- (_bulk_batch.sql); called until a batch comes back short.
UPDATE __schema__.jobs
SET state = 'available', scheduled_at = now(),
    max_attempts = GREATEST(max_attempts, attempt + 1),
    completed_at = NULL, discarded_at = NULL, cancelled_at = NULL
WHERE id = ANY(ARRAY(
    SELECT id
    __include_bulk_batch__
))
