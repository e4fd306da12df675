INSERT INTO __schema__.migrations (version, name) VALUES (%(version)s, %(name)s)
