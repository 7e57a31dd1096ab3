-- `doctor --fix` (see fix.rs): record one applied fix and its undo.
-- Binds: 1 the finding, 2 the statements run, 3 the statements that undo them.
INSERT INTO machine_state_private.doctor_fixes (finding, statement, undo)
VALUES ($1, $2, $3)
