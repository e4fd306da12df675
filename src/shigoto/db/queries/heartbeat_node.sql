-- Empty result: this node was declared dead (its row deleted by a rescue).
UPDATE __schema__.nodes SET heartbeat_at = now(), queues = %(queues)s
WHERE id = %(id)s
RETURNING id
