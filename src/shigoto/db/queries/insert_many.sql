-- Many jobs that differ only in their args (app.insert_many): everything else is bound
-- once, the args travel as one JSON array. Ids are drawn in the array's order, and only
-- they come back: the quickest way to insert many jobs.
INSERT INTO __schema__.jobs
    (state, queue, worker, args, meta, tags, priority, max_attempts,
     scheduled_at, partition_key, origin)
SELECT
    (CASE WHEN %(scheduled_at)s::timestamptz > now() THEN 'scheduled' ELSE 'available' END)
        ::__schema__.job_state,
    %(queue)s, %(worker)s, a.args, COALESCE(%(meta)s::jsonb, '{}'),
    COALESCE(%(tags)s::text[], '{}'), %(priority)s,
    %(max_attempts)s, COALESCE(%(scheduled_at)s::timestamptz, now()), %(partition_key)s,
    %(origin)s
FROM jsonb_array_elements(%(args)s::jsonb) WITH ORDINALITY AS a(args, position)
ORDER BY a.position
RETURNING id
