//! The write paths a transition can take to the tables.

/// How a transition reaches the tables.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum WritePath {
    /// One SQL statement that writes the tables directly (the default, and the
    /// fastest: one round trip on a [`crate::pool()`] connection).
    #[default]
    Statement,
    /// Through the SQL function `machine_state_transition`, so that a role
    /// without UPDATE on the tables can run transitions. Where the function
    /// is missing, the transition falls back to [`WritePath::Statement`] (as
    /// atomic), logs a warning and counts it (the metric
    /// `machine_state_sql_function_fallbacks_total`, [`crate::telemetry`]).
    SqlFunction,
}
