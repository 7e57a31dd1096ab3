-- A recipe run (process) runs on one machine at a time: a starter that hands
-- the same run to a second machine is refused by the database itself
-- (SQLSTATE 23505 on this index), whichever code path it takes.
--
-- A legacy database may already hold such a double start; the index cannot
-- exist over it, so the migration stops and names the machines to fix first.
DO $$
DECLARE
    doubled text;
BEGIN
    SELECT string_agg(format('process `%s` on machines %s', current_process_id, machines), '; ')
    INTO doubled
    FROM (
        SELECT current_process_id, string_agg(format('`%s`', id), ', ' ORDER BY id) AS machines
        FROM machines
        WHERE current_process_id IS NOT NULL
        GROUP BY current_process_id
        HAVING count(*) > 1
    ) runs;
    IF doubled IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'MS009',
            MESSAGE = 'a process runs on more than one machine: ' || doubled,
            HINT = 'stop or fail the run on all but one machine, then migrate again';
    END IF;
END
$$;

CREATE UNIQUE INDEX machines_current_process_id_key
    ON machines (current_process_id)
    WHERE current_process_id IS NOT NULL;
