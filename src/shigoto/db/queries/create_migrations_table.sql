CREATE SCHEMA IF NOT EXISTS __schema__;
CREATE TABLE IF NOT EXISTS __schema__.migrations (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)
