-- A signal to every node (cancel a running job, scale a queue, probe the listener).
SELECT pg_notify('__schema__.control', %(payload)s)
