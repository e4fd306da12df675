-- Take or renew the lease on a role (e.g. 'leader': scheduling and pruning) for `lease` seconds. The lease is
-- taken from another node only once it has expired, or once that node is gone (stopped,
-- or declared dead). A row comes back only to the node that holds the lease afterwards.
-- A row, not a session advisory lock: this works behind PgBouncer's transaction pooling.
INSERT INTO __schema__.leaders AS l (name, node_id, expires_at)
VALUES (%(name)s, %(node)s, now() + make_interval(secs => %(lease)s))
ON CONFLICT (name) DO UPDATE
SET node_id = EXCLUDED.node_id,
    elected_at = (CASE WHEN l.node_id = EXCLUDED.node_id THEN l.elected_at ELSE now() END),
    expires_at = EXCLUDED.expires_at
WHERE l.node_id = EXCLUDED.node_id
   OR l.expires_at < now()
   OR NOT EXISTS (SELECT 1 FROM __schema__.nodes AS n WHERE n.id = l.node_id)
RETURNING node_id
