-- A transition through the SQL function (see function.rs): calls
-- machine_state_transition when the transaction is REPEATABLE READ, and
-- nothing otherwise (the first column is then NULL). Returns the
-- transition's time and the isolation level it ran under.
-- Binds, as the function takes them: 1 machine id, 2 from state, 3 to state,
-- 4 process id (started or ended), 5 description, 6 operation id, 7 verb.
-- In psql: PREPARE transition_call(uuid, text, text, uuid, text, uuid, text)
--          AS <this file>; EXECUTE transition_call(...);
SELECT CASE WHEN current_setting('transaction_isolation') = 'repeatable read'
            THEN (machine_state_transition($1, $2, $3, $4, $5, $6, $7)).transitioned_at
       END,
       current_setting('transaction_isolation')
