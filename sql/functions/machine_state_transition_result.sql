-- The current definition of machine_state_transition_result, as the migrations leave it
-- (`pg_get_functiondef`, PostgreSQL 15). Generated: do not edit; change it
-- with a new migration, then regenerate this file with
--   MACHINE_STATE_BLESS=1 cargo test --test integration -- schema::

CREATE OR REPLACE FUNCTION public.machine_state_transition_result(p_entry machine_state_transitions)
 RETURNS json
 LANGUAGE sql
 SET search_path TO 'pg_catalog', 'public', 'pg_temp'
AS $function$
    SELECT json_build_object(
        'success', true,
        'machine', (SELECT row_to_json(m) FROM machines m WHERE m.id = p_entry.machine_id),
        'machine_state', (SELECT row_to_json(s) FROM machine_state s
                          WHERE s.machine_id = p_entry.machine_id),
        'updated_at', p_entry.transitioned_at,
        'machine_id', p_entry.machine_id,
        'previous_state', p_entry.from_state,
        'new_state', p_entry.to_state,
        'verb', p_entry.verb,
        'process_id', p_entry.process_id,
        'operation_id', p_entry.operation_id,
        'transitioned_at', p_entry.transitioned_at,
        'isolation_level', p_entry.isolation_level
    )
$function$;

COMMENT ON FUNCTION public.machine_state_transition_result(p_entry machine_state_transitions) IS 'The JSON the legacy RPCs return for a history entry: the shipped keys (`success`, `machine`, `machine_state`, `updated_at`) and the transition''s (`machine_id`, `previous_state`, `new_state`, `verb`, `process_id`, `operation_id`, `transitioned_at`, `isolation_level`). Called by the `atomic_*` functions.';
