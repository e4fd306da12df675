-- Delete one batch of the jobs matching the filters in the given states (_bulk_batch.sql);
-- called until a batch comes back short.
DELETE FROM __schema__.jobs
WHERE id = ANY(ARRAY(
    SELECT id
    __include_bulk_batch__
))
