-- Many jobs in one statement. The jobs travel as one JSON array of objects (one parameter,
-- serialised in one call): far cheaper than one bound value per job and column. Ids are
-- drawn in the array's order. A job with a dependency not completed yet, or one on a job
-- of the same call (`waits`), starts out 'waiting'; its dependencies on jobs of the
-- same call are added by link_dependencies.sql, in the same transaction. A job's empty
-- args, meta and tags are left out of its object (store._job_document).
INSERT INTO __schema__.jobs
    (state, queue, worker, args, meta, tags, priority, max_attempts,
     scheduled_at, partition_key, origin, depends_on, on_dependency_failure)
SELECT
    (CASE WHEN j.waits THEN 'waiting'
          -- (IS NOT NULL first: AND stops at false, not at NULL, and the EXISTS must
          -- not run for the jobs without dependencies: nearly all of them)
          WHEN j.depends_on IS NOT NULL AND cardinality(j.depends_on) > 0
               AND EXISTS (SELECT 1 FROM __schema__.jobs AS d
                           WHERE d.id = ANY(j.depends_on) AND d.state <> 'completed')
              THEN 'waiting'
          WHEN j.scheduled_at > now() THEN 'scheduled'
          ELSE 'available' END)
        ::__schema__.job_state,
    j.queue, j.worker, COALESCE(j.args, '{}'), COALESCE(j.meta, '{}'), COALESCE(j.tags, '{}'),
    j.priority, j.max_attempts,
    COALESCE(j.scheduled_at, now()), j.partition_key, j.origin,
    COALESCE(j.depends_on, '{}'), COALESCE(j.on_dependency_failure, 'cancel')
FROM ROWS FROM (
    jsonb_to_recordset(%(jobs)s::jsonb) AS (
        queue text, worker text, args jsonb, meta jsonb, tags text[], priority smallint,
        max_attempts integer, scheduled_at timestamptz, partition_key text, origin text,
        depends_on bigint[], waits boolean, on_dependency_failure text
    )
) WITH ORDINALITY AS j(queue, worker, args, meta, tags, priority, max_attempts,
                       scheduled_at, partition_key, origin, depends_on, waits,
                       on_dependency_failure, position)
ORDER BY j.position
RETURNING id, state::text AS state, inserted_at, scheduled_at
