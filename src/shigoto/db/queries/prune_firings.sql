-- Firings older than every catch-up window are no longer needed as a guard.
DELETE FROM __schema__.schedule_firings
WHERE fire_at < now() - make_interval(secs => %(keep)s)
