-- Flag jobs that others now depend on (migration 0007).
UPDATE __schema__.jobs SET has_dependents = true
WHERE id = ANY(%(ids)s::bigint[]) AND NOT has_dependents
