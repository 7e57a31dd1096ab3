-- Every function of a migrated database that is not the system's nor an
-- extension's member: the file it belongs in (`<name>.sql` in `public`,
-- `<schema>.<name>.sql` elsewhere), its definition, its signature (argument
-- names included, as `COMMENT ON FUNCTION` takes it) and its comment.
SELECT CASE WHEN n.nspname = 'public' THEN p.proname::text
            ELSE n.nspname || '.' || p.proname END || '.sql' AS file,
       pg_catalog.pg_get_functiondef(p.oid) AS definition,
       format('%I.%I(%s)', n.nspname, p.proname,
              pg_catalog.pg_get_function_identity_arguments(p.oid)) AS signature,
       pg_catalog.obj_description(p.oid, 'pg_proc') AS comment
FROM pg_catalog.pg_proc p
JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\_%'
  AND p.prokind IN ('f', 'p')
  AND NOT EXISTS (
      SELECT FROM pg_catalog.pg_depend d
      WHERE d.classid = 'pg_catalog.pg_proc'::regclass AND d.objid = p.oid
        AND d.deptype = 'e')
ORDER BY file, pg_catalog.pg_get_function_identity_arguments(p.oid)
