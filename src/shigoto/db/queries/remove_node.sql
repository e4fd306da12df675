DELETE FROM __schema__.nodes WHERE id = %(id)s
