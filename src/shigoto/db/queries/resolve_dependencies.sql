-- Settle a batch of jobs waiting on dependencies, by what their dependencies
-- have become (committed states: this runs in a statement of its own, so two dependencies
-- finishing at once on two nodes are both seen):
-- * every dependency completed -> the job is released (available, or scheduled if its
--   time has not come);
-- * a dependency discarded or cancelled -> the job is cancelled, with an error naming
--   that dependency; unless it opted into on_dependency_failure = 'run', in which case it
--   is released once every dependency has finished, whatever the outcome.
-- A dependency no longer in the table (pruned long after it finished) counts as completed.
-- Cancelling a job may doom its own dependents: the caller runs this again until nothing
-- changes. Returns the queues of released jobs (to wake them) and how many changed.
WITH waiting AS (
    SELECT id, depends_on, on_dependency_failure FROM __schema__.jobs
    WHERE state = 'waiting'
    ORDER BY id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), verdict AS (
    SELECT w.id, w.on_dependency_failure AS policy,
           bool_and(d.state IS NULL OR d.state = 'completed') AS all_completed,
           bool_and(d.state IS NULL OR d.state IN ('completed', 'discarded', 'cancelled'))
               AS all_finished,
           min(d.id) FILTER (WHERE d.state IN ('discarded', 'cancelled')) AS failed_id,
           (array_agg(d.state::text ORDER BY d.id)
               FILTER (WHERE d.state IN ('discarded', 'cancelled')))[1] AS failed_state
    FROM waiting AS w
    LEFT JOIN __schema__.jobs AS d ON d.id = ANY(w.depends_on)
    GROUP BY w.id, w.on_dependency_failure
), released AS (
    UPDATE __schema__.jobs AS j
    SET state = (CASE WHEN j.scheduled_at > now() THEN 'scheduled' ELSE 'available' END)
        ::__schema__.job_state
    FROM verdict AS v
    WHERE j.id = v.id
      AND (v.all_completed OR (v.policy = 'run' AND v.all_finished))
    RETURNING j.queue
), doomed AS (
    UPDATE __schema__.jobs AS j
    SET state = 'cancelled', cancelled_at = now(),
        errors = j.errors || jsonb_build_array(jsonb_build_object(
            'attempt', j.attempt,
            'at', now(),
            'error', 'DependencyFailed',
            'message', format('dependency %%s was %%s', v.failed_id, v.failed_state),
            'traceback', NULL))
    FROM verdict AS v
    WHERE j.id = v.id AND v.failed_id IS NOT NULL AND v.policy = 'cancel'
    RETURNING j.id,
        (CASE WHEN j.awaited THEN pg_notify('__schema__.jobs_finished', j.id::text) END)::text
            AS announced
)
SELECT (SELECT count(*) FROM released) + (SELECT count(*) FROM doomed) AS changed,
       (SELECT coalesce(array_agg(DISTINCT queue), '{}') FROM released) AS queues,
       (SELECT count(*) FROM waiting) AS looked_at
