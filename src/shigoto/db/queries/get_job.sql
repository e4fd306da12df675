SELECT * FROM __schema__.jobs WHERE id = %(id)s
