-- The results of the completed jobs among these ids (a job reads its dependencies').
SELECT id, result FROM __schema__.jobs WHERE id = ANY(%(ids)s::bigint[]) AND state = 'completed'
