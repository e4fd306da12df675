-- How many dead row versions `jobs` holds and how many live rows (from the statistics
-- PostgreSQL keeps, current to about a second), and whether this role may VACUUM it: as
-- its owner, a member of the owning role or a superuser.
SELECT s.n_dead_tup AS dead, s.n_live_tup AS live,
       pg_has_role(c.relowner, 'USAGE') AS may_vacuum
FROM pg_class AS c
JOIN pg_stat_user_tables AS s ON s.relid = c.oid
WHERE c.oid = '__schema__.jobs'::regclass
