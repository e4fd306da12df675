-- The filters of the admin calls (JobFilter.params; NULL = no filter), one expression,
-- spliced into list_jobs and _bulk_batch (cancel_jobs, retry_jobs, delete_jobs; see
-- queries.py).
((%(queues)s::text[] IS NULL OR queue = ANY(%(queues)s::text[]))
 AND (%(workers)s::text[] IS NULL OR worker = ANY(%(workers)s::text[]))
 AND (%(tags)s::text[] IS NULL OR tags @> %(tags)s::text[])
 AND (%(since)s::timestamptz IS NULL OR inserted_at >= %(since)s::timestamptz)
 AND (%(until)s::timestamptz IS NULL OR inserted_at < %(until)s::timestamptz))
