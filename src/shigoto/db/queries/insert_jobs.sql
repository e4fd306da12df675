-- Many jobs in one statement. The jobs travel as one JSON array of objects (one parameter,
-- serialised in one call): far cheaper than one bound value per job and column. Ids are
-- drawn in the array's order.
INSERT INTO __schema__.jobs
    (state, queue, worker, args, meta, tags, priority, max_attempts,
     scheduled_at, partition_key, origin)
SELECT
    (CASE WHEN j.scheduled_at > now() THEN 'scheduled' ELSE 'available' END)
        ::__schema__.job_state,
    j.queue, j.worker, j.args, j.meta, j.tags, j.priority, j.max_attempts,
    COALESCE(j.scheduled_at, now()), j.partition_key, j.origin
FROM ROWS FROM (
    jsonb_to_recordset(%(jobs)s::jsonb) AS (
        queue text, worker text, args jsonb, meta jsonb, tags text[], priority smallint,
        max_attempts integer, scheduled_at timestamptz, partition_key text, origin text
    )
) WITH ORDINALITY AS j(queue, worker, args, meta, tags, priority, max_attempts,
                       scheduled_at, partition_key, origin, position)
ORDER BY j.position
RETURNING id, state::text AS state, inserted_at, scheduled_at
