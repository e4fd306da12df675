-- Every schedule, with the database's clock (the scheduler's one source of time).
SELECT s.*, extract(epoch FROM s.catch_up)::float8 AS catch_up_seconds, now() AS db_now
FROM __schema__.schedules AS s
ORDER BY s.name
