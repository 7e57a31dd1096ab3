//! What a database error says about the session it happened on: a lost race
//! that may simply be run again, or a connection that is gone (and must be
//! marked broken, so that a pool discards it). Used by the write path and by
//! every read.

use diesel::PgConnection;
use diesel::connection::{AnsiTransactionManager, TransactionManager};
use diesel::pg::sql_state;
use diesel::r2d2::R2D2Connection;
use diesel::result::{DatabaseErrorKind, Error as DieselError, SqlState};

/// Whether the caller has a transaction open on this connection.
pub(crate) fn in_transaction(conn: &mut PgConnection) -> bool {
    AnsiTransactionManager::transaction_manager_status_mut(conn)
        .transaction_depth()
        .ok()
        .flatten()
        .is_some()
}

/// The SQLSTATE of a database error, if the server sent one. Every decision
/// taken from a database error reads this, never its message: the message is
/// in the server's language (`lc_messages`).
pub(crate) fn sqlstate(error: &DieselError) -> Option<SqlState> {
    match error {
        DieselError::DatabaseError(_, info) => info.sqlstate(),
        _ => None,
    }
}

/// Whether `error` carries the SQLSTATE `code`.
pub(crate) fn has_sqlstate(error: &DieselError, code: SqlState) -> bool {
    sqlstate(error) == Some(code)
}

/// A serialization failure (40001) or deadlock (40P01): the transaction was
/// rolled back and may simply be run again.
pub(crate) fn lost_race(error: &DieselError) -> bool {
    matches!(
        error,
        DieselError::DatabaseError(DatabaseErrorKind::SerializationFailure, _)
    ) || deadlocked(error)
}

/// A deadlock (40P01).
pub(crate) fn deadlocked(error: &DieselError) -> bool {
    has_sqlstate(error, sql_state::T_R_DEADLOCK_DETECTED)
}

/// The connection broke: what was in flight may or may not have committed.
pub(crate) fn connection_lost(error: &DieselError) -> bool {
    matches!(
        error,
        DieselError::DatabaseError(
            DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
            _
        ) | DieselError::BrokenTransactionManager
    )
}

/// Whether the connection is gone after `error` ([`connection_lost`], or an
/// `Unknown` error after which a ping finds the connection dead); if so, the
/// connection is marked broken, so that a pool discards it instead of
/// handing it out again.
///
/// Both halves are needed because diesel notices a lost connection only when
/// libpq already says `CONNECTION_BAD`:
/// - when the server goes away mid-request (crash, immediate shutdown),
///   libpq makes up the error itself ("server closed the connection
///   unexpectedly"), without an SQLSTATE, and diesel may report it as
///   `Unknown`. A failed ping (`ClosedConnection` or `UnableToSendCommand`)
///   tells it apart from a real `Unknown` error, whose ping succeeds, or
///   fails otherwise (in an aborted transaction);
/// - a connection whose backend died while it was idle fails with
///   `ClosedConnection` but is not marked broken, so r2d2 (which asks
///   diesel's `is_broken`) would hand the dead connection out again and again.
pub(crate) fn connection_gone(conn: &mut PgConnection, error: &DieselError) -> bool {
    let gone = connection_lost(error)
        || (matches!(
            error,
            DieselError::DatabaseError(DatabaseErrorKind::Unknown, _)
        ) && conn.ping().is_err_and(|ping| connection_lost(&ping)));
    if gone {
        AnsiTransactionManager::transaction_manager_status_mut(conn).set_in_error();
    }
    gone
}

/// Pass `error` on, having marked `conn` broken if the error says it is gone
/// (see [`connection_gone`]): for the reads, so that a pool does not hand a
/// dead connection out again.
pub(crate) fn mark_broken_if_gone(conn: &mut PgConnection, error: DieselError) -> DieselError {
    connection_gone(conn, &error);
    error
}
