SELECT name FROM __schema__.queues WHERE paused ORDER BY name
