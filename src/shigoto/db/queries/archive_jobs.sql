-- Move one batch of jobs finished more than `older_than` seconds ago to the archive
-- (by the time they finished, not when they were inserted). A short
-- transaction per batch; rows someone holds are skipped and taken next time.
WITH moved AS (
    DELETE FROM __schema__.jobs
    WHERE id = ANY(ARRAY(
        SELECT id FROM __schema__.jobs
        WHERE state IN ('completed', 'discarded', 'cancelled')
          AND COALESCE(completed_at, discarded_at, cancelled_at)
              < now() - make_interval(secs => %(older_than)s)
        LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED
    ))
    RETURNING *
)
INSERT INTO __schema__.jobs_archive (
    id, state, queue, worker, args, meta, tags, priority, attempt, max_attempts, errors,
    result, progress, inserted_at, scheduled_at, attempted_at, completed_at,
    cancelled_at, discarded_at, attempted_by, heartbeat_at, unique_key, partition_key,
    batch_id, depends_on, parent_id, origin, awaited, on_dependency_failure,
    has_dependents
)
SELECT
    id, state, queue, worker, args, meta, tags, priority, attempt, max_attempts, errors,
    result, progress, inserted_at, scheduled_at, attempted_at, completed_at,
    cancelled_at, discarded_at, attempted_by, heartbeat_at, unique_key, partition_key,
    batch_id, depends_on, parent_id, origin, awaited, on_dependency_failure,
    has_dependents
FROM moved
