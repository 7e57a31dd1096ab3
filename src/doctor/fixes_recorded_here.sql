-- Whether the table of recorded fixes exists (see fix.rs).
SELECT to_regclass('machine_state_private.doctor_fixes') IS NOT NULL AS present
