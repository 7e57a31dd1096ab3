-- Grant the services' role what it needs (see application_role.rs); one
-- row per statement run. Binds: 1 the role.
SELECT s AS statement FROM machine_state_grant_application(quote_ident($1)::regrole) s
