-- Cancel every job matching the filters (NULL = no filter) in the given states.
UPDATE __schema__.jobs
SET state = 'cancelled', cancelled_at = now()
WHERE state = ANY(%(states)s::__schema__.job_state[])
  AND (%(queues)s::text[] IS NULL OR queue = ANY(%(queues)s::text[]))
  AND (%(workers)s::text[] IS NULL OR worker = ANY(%(workers)s::text[]))
  AND (%(tags)s::text[] IS NULL OR tags @> %(tags)s::text[])
