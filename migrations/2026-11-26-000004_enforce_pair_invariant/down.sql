DROP TRIGGER machine_state_pair_invariant ON machine_state;
DROP TRIGGER machine_state_pair_invariant ON machines;
DROP FUNCTION machine_state_relax_invariants();
DROP FUNCTION machine_state_enforce_invariants();
DROP FUNCTION machine_state_invariants_enforced();
DROP FUNCTION machine_state_check_pair_invariant();
DROP FUNCTION machine_state_pair_violations(machines, machine_state);
