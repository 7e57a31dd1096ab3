-- Everything on this database that exposes machine-state's tables or
-- functions to roles that should not reach them; one row per finding:
-- (check, object, role, detail). Runnable in psql as it is.
--
-- Roles that count: any but superusers, PostgreSQL's built-in `pg_*` roles,
-- and roles acting as an object's owner (members of it). The schema checked
-- is the one holding `machines`, with machine-state's own schemas
-- (`machine_state_replaced`, `machine_state_private`).
WITH target AS (
    SELECT c.relnamespace AS schema FROM pg_class c WHERE c.oid = to_regclass('machines')
),
schemas AS (
    SELECT n.oid, n.nspname FROM pg_namespace n
    WHERE n.oid IN (SELECT schema FROM target)
       OR n.nspname IN ('machine_state_replaced', 'machine_state_private')
),
roles AS (
    SELECT r.oid, r.rolname FROM pg_roles r
    WHERE NOT r.rolsuper AND r.rolname !~ '^pg_'
),
-- What `machine_state_grant_application` granted (nothing before migrating).
granted AS (
    SELECT g.grantee, g.object FROM machine_state_private.application_grants g
    WHERE g.privilege = 'EXECUTE'
),
-- The schemas PostgREST serves: `pgrst.db_schemas` of its login role (or of
-- the database), else `public` where Supabase's API roles exist.
configured AS (
    SELECT substr(c, length('pgrst.db_schemas=') + 1) AS setting
    FROM pg_db_role_setting s CROSS JOIN LATERAL unnest(s.setconfig) c
    WHERE c LIKE 'pgrst.db\_schemas=%'
      AND (s.setrole = 0 OR s.setrole = (SELECT oid FROM pg_roles WHERE rolname = 'authenticator'))
      AND s.setdatabase IN (0, (SELECT oid FROM pg_database WHERE datname = current_database()))
),
exposed AS (
    SELECT btrim(name) AS nspname
    FROM configured CROSS JOIN LATERAL unnest(string_to_array(setting, ',')) name
    UNION
    SELECT 'public' WHERE NOT EXISTS (SELECT 1 FROM configured)
                      AND EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon')
),
tables AS (
    SELECT c.oid, c.relname, c.relowner, n.nspname FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.oid IN (to_regclass('machines'), to_regclass('machine_state'),
                    to_regclass('machine_state_transitions'))
),
functions AS (
    SELECT p.oid, p.proowner, p.prosecdef, p.proconfig, s.nspname,
           p.oid::regprocedure::text AS signature
    FROM pg_proc p JOIN schemas s ON s.oid = p.pronamespace
    WHERE NOT EXISTS (SELECT 1 FROM pg_depend d
                      WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid
                        AND d.deptype = 'e')
)
SELECT 'direct_write' AS check, format('%I.%I', t.nspname, t.relname) AS object,
       r.rolname::text AS role,
       array_to_string(ARRAY(
           SELECT w FROM unnest(ARRAY['INSERT', 'UPDATE', 'DELETE', 'TRUNCATE']) w
           WHERE has_table_privilege(r.oid, t.oid, w)), ', ') AS detail
FROM tables t CROSS JOIN roles r
WHERE NOT pg_has_role(r.oid, t.relowner, 'USAGE')
  AND has_table_privilege(r.oid, t.oid, 'INSERT, UPDATE, DELETE, TRUNCATE')
UNION ALL
SELECT 'security_definer_executable', format('%I.%s', f.nspname, f.signature), r.rolname::text,
       'runs as its owner'
FROM functions f CROSS JOIN roles r
WHERE f.prosecdef
  AND NOT pg_has_role(r.oid, f.proowner, 'USAGE')
  AND has_function_privilege(r.oid, f.oid, 'EXECUTE')
  AND NOT EXISTS (SELECT 1 FROM granted g
                  WHERE g.object = f.signature AND pg_has_role(r.oid, g.grantee, 'USAGE'))
UNION ALL
SELECT 'rls_disabled', format('%I.%I', n.nspname, c.relname), NULL,
       format('schema `%s` is exposed through the API', n.nspname)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND NOT c.relrowsecurity
  AND n.nspname IN (SELECT nspname FROM exposed)
UNION ALL
SELECT 'mutable_search_path', format('%I.%s', f.nspname, f.signature), NULL,
       'no `search_path` setting'
FROM functions f
WHERE NOT EXISTS (SELECT 1 FROM unnest(coalesce(f.proconfig, '{}')) c
                  WHERE c LIKE 'search\_path=%')
ORDER BY 1, 2, 3
