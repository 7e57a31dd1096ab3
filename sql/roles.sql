-- Least-privilege role setup for machine-state (see migrations/README.md).
--
--   psql "$DATABASE_URL" -v app=factory_app -f sql/roles.sql
--
-- On Supabase, the services' role is the server-side key's `service_role`
-- (it exists already): `-v app=service_role`. Never `anon` or `authenticated`.
--
-- Run it as the migration owner (the role that ran `machine-state migrate`
-- and owns `machines`, `machine_state` and the functions), after the
-- migrations. Creating the role needs CREATEROLE (or run that line as a
-- superuser). Roles are cluster-wide, which is why no migration creates one.
--
-- The application role (`app`) then may:
--   * SELECT `machines`, `machine_state`, `machine_state_transitions`;
--   * EXECUTE `machine_state_transition` and the legacy `atomic_*` functions,
--     which are SECURITY DEFINER with a pinned search_path: the only way it
--     can change a machine's state;
-- and nothing else: no INSERT, UPDATE, DELETE or TRUNCATE on the tables or
-- the history, no enforcement switch, no grants. The Rust crate runs for it
-- with `WritePath::SqlFunction` (`Machine::with_write_path`). Registering
-- machines stays with the owner (or a provisioning role of your own).

\set ON_ERROR_STOP on

-- The role, if it does not exist yet; set its password with \password.
SELECT format('CREATE ROLE %I LOGIN', :'app')
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'app')
\gexec

-- Grant exactly what it needs; prints the grants made (none if it already
-- had them), and warns if it can still write the tables through grants made
-- elsewhere (the legacy system's, say).
SELECT * FROM machine_state_grant_application(quote_ident(:'app')::regrole);

-- Once the legacy writers are retired, take their direct write access away,
-- e.g. (the legacy role's name is yours):
--   REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON machines, machine_state FROM legacy_app;
--   SELECT * FROM machine_state_grant_application('legacy_app');
-- and to undo this script: SELECT * FROM machine_state_revoke_application('factory_app');

-- Through a transaction-mode pooler (PgBouncer, Supabase's pooler), where no
-- session setting may be used, make the role's sessions default to
-- REPEATABLE READ, so that a transition stays one autocommit statement (one
-- round trip) instead of BEGIN ISOLATION LEVEL REPEATABLE READ … COMMIT. It
-- is a property of the role, set when a server session starts: it reaches no
-- other role's clients. Other statements of this role default to REPEATABLE
-- READ too (they may meet serialization failures, 40001, under contention).
-- Uncomment to apply:
--   SELECT format('ALTER ROLE %I SET default_transaction_isolation = %L',
--                 :'app', 'repeatable read')
--   \gexec
