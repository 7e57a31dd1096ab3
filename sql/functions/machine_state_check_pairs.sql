-- The current definition of machine_state_check_pairs, as the migrations leave it
-- (`pg_get_functiondef`, PostgreSQL 15). Generated: do not edit; change it
-- with a new migration, then regenerate this file with
--   MACHINE_STATE_BLESS=1 cargo test --test integration -- schema::

CREATE OR REPLACE FUNCTION public.machine_state_check_pairs(p_touched uuid[], p_operation text, p_table text)
 RETURNS void
 LANGUAGE plpgsql
 STABLE
 SET search_path TO 'pg_catalog', 'public', 'pg_temp'
AS $function$
DECLARE
    v_id uuid;
    m machines;
    s machine_state;
    broken text[];
BEGIN
    FOREACH v_id IN ARRAY p_touched LOOP
        SELECT * INTO m FROM machines WHERE id = v_id;
        CONTINUE WHEN NOT FOUND;  -- deleted in this transaction: nothing left to disagree
        SELECT * INTO s FROM machine_state WHERE machine_state.machine_id = v_id;
        broken := machine_state_pair_violations(m, s);
        IF cardinality(broken) > 0 THEN
            RAISE EXCEPTION USING ERRCODE = 'MS007',
                MESSAGE = format('machine `%s` would be left inconsistent: %s',
                                 m.id, array_to_string(broken, '; ')),
                DETAIL = format('checked at commit, after %s on `%s`', p_operation, p_table),
                HINT = 'write `machines` and `machine_state` in one transaction (or call '
                       '`machine_state_transition`); the two rows must agree when it commits';
        END IF;
    END LOOP;
END
$function$;

COMMENT ON FUNCTION public.machine_state_check_pairs(p_touched uuid[], p_operation text, p_table text) IS 'Checks the pairs of the machines `p_touched` that the statement `p_operation` on `p_table` wrote, at COMMIT; raises MS007 naming the machine and what it breaks. Called by the trigger functions `machine_state_check_machines_pair` and `machine_state_check_machine_state_pair`.';
