-- Create a schedule, or change its definition; its firing history (last_fired_at) stays, so
-- redeclaring an entry at every start never fires a moment again.
INSERT INTO __schema__.schedules AS s
    (name, kind, expression, timezone, worker, args, options, catch_up, catch_up_policy,
     next_fire_at)
VALUES
    (%(name)s, %(kind)s, %(expression)s, %(timezone)s, %(worker)s, %(args)s, %(options)s,
     make_interval(secs => %(catch_up)s), %(catch_up_policy)s, %(next_fire_at)s)
ON CONFLICT (name) DO UPDATE
SET kind = EXCLUDED.kind,
    expression = EXCLUDED.expression,
    timezone = EXCLUDED.timezone,
    worker = EXCLUDED.worker,
    args = EXCLUDED.args,
    options = EXCLUDED.options,
    catch_up = EXCLUDED.catch_up,
    catch_up_policy = EXCLUDED.catch_up_policy,
    next_fire_at = EXCLUDED.next_fire_at,
    updated_at = now()
RETURNING *
