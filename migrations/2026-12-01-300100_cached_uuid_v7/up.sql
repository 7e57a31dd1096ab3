-- `machine_state_private.uuid_v7()` (the SQL function's default operation
-- id) as plpgsql. As a `LANGUAGE sql` function with a `SET search_path`
-- clause it cannot be inlined, and PostgreSQL 15 plans its body again on
-- every call: `cargo bench --bench compare` measured (with
-- `pg_stat_statements.track = all`) 49 µs of execution and 35 µs of planning
-- per transition for it, more than any statement of `machine_state_transition`
-- but the history insert. plpgsql evaluates the same expression with a plan
-- cached for the session. Same name, arguments, result and grants (CREATE OR
-- REPLACE keeps them).
CREATE OR REPLACE FUNCTION machine_state_private.uuid_v7() RETURNS uuid
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    RETURN encode(
        set_bit(set_bit(
            overlay(uuid_send(gen_random_uuid())
                    PLACING substring(int8send(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint)
                                      FROM 3)
                    FROM 1 FOR 6),
            52, 1), 53, 1),
        'hex')::uuid;
END
$fn$;
