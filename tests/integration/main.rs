//! The one integration test binary: one module per family of behaviour.

mod support;

mod audit;
mod cli;
mod compile_fail;
mod idempotency;
mod load;
mod migrations;
mod refusals;
mod sql_functions;
mod transitions;
