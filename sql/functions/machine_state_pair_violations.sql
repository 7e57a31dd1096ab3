-- The current definition of machine_state_pair_violations, as the migrations leave it
-- (`pg_get_functiondef`, PostgreSQL 15). Generated: do not edit; change it
-- with a new migration, then regenerate this file with
--   MACHINE_STATE_BLESS=1 cargo test --test integration -- schema::

CREATE OR REPLACE FUNCTION public.machine_state_pair_violations(m machines, s machine_state)
 RETURNS text[]
 LANGUAGE plpgsql
 STABLE
 SET search_path TO 'pg_catalog', 'public', 'pg_temp'
AS $function$
DECLARE
    found text[] := ARRAY[]::text[];
    known text[] := ARRAY['offline', 'idle', 'processing', 'error'];
BEGIN
    IF s.machine_id IS NULL THEN
        RETURN ARRAY['no `machine_state` row'];
    END IF;
    IF m.status <> ALL (known) OR s.current_state <> ALL (known) THEN
        found := found || format('unknown state (`machines` says `%s`, `machine_state` says `%s`)',
                                 m.status, s.current_state);
    END IF;
    IF m.status IS DISTINCT FROM s.current_state THEN
        found := found || format('I1: `machines.status` is `%s`, `machine_state.current_state` is `%s`',
                                 m.status, s.current_state);
    END IF;
    IF m.current_process_id IS DISTINCT FROM s.process_id THEN
        found := found || format('I2: the process ids differ (`machines` %s, `machine_state` %s)',
                                 coalesce(m.current_process_id::text, 'none'),
                                 coalesce(s.process_id::text, 'none'));
    END IF;
    IF m.status = ANY (known) THEN
        IF (m.current_process_id IS NOT NULL) <> (m.status = 'processing')
           OR (s.process_id IS NOT NULL) <> (m.status = 'processing') THEN
            found := found || 'I3: a process id must be set exactly in `processing`'::text;
        END IF;
        -- A description must hold something other than whitespace (Unicode's
        -- White_Space, which Rust's `str::trim` strips: as the audit sees it).
        IF s.is_failure_mode <> (m.status = 'error')
           OR (m.status = 'error' AND coalesce(s.failure_description, '')
                                      !~ E'[^\\t\\n\\v\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]') THEN
            found := found
                || 'I4: failure mode (with a description) must be set exactly in `error`'::text;
        END IF;
    END IF;
    RETURN found;
END
$function$;

COMMENT ON FUNCTION public.machine_state_pair_violations(m machines, s machine_state) IS 'What a machine''s pair of rows breaks (I1–I4, unknown states, a missing `machine_state` row), in words; empty when consistent. The SQL twin of the crate''s `Pair::violations` (a test keeps the two equal). Called by the enforcement trigger and `machine_state_enforce_invariants`; read-only, raises nothing.';
