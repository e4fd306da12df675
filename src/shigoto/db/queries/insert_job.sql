-- One job. A job whose scheduled_at is in the future starts out 'scheduled'.
INSERT INTO __schema__.jobs
    (state, queue, worker, args, meta, tags, priority, max_attempts,
     scheduled_at, partition_key, origin)
VALUES (
    (CASE WHEN %(scheduled_at)s::timestamptz > now() THEN 'scheduled' ELSE 'available' END)
        ::__schema__.job_state,
    %(queue)s, %(worker)s, %(args)s, %(meta)s, %(tags)s::text[], %(priority)s, %(max_attempts)s,
    COALESCE(%(scheduled_at)s::timestamptz, now()), %(partition_key)s, %(origin)s
)
RETURNING id, state::text AS state, inserted_at, scheduled_at
