-- Take back from a role what grant_application.sql granted it (see
-- application_role.rs); one row per statement run. Binds: 1 the role.
SELECT s AS statement FROM machine_state_revoke_application(quote_ident($1)::regrole) s
