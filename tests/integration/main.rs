//! The one integration test binary: one module per family of behaviour.

mod support;

mod audit;
mod compile_fail;
mod idempotency;
mod load;
mod migrations;
mod recipes;
mod refusals;
mod sql_functions;
mod transitions;
mod write_paths;
