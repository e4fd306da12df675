-- Give up a role on the way out, so that another node takes it at once.
DELETE FROM __schema__.leaders WHERE name = %(name)s AND node_id = %(node)s
