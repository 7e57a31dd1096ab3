//! Writing a repaired pair (the policy is `crate::audit`'s): `repair.sql`.

use diesel::prelude::*;
use diesel::sql_types::{Nullable, Text, Uuid as SqlUuid};
use uuid::Uuid;

use crate::connection::lost_race;
use crate::error::Error;
use crate::pair::Pair;
use crate::sql_file::SqlFile;
use crate::state::State;

/// What both rows of a repaired pair hold afterwards.
pub(crate) struct Repaired<'a> {
    pub state: State,
    pub process_id: Option<Uuid>,
    /// The failure description, when the state is `error`.
    pub description: Option<&'a str>,
}

/// The state a machine's history ends in (`last_state.sql`).
#[derive(QueryableByName)]
struct LastState {
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    to_state: Option<String>,
}

/// Write a repaired pair (see [`crate::audit::repair`] for the policy): both rows and
/// a `repair` history entry, in one REPEATABLE READ transaction, only if the
/// pair still holds what the audit read. Returns whether it was written.
pub(crate) fn repair(
    conn: &mut PgConnection,
    read: &Pair,
    repaired: &Repaired<'_>,
    note: &str,
) -> Result<bool, Error> {
    let id = read.machine_id;
    let result = conn.build_transaction().repeatable_read().run(|conn| {
        if Pair::load(conn, id)?.as_ref() != Some(read) {
            return Ok(false);
        }
        let last_state = diesel::sql_query(include_str!("last_state.sql"))
            .bind::<diesel::sql_types::Uuid, _>(id)
            .get_result::<LastState>(conn)?
            .to_state;
        Repair::with((
            id,
            repaired.state.as_str(),
            repaired.process_id,
            repaired.description,
            last_state.as_deref().unwrap_or(&read.status),
            note,
            crate::history::new_operation_id(),
        ))
        .execute(conn)?;
        Ok(true)
    });
    match result {
        Err(error) if lost_race(&error) => Ok(false),
        other => other.map_err(Error::Database),
    }
}

/// `repair.sql`: both rows and the `repair` history entry.
struct Repair;

impl SqlFile for Repair {
    const SQL: &'static str = include_str!("repair.sql");
    type Binds = (
        SqlUuid,
        Text,
        Nullable<SqlUuid>,
        Nullable<Text>,
        Text,
        Text,
        SqlUuid,
    );
    type Row = ();
}

#[cfg(test)]
mod tests {
    #[test]
    fn repair_uses_exactly_its_binds() {
        crate::sql_file::assert_binds_match::<super::Repair>();
    }
}
