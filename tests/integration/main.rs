//! The one integration test binary: one module per family of behaviour.

mod support;

mod adoption;
mod app_migrations;
mod audit;
mod cli;
mod compile_fail;
mod concurrency;
mod enforcement;
mod failover;
mod faults;
mod idempotency;
mod language;
mod live_deploy;
mod live_maintenance;
mod load;
mod metrics;
mod migrations;
mod outages;
mod parity;
mod pooler;
mod privileges;
mod recipes;
mod refusals;
mod retention;
mod schema;
mod sql_functions;
mod stalls;
mod supabase;
mod supabase_lint;
mod supabase_walk;
mod testing_kit;
mod transitions;
mod under_the_lock;
mod watch;
mod write_paths;
