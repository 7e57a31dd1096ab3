//! The one integration test binary: one module per family of behaviour.

mod support;

mod compile_fail;
mod concurrency;
mod faults;
mod idempotency;
mod load;
mod migrations;
mod refusals;
mod sql_functions;
mod transitions;
