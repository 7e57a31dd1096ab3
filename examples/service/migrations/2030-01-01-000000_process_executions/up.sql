-- The service's own table: one row per recipe run.
CREATE TABLE process_executions (
    id uuid PRIMARY KEY,
    machine_id uuid NOT NULL REFERENCES machines (id),
    status text NOT NULL CHECK (status IN ('running', 'completed', 'failed', 'aborted')),
    error_message text
);
