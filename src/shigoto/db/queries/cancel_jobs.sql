-- Cancel one batch of the jobs matching the filters (NULL = no filter) in the given states;
-- called until a batch comes back short, so no statement holds many locks for long. Rows
-- locked by someone else at that instant are skipped (a node claiming them, say). Returns
-- the count and the ids of jobs that were running, whose nodes are then told to stop them.
WITH target AS (
    SELECT id, state FROM __schema__.jobs
    WHERE state = ANY(%(states)s::__schema__.job_state[])
      AND __include_job_filter__
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), cancelled AS (
    UPDATE __schema__.jobs AS j
    SET state = 'cancelled', cancelled_at = now()
    FROM target
    WHERE j.id = target.id
    RETURNING j.id, target.state AS previous_state,
        (CASE WHEN j.awaited THEN pg_notify('__schema__.jobs_finished', j.id::text) END)::text
            AS announced
)
SELECT count(*) AS count,
       coalesce(array_agg(id) FILTER (WHERE previous_state = 'executing'), '{}') AS executing
FROM cancelled
