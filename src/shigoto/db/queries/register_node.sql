-- A node announces itself before it claims anything; rescue trusts this row.
INSERT INTO __schema__.nodes (id, host, pid, queues, meta)
VALUES (%(id)s, %(host)s, %(pid)s, %(queues)s, %(meta)s)
ON CONFLICT (id) DO UPDATE
SET heartbeat_at = now(), queues = EXCLUDED.queues, meta = EXCLUDED.meta
