-- Job counts by queue and state, with the age of each queue's oldest available job.
SELECT queue, state::text AS state, count(*) AS count,
       EXTRACT(EPOCH FROM now() - min(scheduled_at) FILTER (WHERE state = 'available'))
           ::double precision AS oldest_available_age
FROM __schema__.jobs
GROUP BY queue, state
ORDER BY queue, state
