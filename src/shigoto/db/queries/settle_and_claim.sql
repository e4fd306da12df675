-- The runtime's one statement: write a batch of outcomes, then claim up to `limit` jobs of
-- a queue for this node; one round trip and one commit for both. The acker uses it with a
-- limit of 0 (outcomes only), a producer with the outcomes waiting when it claims.
--
-- An outcome applies only while its job is still executing, owned by this node, in the
-- same attempt: a cancel or a rescue that happened meanwhile is never
-- overwritten.
--
-- Which jobs the claim takes is spliced in from pick_jobs.sql (priority order) or
-- pick_jobs_fair.sql (round-robin across partitions). The claim is the attempt (a run
-- counts from its claim) and sets the owner. `id = ANY(ARRAY(...))` keeps the update on the primary key
-- whatever the planner guesses for a parameterised LIMIT (a join here degrades to a scan
-- of the table under a generic plan, which prepared statements get).
--
-- One row per claimed job, each carrying the ids of the outcomes written (`acked`); a
-- single row of NULL job columns when nothing was claimed. The job columns are the fields
-- of the `Job` class, in their order (`__job_columns__`): a row becomes a Job by position.
-- Finished jobs that someone waits for are announced on `jobs_finished` (migration 0004).
WITH outcome AS (
    SELECT * FROM jsonb_to_recordset(%(outcomes)s::jsonb) AS o(
        id bigint, attempt integer, state text, refund boolean,
        delay double precision, result jsonb, error jsonb
    )
), settled AS (
    UPDATE __schema__.jobs AS j
    SET state = o.state::__schema__.job_state,
        attempt = j.attempt - (CASE WHEN o.refund THEN 1 ELSE 0 END),
        scheduled_at = (CASE WHEN o.delay IS NULL THEN j.scheduled_at
                             ELSE now() + make_interval(secs => o.delay) END),
        completed_at = (CASE WHEN o.state = 'completed' THEN now() END),
        discarded_at = (CASE WHEN o.state = 'discarded' THEN now() END),
        cancelled_at = (CASE WHEN o.state = 'cancelled' THEN now() END),
        result = (CASE WHEN o.state = 'completed' THEN o.result ELSE j.result END),
        progress = (CASE WHEN o.state = 'completed' THEN 100 ELSE j.progress END),
        errors = (CASE WHEN o.error IS NULL THEN j.errors
                       ELSE j.errors || jsonb_build_array(o.error) END)
    FROM outcome AS o
    WHERE j.id = o.id
      AND j.state = 'executing'
      AND j.attempted_by = %(node)s
      AND j.attempt = o.attempt
    RETURNING j.id, j.state, j.awaited, j.has_dependents, j.batch_id
), claimed AS (
    UPDATE __schema__.jobs AS j
    SET state = 'executing', attempt = j.attempt + 1, attempted_at = now(),
        attempted_by = %(node)s, heartbeat_at = now()
    WHERE j.id = ANY(ARRAY(
__pick__
    ))
    RETURNING __job_columns__
)
SELECT s.acked, s.announced,
       s.follow_up,
       c.*
FROM (
    SELECT COALESCE(array_agg(id), '{}') AS acked,
           -- Jobs someone waits for (app.wait_for): say they finished.
           count(pg_notify('__schema__.jobs_finished', id::text))
               FILTER (WHERE awaited AND state IN ('completed', 'discarded', 'cancelled'))
               AS announced,
           -- A job finished that others depend on or that ends a batch: the node
           -- then looks at those at once, not at its stager's next pass.
           bool_or(state IN ('completed', 'discarded', 'cancelled')
                   AND (has_dependents OR batch_id IS NOT NULL)) IS TRUE AS follow_up
    FROM settled
) AS s
LEFT JOIN claimed AS c ON true
