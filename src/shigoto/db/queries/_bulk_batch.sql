-- One batch of a bulk admin call (cancel_jobs, retry_jobs, delete_jobs), after its SELECT
-- list: the jobs matching the filters (NULL = no filter) in the given states, at most
-- `limit` of them, so that no statement holds many locks for long. Rows locked by someone
-- else at that instant are skipped (a node claiming them, say).
FROM __schema__.jobs
WHERE state = ANY(%(states)s::__schema__.job_state[])
  AND __include_job_filter__
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED
