-- Remove exactly what up.sql created: tables it created are dropped whole,
-- columns it added to a legacy table are dropped, everything else stays.

DO $$
DECLARE
    adopted record;
BEGIN
    FOR adopted IN
        SELECT table_name, column_name FROM machine_state_adopted_objects
        WHERE column_name <> ''
    LOOP
        EXECUTE format('ALTER TABLE %I DROP COLUMN %I', adopted.table_name, adopted.column_name);
    END LOOP;
    IF EXISTS (SELECT 1 FROM machine_state_adopted_objects
               WHERE table_name = 'machine_state' AND column_name = '') THEN
        DROP TABLE machine_state;
    END IF;
    IF EXISTS (SELECT 1 FROM machine_state_adopted_objects
               WHERE table_name = 'machines' AND column_name = '') THEN
        DROP TABLE machines;
    END IF;
END
$$;

DROP TABLE machine_state_adopted_objects;
