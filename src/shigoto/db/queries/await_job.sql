-- Mark a job as waited for (see migration 0004) and return it as it is now.
UPDATE __schema__.jobs SET awaited = true WHERE id = %(id)s RETURNING *
