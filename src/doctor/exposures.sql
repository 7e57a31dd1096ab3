-- Everything on this database that exposes machine-state's tables or
-- functions to roles that should not reach them; one row per finding:
-- (check, object, role, detail, fix, undo). `fix` holds the statements that
-- close it, `undo` those that put back exactly what `fix` changed (run in
-- order). Runnable in psql as it is.
--
-- Roles that count: any but superusers, PostgreSQL's built-in `pg_*` roles,
-- and roles acting as an object's owner (members of it). The schema checked
-- is the one holding `machines`, with machine-state's own schemas
-- (`machine_state_replaced`, `machine_state_private`).
--
-- The pair's columns (every column of `machine_state`, and `id`, `status`,
-- `current_process_id` and `updated_at` of `machines`) are written by the
-- owner alone, through the functions. A role that may update the other,
-- descriptive columns of `machines` (`location`, say) keeps exactly that, as
-- column privileges, unless it is `anon` or PUBLIC (anyone holding the
-- project's public key; they keep no write).
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
    SELECT c.oid, c.relname, c.relowner, c.relacl, c.relrowsecurity, n.nspname,
           format('%I.%I', n.nspname, c.relname) AS name
    FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.oid IN (to_regclass('machines'), to_regclass('machine_state'),
                    to_regclass('machine_state_transitions'))
),
columns AS (
    SELECT t.oid AS table_oid, a.attname, a.attacl,
           NOT (t.relname = 'machines'
                AND a.attname NOT IN ('id', 'status', 'current_process_id', 'updated_at')) AS pair
    FROM tables t JOIN pg_attribute a ON a.attrelid = t.oid
    WHERE a.attnum > 0 AND NOT a.attisdropped
),
-- Every privilege held on the three tables: table-wide (`attname` NULL) or
-- on one column. Grantee 0 is PUBLIC.
held AS (
    SELECT t.oid AS table_oid, NULL::name AS attname, a.grantee, a.privilege_type,
           a.is_grantable, a.n
    FROM tables t
    CROSS JOIN LATERAL aclexplode(coalesce(t.relacl, acldefault('r', t.relowner)))
        WITH ORDINALITY a(grantor, grantee, privilege_type, is_grantable, n)
    UNION ALL
    SELECT col.table_oid, col.attname, a.grantee, a.privilege_type, a.is_grantable, a.n
    FROM columns col
    CROSS JOIN LATERAL aclexplode(col.attacl)
        WITH ORDINALITY a(grantor, grantee, privilege_type, is_grantable, n)
),
grantees AS (
    SELECT DISTINCT h.table_oid, h.grantee,
           CASE WHEN h.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(r.rolname) END AS name,
           h.grantee = 0 OR r.rolname = 'anon' AS anyone
    FROM held h LEFT JOIN pg_roles r ON r.oid = h.grantee
),
-- How to put a table's privileges back as they are now, grantee order
-- included: every grantee but the owner loses everything, then each privilege
-- is granted again in the order of the table's (and each column's) ACL.
table_undo AS (
    SELECT t.oid AS table_oid,
           ARRAY(SELECT format('REVOKE ALL ON %s FROM %s', t.name, g.name)
                 FROM grantees g WHERE g.table_oid = t.oid AND g.grantee <> t.relowner
                 ORDER BY g.name)
           || ARRAY(SELECT CASE WHEN h.attname IS NULL
                                THEN format('GRANT %s ON %s TO %s', h.privilege_type, t.name, g.name)
                                ELSE format('GRANT %s (%I) ON %s TO %s', h.privilege_type,
                                            h.attname, t.name, g.name) END
                           || CASE WHEN h.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END
                    FROM held h
                    JOIN grantees g ON g.table_oid = h.table_oid AND g.grantee = h.grantee
                    WHERE h.table_oid = t.oid AND h.grantee <> t.relowner
                    ORDER BY h.attname NULLS FIRST, h.n) AS undo
    FROM tables t
),
-- A role that can write the pair's columns, or delete or truncate rows.
writers AS (
    SELECT t.oid AS table_oid, t.name, t.relname, t.relowner, r.oid AS role_oid, r.rolname,
           array_to_string(ARRAY(
               SELECT w FROM unnest(ARRAY['INSERT', 'UPDATE', 'DELETE', 'TRUNCATE']) w
               WHERE has_table_privilege(r.oid, t.oid, w)
                  OR (w IN ('INSERT', 'UPDATE') AND EXISTS (
                          SELECT 1 FROM columns col
                          WHERE col.table_oid = t.oid AND col.pair
                            AND has_column_privilege(r.oid, t.oid, col.attname, w)))),
               ', ') AS detail
    FROM tables t CROSS JOIN roles r
    WHERE NOT pg_has_role(r.oid, t.relowner, 'USAGE')
),
-- For each writer, the grantees it holds its privileges through (itself,
-- a role it is a member of, PUBLIC): what to revoke from each, what to grant
-- back (descriptive columns), and how to undo both (the table's privileges
-- as they are now).
write_fixes AS (
    SELECT w.table_oid, w.role_oid, g.name AS grantee,
           ARRAY[format('REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON %s FROM %s', w.name, g.name)]
           || coalesce((
               SELECT ARRAY[format('GRANT UPDATE (%s) ON %s TO %s',
                                   string_agg(quote_ident(col.attname), ', ' ORDER BY col.attname),
                                   w.name, g.name)]
               FROM columns col
               WHERE col.table_oid = w.table_oid AND NOT col.pair AND NOT g.anyone
                 AND EXISTS (SELECT 1 FROM held h
                             WHERE h.table_oid = w.table_oid AND h.grantee = g.grantee
                               AND h.privilege_type = 'UPDATE'
                               AND (h.attname IS NULL OR h.attname = col.attname))
               HAVING count(*) > 0), '{}') AS fix,
           u.undo
    FROM writers w
    JOIN grantees g ON g.table_oid = w.table_oid
    JOIN table_undo u ON u.table_oid = w.table_oid
    WHERE w.detail <> ''
      AND g.grantee <> w.relowner
      AND (g.grantee = 0 OR pg_has_role(w.role_oid, g.grantee, 'USAGE'))
      AND EXISTS (SELECT 1 FROM held h
                  WHERE h.table_oid = w.table_oid AND h.grantee = g.grantee
                    AND h.privilege_type IN ('INSERT', 'UPDATE', 'DELETE', 'TRUNCATE'))
),
functions AS (
    SELECT p.oid, p.proowner, p.prosecdef, p.proconfig, s.nspname,
           p.oid::regprocedure::text AS signature,
           format('%I.%I(%s)', s.nspname, p.proname,
                  pg_get_function_identity_arguments(p.oid)) AS qualified,
           coalesce(p.proacl, acldefault('f', p.proowner)) AS acl
    FROM pg_proc p JOIN schemas s ON s.oid = p.pronamespace
    WHERE NOT EXISTS (SELECT 1 FROM pg_depend d
                      WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid
                        AND d.deptype = 'e')
),
-- Row level security: on our tables (and diesel's) where the API serves
-- their schema. Anyone who could read keeps reading (a policy open to all:
-- privileges decide who reads); the roles that keep updating `machines`'
-- descriptive columns keep updating (a policy for them).
rls_tables AS (
    SELECT c.oid, c.relname, n.nspname, format('%I.%I', n.nspname, c.relname) AS name,
           EXISTS (SELECT 1 FROM pg_policy p
                   WHERE p.polrelid = c.oid AND p.polname = 'machine_state_read') AS has_read,
           EXISTS (SELECT 1 FROM pg_policy p
                   WHERE p.polrelid = c.oid AND p.polname = 'machine_state_describe') AS has_describe,
           CASE WHEN c.relname = 'machines' THEN (
               SELECT string_agg(DISTINCT g.name, ', ')
               FROM held h JOIN grantees g ON g.table_oid = h.table_oid AND g.grantee = h.grantee
               LEFT JOIN columns col ON col.table_oid = h.table_oid AND col.attname = h.attname
               WHERE h.table_oid = c.oid AND h.privilege_type = 'UPDATE' AND NOT g.anyone
                 AND h.grantee <> c.relowner AND (col.attname IS NULL OR NOT col.pair)) END
               AS updaters
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.oid IN (to_regclass('machines'), to_regclass('machine_state'),
                    to_regclass('machine_state_transitions'),
                    to_regclass('__diesel_schema_migrations'))
      AND c.relkind IN ('r', 'p') AND NOT c.relrowsecurity
      AND n.nspname IN (SELECT nspname FROM exposed)
)
SELECT 'direct_write' AS check, w.name AS object, w.rolname::text AS role, w.detail,
       coalesce((SELECT array_agg(s ORDER BY f.grantee, o)
                 FROM write_fixes f CROSS JOIN LATERAL unnest(f.fix) WITH ORDINALITY u(s, o)
                 WHERE f.table_oid = w.table_oid AND f.role_oid = w.role_oid), '{}') AS fix,
       coalesce((SELECT array_agg(s ORDER BY f.grantee, o)
                 FROM write_fixes f CROSS JOIN LATERAL unnest(f.undo) WITH ORDINALITY u(s, o)
                 WHERE f.table_oid = w.table_oid AND f.role_oid = w.role_oid), '{}') AS undo
FROM writers w
WHERE w.detail <> ''
UNION ALL
SELECT 'security_definer_executable', format('%I.%s', f.nspname, f.signature), r.rolname::text,
       'runs as its owner',
       ARRAY(SELECT format('REVOKE EXECUTE ON FUNCTION %s FROM %s', f.qualified,
                           CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END)
             FROM aclexplode(f.acl) a
             WHERE a.privilege_type = 'EXECUTE' AND a.grantee <> f.proowner
               AND (a.grantee = 0 OR pg_has_role(r.oid, a.grantee, 'USAGE'))
             ORDER BY a.grantee),
       ARRAY(SELECT format('GRANT EXECUTE ON FUNCTION %s TO %s%s', f.qualified,
                           CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END,
                           CASE WHEN a.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END)
             FROM aclexplode(f.acl) a
             WHERE a.privilege_type = 'EXECUTE' AND a.grantee <> f.proowner
               AND (a.grantee = 0 OR pg_has_role(r.oid, a.grantee, 'USAGE'))
             ORDER BY a.grantee)
FROM functions f CROSS JOIN roles r
WHERE f.prosecdef
  AND NOT pg_has_role(r.oid, f.proowner, 'USAGE')
  AND has_function_privilege(r.oid, f.oid, 'EXECUTE')
  AND NOT EXISTS (SELECT 1 FROM granted g
                  WHERE g.object = f.signature AND pg_has_role(r.oid, g.grantee, 'USAGE'))
UNION ALL
SELECT 'rls_disabled', t.name, NULL,
       format('schema `%s` is exposed through the API', t.nspname),
       ARRAY[format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', t.name)]
       || CASE WHEN t.has_read THEN '{}'::text[] ELSE
              ARRAY[format('CREATE POLICY machine_state_read ON %s FOR SELECT USING (true)', t.name)]
          END
       || CASE WHEN t.has_describe OR t.updaters IS NULL THEN '{}'::text[] ELSE
              ARRAY[format('CREATE POLICY machine_state_describe ON %s FOR UPDATE TO %s '
                           'USING (true) WITH CHECK (true)', t.name, t.updaters)]
          END,
       CASE WHEN t.has_describe OR t.updaters IS NULL THEN '{}'::text[] ELSE
           ARRAY[format('DROP POLICY machine_state_describe ON %s', t.name)]
       END
       || CASE WHEN t.has_read THEN '{}'::text[] ELSE
              ARRAY[format('DROP POLICY machine_state_read ON %s', t.name)]
          END
       || ARRAY[format('ALTER TABLE %s DISABLE ROW LEVEL SECURITY', t.name)]
FROM rls_tables t
UNION ALL
SELECT 'mutable_search_path', format('%I.%s', f.nspname, f.signature), NULL,
       'no `search_path` setting',
       ARRAY[format('ALTER FUNCTION %s SET search_path = pg_catalog, %I, pg_temp',
                    f.qualified, f.nspname)],
       ARRAY[format('ALTER FUNCTION %s RESET search_path', f.qualified)]
FROM functions f
WHERE NOT EXISTS (SELECT 1 FROM unnest(coalesce(f.proconfig, '{}')) c
                  WHERE c LIKE 'search\_path=%')
ORDER BY 1, 2, 3
