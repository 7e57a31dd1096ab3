-- `machine_state::stuck` (`machine-state stuck`) asks for the machines in
-- `processing` in both rows since before a cutoff, oldest first. Without an
-- index it reads every row of `machine_state` and of `machines` (two
-- sequential scans and a hash join: measured by `cargo bench --bench
-- compare`, part (e)). These partial indexes hold only the machines in
-- `processing`: the query reads the stuck ones, in order of `state_since`.
--
-- Their cost: an update that changes an indexed or predicate column cannot be
-- a HOT update. Every transition changes `machine_state.current_state` and
-- `state_since`, so each one now also writes an entry in `machine_state_pkey`;
-- `machines` updates that change `current_process_id` were not HOT already
-- (`machines_current_process_id_key`), the others (`bring_online`,
-- `take_offline`, `reset`) now are not either. The bench's part (a) and main
-- scenarios measure the write path with these indexes in place.
CREATE INDEX machine_state_processing_since_idx
    ON machine_state (state_since)
    WHERE current_state = 'processing';

CREATE INDEX machines_processing_idx
    ON machines (id)
    WHERE status = 'processing';
