-- One job, the common single insert: no dependencies, no unique key (insert_jobs.sql and
-- insert_unique_job.sql take those). Bound values rather than insert_jobs' JSON document:
-- PostgreSQL does a fifth less work for it (callgrind: 370,000 instructions per insert
-- against 454,000), which is most of what a single insert costs beyond a bare INSERT.
-- Empty args, meta and tags come as NULL (cheaper to send). Only id and inserted_at come
-- back: the state follows from them, since inserted_at is the now() the CASE compares
-- with (store._inserted_job).
INSERT INTO __schema__.jobs
    (state, queue, worker, args, meta, tags, priority, max_attempts,
     scheduled_at, partition_key, origin)
VALUES (
    (CASE WHEN %(scheduled_at)s::timestamptz > now() THEN 'scheduled' ELSE 'available' END)
        ::__schema__.job_state,
    %(queue)s, %(worker)s,
    COALESCE(%(args)s::jsonb, '{}'), COALESCE(%(meta)s::jsonb, '{}'),
    COALESCE(%(tags)s::text[], '{}'),
    %(priority)s, %(max_attempts)s,
    COALESCE(%(scheduled_at)s::timestamptz, now()), %(partition_key)s, %(origin)s
)
RETURNING id, inserted_at
