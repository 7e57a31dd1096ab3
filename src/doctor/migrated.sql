-- Whether this crate's migrations are applied (see doctor): its tables and
-- the bookkeeping of the last one that adds one.
SELECT to_regclass('machines') IS NOT NULL
       AND to_regclass('machine_state_private.application_grants') IS NOT NULL
       AS enforced
