DROP TABLE process_executions;
