-- One job. A job with a dependency not completed yet starts out 'waiting' (D6); one whose
-- scheduled_at is in the future, 'scheduled'.
INSERT INTO __schema__.jobs
    (state, queue, worker, args, meta, tags, priority, max_attempts,
     scheduled_at, partition_key, origin, depends_on, on_dependency_failure)
VALUES (
    (CASE WHEN cardinality(%(depends_on)s::bigint[]) > 0
               AND EXISTS (SELECT 1 FROM __schema__.jobs AS d
                       WHERE d.id = ANY(%(depends_on)s::bigint[]) AND d.state <> 'completed')
              THEN 'waiting'
          WHEN %(scheduled_at)s::timestamptz > now() THEN 'scheduled'
          ELSE 'available' END)
        ::__schema__.job_state,
    %(queue)s, %(worker)s, %(args)s, %(meta)s, %(tags)s::text[], %(priority)s, %(max_attempts)s,
    COALESCE(%(scheduled_at)s::timestamptz, now()), %(partition_key)s, %(origin)s,
    %(depends_on)s::bigint[], %(on_dependency_failure)s
)
RETURNING id, state::text AS state, inserted_at, scheduled_at, depends_on
