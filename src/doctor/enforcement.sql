-- Whether the pair invariant is enforced by the database (see doctor).
SELECT machine_state_invariants_enforced() AS enforced
