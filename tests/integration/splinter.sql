-- Supabase's database linter (splinter) rules that can concern
-- machine-state's objects, written for this test from the rules' published
-- definitions (github.com/supabase/splinter, lints/): one `rule: object` row
-- per finding, every level (ERROR, WARN, INFO). Left out: 0005 (unused
-- index) and 0020 (table bloat), which read run-time statistics, not the
-- schema; 0002, 0003, 0010, 0012, 0014-0017, 0019, 0021-0023, 0025-0027,
-- about objects machine-state does not make (auth.users, views,
-- extensions, buckets, pg_graphql, queues, sensitive column names).
WITH skipped(nspname) AS (VALUES ('information_schema'), ('pg_catalog'), ('pg_toast'),
        ('auth'), ('storage'), ('extensions'), ('graphql'), ('graphql_public'),
        ('realtime'), ('vault'), ('pgbouncer'), ('supabase_functions'),
        ('supabase_migrations'), ('cron'), ('net'), ('pgsodium')),
user_tables AS (
    SELECT c.oid, c.relname, n.nspname, c.relrowsecurity
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind = 'r' AND n.nspname NOT IN (SELECT nspname FROM skipped)
      AND n.nspname !~ '^pg_'
      AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e')
),
policies AS (
    SELECT p.*, t.nspname, t.relname, t.relrowsecurity,
           CASE p.polcmd WHEN 'r' THEN ARRAY['SELECT'] WHEN 'a' THEN ARRAY['INSERT']
                         WHEN 'w' THEN ARRAY['UPDATE'] WHEN 'd' THEN ARRAY['DELETE']
                         ELSE ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE'] END AS actions,
           lower(regexp_replace(coalesce(pg_get_expr(p.polqual, p.polrelid), ''), '\s', '', 'g'))
               AS using_expr,
           lower(regexp_replace(coalesce(pg_get_expr(p.polwithcheck, p.polrelid), ''), '\s', '', 'g'))
               AS check_expr
    FROM pg_policy p JOIN user_tables t ON t.oid = p.polrelid
)
-- 0001: a foreign key no index starts with
SELECT '0001 unindexed_foreign_keys: ' || t.nspname || '.' || t.relname || ' ' || k.conname AS value
FROM pg_constraint k JOIN user_tables t ON t.oid = k.conrelid
WHERE k.contype = 'f'
  AND NOT EXISTS (SELECT 1 FROM pg_index i
                  WHERE i.indrelid = k.conrelid AND i.indisvalid
                    AND (string_to_array(i.indkey::text, ' ')::smallint[])[1:cardinality(k.conkey)]
                        = k.conkey)
UNION ALL
-- 0004: a table without a primary key
SELECT '0004 no_primary_key: ' || t.nspname || '.' || t.relname
FROM user_tables t
WHERE NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = t.oid AND i.indisprimary)
UNION ALL
-- 0006: two permissive policies for one role and action (roles that bypass
-- row level security aside)
SELECT DISTINCT '0006 multiple_permissive_policies: ' || p.nspname || '.' || p.relname
       || ' ' || r.rolname || ' ' || a.action
FROM policies p CROSS JOIN LATERAL unnest(p.actions) a(action)
JOIN pg_roles r ON p.polroles @> ARRAY[r.oid] OR p.polroles = ARRAY[0::oid]
WHERE p.polpermissive AND NOT r.rolbypassrls AND r.rolname !~ '^pg_'
  AND r.rolname NOT LIKE 'supabase%admin'
  AND (SELECT count(*) FROM policies q CROSS JOIN LATERAL unnest(q.actions) b(action)
       WHERE q.polrelid = p.polrelid AND q.polpermissive AND b.action = a.action
         AND (q.polroles @> ARRAY[r.oid] OR q.polroles = ARRAY[0::oid])) > 1
UNION ALL
-- 0007: policies on a table whose row level security is off
SELECT DISTINCT '0007 policy_exists_rls_disabled: ' || p.nspname || '.' || p.relname
FROM policies p WHERE NOT p.relrowsecurity
UNION ALL
-- 0008: row level security on, and no policy
SELECT '0008 rls_enabled_no_policy: ' || t.nspname || '.' || t.relname
FROM user_tables t
WHERE t.relrowsecurity AND NOT EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = t.oid)
UNION ALL
-- 0009: two identical indexes on one table
SELECT DISTINCT '0009 duplicate_index: ' || t.nspname || '.' || t.relname
FROM user_tables t JOIN pg_index i ON i.indrelid = t.oid
WHERE EXISTS (SELECT 1 FROM pg_index j
              WHERE j.indrelid = i.indrelid AND j.indexrelid <> i.indexrelid
                AND replace(pg_get_indexdef(j.indexrelid), j.indexrelid::regclass::text, '')
                    = replace(pg_get_indexdef(i.indexrelid), i.indexrelid::regclass::text, ''))
UNION ALL
-- 0011: a function without a pinned search_path
SELECT '0011 function_search_path_mutable: ' || n.nspname || '.' || p.oid::regprocedure
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname NOT IN (SELECT nspname FROM skipped) AND n.nspname !~ '^pg_'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e')
  AND NOT EXISTS (SELECT 1 FROM unnest(coalesce(p.proconfig, '{}')) c
                  WHERE c LIKE 'search_path=%')
UNION ALL
-- 0013: a table in `public` without row level security
SELECT '0013 rls_disabled_in_public: ' || t.nspname || '.' || t.relname
FROM user_tables t WHERE t.nspname = 'public' AND NOT t.relrowsecurity
UNION ALL
-- 0018: a column of a reg* type pg_upgrade cannot carry
SELECT '0018 unsupported_reg_types: ' || t.nspname || '.' || t.relname || '.' || a.attname
FROM user_tables t JOIN pg_attribute a ON a.attrelid = t.oid
WHERE a.attnum > 0 AND NOT a.attisdropped
  AND a.atttypid IN ('regcollation'::regtype, 'regconfig'::regtype, 'regdictionary'::regtype,
                     'regnamespace'::regtype, 'regoper'::regtype, 'regoperator'::regtype,
                     'regproc'::regtype, 'regprocedure'::regtype)
UNION ALL
-- 0024: a permissive write policy for everyone, anon or authenticated whose
-- USING or WITH CHECK is always true
SELECT '0024 rls_policy_always_true: ' || p.nspname || '.' || p.relname || ' ' || p.polname
FROM policies p
WHERE p.relrowsecurity AND p.polpermissive
  AND (p.polroles = ARRAY[0::oid]
       OR EXISTS (SELECT 1 FROM unnest(p.polroles) r
                  WHERE r::regrole::text IN ('anon', 'authenticated')))
  AND ((p.polcmd IN ('w', 'd', '*')
        AND (p.using_expr IN ('true', '(true)', '1=1', '(1=1)') OR p.polqual IS NULL))
       OR p.check_expr IN ('true', '(true)', '1=1', '(1=1)')
       OR (p.polwithcheck IS NULL AND p.polcmd = 'a'))
UNION ALL
-- 0028, 0029: a SECURITY DEFINER function anon or authenticated may run
SELECT '00' || l.lint || ' ' || l.role || '_security_definer_function_executable: '
       || n.nspname || '.' || p.oid::regprocedure
FROM (VALUES ('28', 'anon'), ('29', 'authenticated')) l(lint, role)
CROSS JOIN pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE p.prosecdef AND has_function_privilege(l.role, p.oid, 'EXECUTE')
  AND n.nspname NOT IN (SELECT nspname FROM skipped) AND n.nspname !~ '^pg_'
ORDER BY 1
