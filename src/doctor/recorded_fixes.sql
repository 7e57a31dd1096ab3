-- `doctor --undo-fix` (see fix.rs): the recorded fixes, newest first,
-- locked until they are undone.
SELECT id, undo FROM machine_state_private.doctor_fixes ORDER BY id DESC FOR UPDATE
