-- retry_job.sql for every job matching the filters (NULL = no filter) in the given states.
UPDATE __schema__.jobs
SET state = 'available', scheduled_at = now(),
    max_attempts = GREATEST(max_attempts, attempt + 1),
    completed_at = NULL, discarded_at = NULL, cancelled_at = NULL
WHERE state = ANY(%(states)s::__schema__.job_state[])
  AND (%(queues)s::text[] IS NULL OR queue = ANY(%(queues)s::text[]))
  AND (%(workers)s::text[] IS NULL OR worker = ANY(%(workers)s::text[]))
  AND (%(tags)s::text[] IS NULL OR tags @> %(tags)s::text[])
