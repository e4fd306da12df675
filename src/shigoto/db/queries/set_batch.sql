-- Attach jobs just inserted to their batch.
UPDATE __schema__.jobs SET batch_id = %(batch)s WHERE id = ANY(%(ids)s::bigint[])
