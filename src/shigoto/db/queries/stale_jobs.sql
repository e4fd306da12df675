-- Jobs executing on a node that is dead: its row is gone, or its heartbeat is older than
-- `node_timeout`. A live node's lifeline rescues such jobs within a heartbeat or two, so
-- finding some means no node is running, or none can reach the database to rescue them.
-- Returns how many, the age of the oldest claim among them, and the first ids.
SELECT count(*) AS stale,
       EXTRACT(EPOCH FROM now() - min(j.attempted_at))::double precision AS oldest_age,
       coalesce((array_agg(j.id ORDER BY j.id))[1:10], '{}') AS sample
FROM __schema__.jobs AS j
LEFT JOIN __schema__.nodes AS n ON n.id = j.attempted_by
WHERE j.state = 'executing'
  AND (n.id IS NULL OR n.heartbeat_at < now() - make_interval(secs => %(node_timeout)s))
