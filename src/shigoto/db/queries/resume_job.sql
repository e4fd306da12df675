-- Resume a paused job: available again (or scheduled, if its time has not come), and its
-- queue woken.
UPDATE __schema__.jobs
SET state = (CASE WHEN scheduled_at > now() THEN 'scheduled' ELSE 'available' END)
    ::__schema__.job_state
WHERE id = %(id)s AND state = 'paused'
RETURNING id, pg_notify('__schema__.jobs_inserted', queue)::text AS notified
