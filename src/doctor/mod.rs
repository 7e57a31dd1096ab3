//! `doctor`: what on this database exposes machine-state's tables and
//! functions to roles that should not reach them, as a linter of the users'
//! platform (Supabase's "splinter") would see it.
//!
//! The checks are one SQL query (`exposures.sql`, runnable in psql): roles
//! other than the owner that can write `machines`, `machine_state` or the
//! history directly; SECURITY DEFINER functions executable by a role not
//! granted through `machine_state_grant_application`; tables without row level
//! security in a schema PostgREST exposes; functions without a pinned
//! `search_path`. Whether enforcement is on is reported beside them, and,
//! on a project with Supabase's API roles, whether the services are locked
//! out of the transitions (`locked_out.sql`).
//!
//! Each exposure carries the SQL that closes it and the SQL that undoes
//! that; [`fix_exposures`] (`fix.rs`) applies them, recorded, and [`undo_fixes`] takes
//! them back.

mod fix;

pub use fix::{AppliedFix, fix_exposures, fix_exposures_with, undo_fixes, undo_fixes_with};

pub use crate::application_role::{grant_application, revoke_application};
use diesel::prelude::*;
use diesel::sql_query;
use diesel::sql_types::{Array, Bool, Nullable, Text};
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
    /// The statements that close it, in order ([`fix_exposures`] runs them as the
    /// owner). A role that may update `machines`' descriptive columns keeps
    /// exactly that (column privileges), unless it is `anon` or PUBLIC.
    pub fix: Vec<String>,
    /// The statements that put back exactly what [`fix`](Self::fix) changed,
    /// in order (what [`undo_fixes`] runs).
    pub undo: Vec<String>,
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

/// On a project with Supabase's API roles, no role but the owner may run the
/// transitions: the services' key is refused every RPC, and the legacy
/// executor falls back to its two separate writes.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct LockedOut {
    /// The role the services use (Supabase's server-side key).
    pub role: String,
    /// The SQL that lets it in, to run as the owner (what
    /// [`grant_application`] runs).
    pub sql: String,
}

impl std::fmt::Display for LockedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "no role but the owner may run the transitions: the services' `{}` is refused \
             every RPC",
            self.role
        )
    }
}

/// The role Supabase's server-side key (the services') switches to.
pub const SERVICE_ROLE: &str = "service_role";

/// What [`doctor`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct SecurityReport {
    /// Everything found exposed, ordered by kind and object.
    pub exposures: Vec<Exposure>,
    /// Set when the project has Supabase's roles and the services may not
    /// run the transitions ([`LockedOut`]); `doctor --fix` leaves it, the
    /// fix is a grant to the role the operator chooses.
    pub locked_out: Option<LockedOut>,
    /// Whether the pair invariants are enforced at COMMIT
    /// (`machine_state_enforce_invariants()`); `None` when the role may not ask.
    pub enforcement: Option<bool>,
}

impl SecurityReport {
    /// Whether anything is exposed.
    pub fn is_exposed(&self) -> bool {
        !self.exposures.is_empty()
    }

    /// Whether nothing is exposed and no one is locked out.
    pub fn is_clean(&self) -> bool {
        !self.is_exposed() && self.locked_out.is_none()
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
    #[diesel(sql_type = Array<Text>)]
    fix: Vec<String>,
    #[diesel(sql_type = Array<Text>)]
    undo: Vec<String>,
}

#[derive(QueryableByName)]
struct LockedOutRow {
    #[diesel(sql_type = Bool)]
    locked_out: bool,
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
    let migrated = sql_query(include_str!("migrated.sql")).get_result::<Enforced>(conn)?;
    if migrated.enforced != Some(true) {
        return Err(Error::NotMigrated("machines"));
    }
    let exposures = exposures(conn)?;
    let enforcement = sql_query(include_str!("enforcement.sql"))
        .get_result::<Enforced>(conn)
        .ok()
        .and_then(|row| row.enforced);
    let locked_out = sql_query(include_str!("locked_out.sql"))
        .get_result::<LockedOutRow>(conn)?
        .locked_out
        .then(|| LockedOut {
            role: SERVICE_ROLE.to_owned(),
            sql: format!("SELECT * FROM machine_state_grant_application('{SERVICE_ROLE}');"),
        });
    Ok(SecurityReport {
        exposures,
        locked_out,
        enforcement,
    })
}

/// The exposures alone (`exposures.sql`), for [`doctor`] and [`fix_exposures`].
fn exposures(conn: &mut PgConnection) -> Result<Vec<Exposure>, Error> {
    sql_query(include_str!("exposures.sql"))
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
                fix: row.fix,
                undo: row.undo,
            })
        })
        .collect()
}
