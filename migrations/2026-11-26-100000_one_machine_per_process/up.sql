-- A recipe run (process) runs on one machine at a time: a starter that hands
-- the same run to a second machine is refused by the database itself
-- (SQLSTATE 23505 on this index), whichever code path it takes.
CREATE UNIQUE INDEX machines_current_process_id_key
    ON machines (current_process_id)
    WHERE current_process_id IS NOT NULL;
