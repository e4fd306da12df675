-- Newest first, keyset-paginated by id; every filter is optional (NULL = no filter).
SELECT * FROM __schema__.jobs
WHERE (%(states)s::__schema__.job_state[] IS NULL OR state = ANY(%(states)s::__schema__.job_state[]))
  AND (%(queues)s::text[] IS NULL OR queue = ANY(%(queues)s::text[]))
  AND (%(workers)s::text[] IS NULL OR worker = ANY(%(workers)s::text[]))
  AND (%(tags)s::text[] IS NULL OR tags @> %(tags)s::text[])
  AND (%(since)s::timestamptz IS NULL OR inserted_at >= %(since)s::timestamptz)
  AND (%(until)s::timestamptz IS NULL OR inserted_at < %(until)s::timestamptz)
  AND (%(before_id)s::bigint IS NULL OR id < %(before_id)s::bigint)
ORDER BY id DESC
LIMIT %(limit)s
