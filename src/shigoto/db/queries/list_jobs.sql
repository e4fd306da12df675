-- Newest first, keyset-paginated by id; every filter is optional (NULL = no filter).
SELECT * FROM __schema__.jobs
WHERE (%(states)s::__schema__.job_state[] IS NULL OR state = ANY(%(states)s::__schema__.job_state[]))
  AND __include_job_filter__
  AND (%(before_id)s::bigint IS NULL OR id < %(before_id)s::bigint)
ORDER BY id DESC
LIMIT %(limit)s
