-- plpgsql_check over every plpgsql function of machine-state, as `supabase db
-- lint` runs it (warning level, with extra, performance and security
-- warnings): one `function [on table]: finding` row per finding.
WITH ours AS (
    SELECT p.oid
    FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
    WHERE l.lanname = 'plpgsql'
      AND (p.pronamespace = 'machine_state_private'::regnamespace
           OR (p.pronamespace = (SELECT relnamespace FROM pg_class
                                 WHERE oid = 'machines'::regclass)
               AND (p.proname LIKE 'machine\_state\_%' OR p.proname LIKE 'atomic\_%')))
),
targets AS (
    -- a trigger function with each table it fires on; any other alone
    SELECT o.oid, t.tgrelid AS relid FROM ours o JOIN pg_trigger t ON t.tgfoid = o.oid
    UNION
    SELECT o.oid, 0::oid FROM ours o
    WHERE (SELECT prorettype FROM pg_proc WHERE oid = o.oid) <> 'trigger'::regtype
)
SELECT t.oid::regprocedure::text
       || CASE WHEN t.relid <> 0 THEN ' on ' || t.relid::regclass::text ELSE '' END
       || ': ' || f AS value
FROM targets t
CROSS JOIN LATERAL extensions.plpgsql_check_function(
    t.oid::regprocedure, t.relid::regclass,
    fatal_errors => false, other_warnings => true, extra_warnings => true,
    performance_warnings => true, security_warnings => true) f
ORDER BY 1
