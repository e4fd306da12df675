-- Declare nodes dead when their heartbeat is older than `node_timeout`, and rescue the jobs
-- they held: back to available, or discarded when out of attempts. A crash consumes the
-- attempt; each rescued job records why in its errors. Jobs of live nodes
-- are never touched, and a node never rescues itself (its own jobs may only be waiting for
-- their outcomes to be written). Returns the rescued jobs.
WITH dead AS (
    DELETE FROM __schema__.nodes
    WHERE heartbeat_at < now() - make_interval(secs => %(node_timeout)s)
      AND id <> %(node)s
    RETURNING id
), orphaned AS (
    SELECT j.id FROM __schema__.jobs AS j
    WHERE j.state = 'executing'
      AND j.attempted_by IS DISTINCT FROM %(node)s
      AND (j.attempted_by IN (SELECT id FROM dead)
           OR NOT EXISTS (SELECT 1 FROM __schema__.nodes AS n WHERE n.id = j.attempted_by))
    FOR UPDATE SKIP LOCKED
)
UPDATE __schema__.jobs AS j
SET state = (CASE WHEN j.attempt >= j.max_attempts THEN 'discarded' ELSE 'available' END)
        ::__schema__.job_state,
    discarded_at = (CASE WHEN j.attempt >= j.max_attempts THEN now() END),
    errors = j.errors || jsonb_build_array(jsonb_build_object(
        'attempt', j.attempt,
        'at', now(),
        'error', 'NodeLost',
        'message', format('node %%s stopped heartbeating while running this job; rescued by %%s',
                          coalesce(j.attempted_by, '(none)'), %(node)s::text),
        'traceback', NULL))
FROM orphaned
WHERE j.id = orphaned.id
RETURNING j.*,
    (CASE WHEN j.awaited AND j.state = 'discarded'
          THEN pg_notify('__schema__.jobs_finished', j.id::text) END)::text AS announced
