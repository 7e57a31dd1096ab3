-- Whether diesel's bookkeeping table exists (see runner.rs).
SELECT to_regclass('__diesel_schema_migrations') IS NOT NULL AS exists
