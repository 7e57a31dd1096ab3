DROP TABLE machine_state_transitions;
