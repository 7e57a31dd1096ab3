-- `doctor --undo-fix` (see fix.rs): forget a fix once undone.
-- Binds: 1 its id.
DELETE FROM machine_state_private.doctor_fixes WHERE id = $1
