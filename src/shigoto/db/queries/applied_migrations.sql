SELECT version FROM __schema__.migrations ORDER BY version
