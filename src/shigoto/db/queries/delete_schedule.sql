DELETE FROM __schema__.schedules WHERE name = %(name)s RETURNING name
