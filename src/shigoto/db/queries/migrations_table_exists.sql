SELECT to_regclass('__schema__.migrations') IS NOT NULL AS present
