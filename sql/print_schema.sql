-- Run on a scratch database, freshly migrated, before `diesel print-schema`
-- (never on a real one: it takes the history's partitions off).
--
-- diesel prints only tables with a primary key, and the partitioned history
-- has none (PostgreSQL wants the partition key in a partitioned table's
-- primary key; each partition has its own on `id`). With its partitions
-- detached, the parent takes `PRIMARY KEY (id, operation_id)`; write the
-- printed key back as `(id)`, what src/schema.rs declares:
--
--   diesel migration run       # then, as it cannot print the schema:
--   psql "$DATABASE_URL" -f sql/print_schema.sql
--   diesel print-schema | sed 's/(id, operation_id)/(id)/' > src/schema.rs
DO $$
DECLARE
    part regclass;
BEGIN
    FOR part IN SELECT inhrelid::regclass FROM pg_catalog.pg_inherits
                WHERE inhparent = 'machine_state_transitions'::regclass LOOP
        EXECUTE format('ALTER TABLE machine_state_transitions DETACH PARTITION %s', part);
    END LOOP;
END
$$;
ALTER TABLE machine_state_transitions ADD PRIMARY KEY (id, operation_id);
