-- Cancel one batch of the jobs matching the filters in the given states (_bulk_batch.sql);
-- called until a batch comes back short. Returns the count and the ids of jobs that were
-- running, whose nodes are then told to stop them.
WITH target AS (
    SELECT id, state
    __include_bulk_batch__
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
