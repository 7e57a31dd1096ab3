-- The current definition of machine_state_private.uuid_v7_bound, as the migrations leave it
-- (`pg_get_functiondef`, PostgreSQL 15). Generated: do not edit; change it
-- with a new migration, then regenerate this file with
--   MACHINE_STATE_BLESS=1 cargo test --test integration -- schema::

CREATE OR REPLACE FUNCTION machine_state_private.uuid_v7_bound(p_at timestamp with time zone)
 RETURNS uuid
 LANGUAGE sql
 IMMUTABLE STRICT
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
    SELECT (lpad(to_hex(floor(extract(epoch FROM p_at) * 1000)::bigint), 12, '0')
            || '00000000000000000000')::uuid
$function$;

COMMENT ON FUNCTION machine_state_private.uuid_v7_bound(p_at timestamp with time zone) IS 'The smallest UUIDv7 of the millisecond `p_at`: the bound of a daily partition of the history (`machine_state_prepare_history`, `machine_state_prune_history`).';
