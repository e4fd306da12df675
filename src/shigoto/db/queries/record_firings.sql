-- Claim moments of a schedule for firing. A moment is recorded once, ever: of two nodes
-- that both think they lead, only one gets it back, and only that one inserts its job.
INSERT INTO __schema__.schedule_firings (name, fire_at)
SELECT %(name)s, moment FROM unnest(%(moments)s::timestamptz[]) AS moment
ON CONFLICT DO NOTHING
RETURNING fire_at
