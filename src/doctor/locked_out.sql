-- On a project with Supabase's API roles, whether the services are locked
-- out: no role but the owner (and superusers) may run
-- `machine_state_transition`, so every legacy RPC the services call with the
-- service-role key is refused (42501), and the legacy executor falls back to
-- its two separate writes. One row, `locked_out`.
SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role')
       AND EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon')
       AND NOT EXISTS (
           SELECT 1
           FROM pg_proc p CROSS JOIN pg_roles r
           WHERE p.pronamespace = (SELECT relnamespace FROM pg_class
                                   WHERE oid = to_regclass('machines'))
             AND p.proname = 'machine_state_transition'
             AND NOT r.rolsuper AND r.rolname !~ '^pg_'
             AND NOT pg_has_role(r.oid, p.proowner, 'USAGE')
             AND has_function_privilege(r.oid, p.oid, 'EXECUTE'))
       AS locked_out
