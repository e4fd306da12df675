-- Which of these ids name no job (a dependency must exist when it is named).
SELECT coalesce(array_agg(wanted), '{}') AS missing
FROM unnest(%(ids)s::bigint[]) AS wanted
WHERE NOT EXISTS (SELECT 1 FROM __schema__.jobs AS j WHERE j.id = wanted)
