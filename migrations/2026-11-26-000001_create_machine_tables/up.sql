-- The two tables that describe a machine. Users adopting the crate already have
-- them (with more columns than ours), so each is created only where missing, and
-- a missing column of ours is added to an existing table. What this migration
-- creates is written down in `machine_state_adopted_objects`, so that down.sql
-- removes exactly that and never a table or column the legacy system owns.

CREATE TABLE machine_state_adopted_objects (
    table_name text NOT NULL,
    column_name text NOT NULL DEFAULT '', -- '' means the whole table
    PRIMARY KEY (table_name, column_name)
);

CREATE FUNCTION pg_temp.adopt_table(p_table text, p_definition text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF to_regclass(p_table) IS NULL THEN
        EXECUTE format('CREATE TABLE %I (%s)', p_table, p_definition);
        INSERT INTO machine_state_adopted_objects (table_name) VALUES (p_table);
    END IF;
END
$$;

CREATE FUNCTION pg_temp.adopt_column(p_table text, p_column text, p_definition text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_attribute
        WHERE attrelid = to_regclass(p_table) AND attname = p_column AND NOT attisdropped
    ) THEN
        EXECUTE format('ALTER TABLE %I ADD COLUMN %I %s', p_table, p_column, p_definition);
        INSERT INTO machine_state_adopted_objects (table_name, column_name) VALUES (p_table, p_column);
    END IF;
END
$$;

SELECT pg_temp.adopt_table('machines', $$
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    status text NOT NULL DEFAULT 'offline',
    current_process_id uuid,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
$$);
SELECT pg_temp.adopt_column('machines', 'current_process_id', 'uuid');
SELECT pg_temp.adopt_column('machines', 'created_at', 'timestamptz NOT NULL DEFAULT now()');
SELECT pg_temp.adopt_column('machines', 'updated_at', 'timestamptz NOT NULL DEFAULT now()');

SELECT pg_temp.adopt_table('machine_state', $$
    machine_id uuid PRIMARY KEY REFERENCES machines (id) ON DELETE CASCADE,
    current_state text NOT NULL,
    state_since timestamptz NOT NULL DEFAULT now(),
    process_id uuid,
    is_failure_mode boolean NOT NULL DEFAULT false,
    failure_component text,
    failure_description text,
    updated_at timestamptz NOT NULL DEFAULT now()
$$);
SELECT pg_temp.adopt_column('machine_state', 'state_since', 'timestamptz NOT NULL DEFAULT now()');
SELECT pg_temp.adopt_column('machine_state', 'process_id', 'uuid');
SELECT pg_temp.adopt_column('machine_state', 'is_failure_mode', 'boolean NOT NULL DEFAULT false');
SELECT pg_temp.adopt_column('machine_state', 'failure_component', 'text');
SELECT pg_temp.adopt_column('machine_state', 'failure_description', 'text');
SELECT pg_temp.adopt_column('machine_state', 'updated_at', 'timestamptz NOT NULL DEFAULT now()');

DROP FUNCTION pg_temp.adopt_table(text, text);
DROP FUNCTION pg_temp.adopt_column(text, text, text);
