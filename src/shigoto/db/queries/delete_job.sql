-- A running job is not deleted under its worker's feet: cancel it first.
DELETE FROM __schema__.jobs WHERE id = %(id)s AND state <> 'executing' RETURNING id
