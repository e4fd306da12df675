-- Write a batch of outcomes in one statement. Each applies only while its job is still
-- executing, owned by this node, in the same attempt (decision D4): a cancel or a rescue
-- that happened meanwhile is never overwritten. Returns the ids that were written.
WITH outcome AS (
    SELECT * FROM jsonb_to_recordset(%(outcomes)s::jsonb) AS o(
        id bigint, attempt integer, state text, refund boolean,
        delay double precision, result jsonb, error jsonb
    )
)
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
RETURNING j.id
