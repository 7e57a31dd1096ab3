-- The current definition of machine_state_transitions_link, as the migrations leave it
-- (`pg_get_functiondef`, PostgreSQL 15). Generated: do not edit; change it
-- with a new migration, then regenerate this file with
--   MACHINE_STATE_BLESS=1 cargo test --test integration -- schema::

CREATE OR REPLACE FUNCTION public.machine_state_transitions_link()
 RETURNS trigger
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'public', 'pg_temp'
AS $function$
DECLARE
    v_head uuid;
BEGIN
    SELECT history_head INTO v_head FROM machine_state
    WHERE machine_id = NEW.machine_id FOR UPDATE;
    -- No state row (a repair writes it first; a legacy writer may not): the
    -- entry starts a chain. An entry that is already the head is one the
    -- retention moves, links and all.
    IF NOT FOUND OR v_head IS NOT DISTINCT FROM NEW.operation_id THEN
        RETURN NEW;
    END IF;
    NEW.previous_operation_id := v_head;
    UPDATE machine_state SET history_head = NEW.operation_id WHERE machine_id = NEW.machine_id;
    RETURN NEW;
END
$function$;

COMMENT ON FUNCTION public.machine_state_transitions_link() IS 'Trigger function of `machine_state_transitions_link` (BEFORE INSERT on `machine_state_transitions`, whoever writes): links the entry to the machine''s previous one (`previous_operation_id`) and makes it `machine_state.history_head`, under the `machine_state` row''s lock. Raises nothing of its own.';
