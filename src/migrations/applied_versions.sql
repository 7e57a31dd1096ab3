-- The versions of the applied migrations (see export.rs).
SELECT version::text AS version FROM __diesel_schema_migrations
