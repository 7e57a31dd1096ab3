//! `doctor`: what on this database exposes machine-state's tables and
//! functions to roles that should not reach them, as a linter of the users'
//! platform (Supabase's "splinter") would see it.
//!
//! The checks are one SQL query (`exposures.sql`, runnable in psql): roles
//! other than the owner that can write `machines`, `machine_state` or the
//! history directly; SECURITY DEFINER functions executable by a role not
//! granted through `machine_state_grant_application`; tables without row level
//! security in a schema PostgREST exposes; functions without a pinned
//! `search_path`. Whether enforcement is on is reported beside them.

use diesel::prelude::*;
use diesel::sql_query;
use diesel::sql_types::{Bool, Nullable, Text};
use strum::{Display, EnumString, IntoStaticStr};

use crate::error::Error;

/// What a [`Exposure`] is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Display, EnumString, IntoStaticStr)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[strum(serialize_all = "snake_case")]
#[non_exhaustive]
pub enum ExposureKind {
    /// A role other than the owner can INSERT, UPDATE, DELETE or TRUNCATE
    /// one of the three tables: it can write a diverged pair or forge history.
    DirectWrite,
    /// A SECURITY DEFINER function (it runs as its owner) is executable by a
    /// role that was not granted it through `machine_state_grant_application`
    /// (Supabase's lints 0028 and 0029 for `anon` and `authenticated`).
    SecurityDefinerExecutable,
    /// A table in a schema the API exposes has no row level security
    /// (lint 0013).
    RlsDisabled,
    /// A function has no pinned `search_path` (lint 0011, CVE-2018-1058).
    MutableSearchPath,
}

/// One thing found exposed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Exposure {
    /// Which check found it.
    pub kind: ExposureKind,
    /// The table or function, schema-qualified.
    pub object: String,
    /// The role that reaches it, where the check is about a role.
    pub role: Option<String>,
    /// What exactly: the write privileges held, the exposed schema, ...
    pub detail: String,
}

impl std::fmt::Display for Exposure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let role = self.role.as_deref().unwrap_or("-");
        match self.kind {
            ExposureKind::DirectWrite => write!(
                f,
                "role `{role}` can write `{}` directly ({})",
                self.object, self.detail
            ),
            ExposureKind::SecurityDefinerExecutable => write!(
                f,
                "role `{role}` can execute SECURITY DEFINER function `{}` without a grant \
                 through `machine_state_grant_application`",
                self.object
            ),
            ExposureKind::RlsDisabled => write!(
                f,
                "table `{}` has no row level security ({})",
                self.object, self.detail
            ),
            ExposureKind::MutableSearchPath => {
                write!(f, "function `{}` has no pinned `search_path`", self.object)
            }
        }
    }
}

/// What [`doctor`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct SecurityReport {
    /// Everything found exposed, ordered by kind and object.
    pub exposures: Vec<Exposure>,
    /// Whether the pair invariants are enforced at COMMIT
    /// (`machine_state_enforce_invariants()`); `None` when the role may not ask.
    pub enforcement: Option<bool>,
}

impl SecurityReport {
    /// Whether anything is exposed.
    pub fn is_exposed(&self) -> bool {
        !self.exposures.is_empty()
    }
}

#[derive(QueryableByName)]
struct Row {
    #[diesel(sql_type = Text)]
    check: String,
    #[diesel(sql_type = Text)]
    object: String,
    #[diesel(sql_type = Nullable<Text>)]
    role: Option<String>,
    #[diesel(sql_type = Text)]
    detail: String,
}

#[derive(QueryableByName)]
struct Enforced {
    #[diesel(sql_type = Nullable<Bool>)]
    enforced: Option<bool>,
}

/// Check the database `conn` is connected to for what exposes this crate's
/// tables and functions (see [`ExposureKind`]), as any role may: the catalog
/// is readable by all.
///
/// # Errors
///
/// [`Error::NotMigrated`] on a database without this crate's tables (or whose
/// migrations are not all applied); [`Error::Database`] when a query fails.
pub fn doctor(conn: &mut PgConnection) -> Result<SecurityReport, Error> {
    let migrated = sql_query(
        "SELECT to_regclass('machines') IS NOT NULL
                AND to_regclass('machine_state_private.application_grants') IS NOT NULL
                AS enforced",
    )
    .get_result::<Enforced>(conn)?;
    if migrated.enforced != Some(true) {
        return Err(Error::NotMigrated("machines"));
    }
    let exposures = sql_query(include_str!("exposures.sql"))
        .load::<Row>(conn)?
        .into_iter()
        .map(|row| {
            let kind = row.check.parse().map_err(|_| {
                Error::InvalidInput(format!(
                    "`exposures.sql` names an unknown check `{}`",
                    row.check
                ))
            })?;
            Ok(Exposure {
                kind,
                object: row.object,
                role: row.role,
                detail: row.detail,
            })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    let enforcement = sql_query("SELECT machine_state_invariants_enforced() AS enforced")
        .get_result::<Enforced>(conn)
        .ok()
        .and_then(|row| row.enforced);
    Ok(SecurityReport {
        exposures,
        enforcement,
    })
}
