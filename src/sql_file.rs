//! The one carrier of the library's own SQL: a statement kept in a `.sql`
//! file, sent as it is written with its binds, under a static query id.
//!
//! A file is runnable in psql as it is (`PREPARE name(types) AS <file>;
//! EXECUTE name(...)`): `$1…$n` stand for its binds, in the order of the
//! [`SqlFile::Binds`] tuple. [`Statement`] sends the file's text unchanged;
//! it then appends a comment line naming every bind (`-- binds: $1 $2 …`),
//! which is how diesel's query builder learns to send the values (it numbers
//! binds in the order they are pushed, and writes each one's `$k`). The
//! server ignores the comment and takes the values' types from the
//! protocol, so a file may use a bind any number of times, or not at all.
//!
//! Each file is a type of its own (its [`SqlFile`] implementation), which is
//! the statement's query id: diesel prepares it once per connection and
//! reuses the plan, except on a connection with its statement cache off
//! (a transaction-mode pooler's, see `crate::pool`), where it is sent
//! unnamed every time.

use std::marker::PhantomData;

use diesel::pg::{Pg, PgConnection};
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::serialize::ToSql;
use diesel::sql_types::HasSqlType;
use diesel::{QueryResult, RunQueryDsl};

/// A statement kept in a `.sql` file.
pub(crate) trait SqlFile: Sized + 'static {
    /// The file's text (`include_str!`), with `$1…$n` for its binds.
    const SQL: &'static str;
    /// The SQL types of `$1…$n`, as a tuple.
    type Binds: BindTypes;
    /// The SQL type of a returned row.
    type Row;

    /// This file with `values` bound to `$1…$n`.
    fn with<V: Values<Self::Binds>>(values: V) -> Statement<Self, V> {
        Statement {
            values,
            file: PhantomData,
        }
    }
}

/// The SQL types of a statement's binds: a tuple.
pub(crate) trait BindTypes {
    /// How many there are.
    #[cfg(test)]
    const COUNT: usize;
}

/// Values for the binds of SQL types `Types` (a tuple), in order.
pub(crate) trait Values<Types> {
    /// Push every value, once each and in order, as a bind parameter.
    fn push<'b>(&'b self, out: &mut AstPass<'_, 'b, Pg>) -> QueryResult<()>;
}

macro_rules! values {
    ($($index:tt: $sql:ident $value:ident),+) => {
        impl<$($sql),+> BindTypes for ($($sql,)+) {
            #[cfg(test)]
            const COUNT: usize = [$($index),+].len();
        }

        impl<$($sql, $value),+> Values<($($sql,)+)> for ($($value,)+)
        where
            $(Pg: HasSqlType<$sql>, $value: ToSql<$sql, Pg>,)+
        {
            fn push<'b>(&'b self, out: &mut AstPass<'_, 'b, Pg>) -> QueryResult<()> {
                $(
                    out.push_sql(" ");
                    out.push_bind_param::<$sql, $value>(&self.$index)?;
                )+
                Ok(())
            }
        }
    };
}

values!(0: S0 V0);
values!(0: S0 V0, 1: S1 V1);
values!(0: S0 V0, 1: S1 V1, 2: S2 V2);
values!(0: S0 V0, 1: S1 V1, 2: S2 V2, 3: S3 V3);
values!(0: S0 V0, 1: S1 V1, 2: S2 V2, 3: S3 V3, 4: S4 V4);
values!(0: S0 V0, 1: S1 V1, 2: S2 V2, 3: S3 V3, 4: S4 V4, 5: S5 V5);
values!(0: S0 V0, 1: S1 V1, 2: S2 V2, 3: S3 V3, 4: S4 V4, 5: S5 V5, 6: S6 V6);
values!(0: S0 V0, 1: S1 V1, 2: S2 V2, 3: S3 V3, 4: S4 V4, 5: S5 V5, 6: S6 V6, 7: S7 V7);
values!(0: S0 V0, 1: S1 V1, 2: S2 V2, 3: S3 V3, 4: S4 V4, 5: S5 V5, 6: S6 V6, 7: S7 V7,
    8: S8 V8);

/// A [`SqlFile`] with its values: a diesel query, run with
/// [`RunQueryDsl`]'s methods.
pub(crate) struct Statement<F, V> {
    values: V,
    file: PhantomData<F>,
}

impl<F: SqlFile, V: Values<F::Binds>> QueryFragment<Pg> for Statement<F, V> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql(F::SQL);
        // The file may end in a comment: the binds go on a line of their own.
        out.push_sql("\n-- binds:");
        self.values.push(&mut out)
    }
}

impl<F: SqlFile, V> QueryId for Statement<F, V> {
    type QueryId = F;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl<F: SqlFile, V> Query for Statement<F, V> {
    type SqlType = F::Row;
}

impl<F: SqlFile, V> RunQueryDsl<PgConnection> for Statement<F, V> {}

/// Assert that `F`'s text uses exactly its binds, `$1…$n`: each file's unit
/// test calls it.
#[cfg(test)]
pub(crate) fn assert_binds_match<F: SqlFile>() {
    let mut used = placeholders(F::SQL);
    used.sort_unstable();
    let declared: Vec<usize> = (1..=F::Binds::COUNT).collect();
    assert_eq!(used, declared, "the binds used by {}", F::SQL);
}

/// The bind numbers (`$n`) a statement's text uses, outside `--` comments and
/// string literals, in order of first use.
#[cfg(test)]
fn placeholders(sql: &str) -> Vec<usize> {
    let mut found: Vec<usize> = Vec::new();
    for line in sql.lines() {
        let code = line.split("--").next().unwrap_or_default();
        let mut quoted = false;
        for (at, c) in code.char_indices() {
            match c {
                '\'' => quoted = !quoted,
                '$' if !quoted => {
                    let digits: String = code[at + 1..]
                        .chars()
                        .take_while(char::is_ascii_digit)
                        .collect();
                    if let Ok(n) = digits.parse::<usize>()
                        && !found.contains(&n)
                    {
                        found.push(n);
                    }
                }
                _ => {}
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use diesel::debug_query;
    use diesel::sql_types::{Integer, Nullable, Text};

    use super::*;

    struct Twice;

    impl SqlFile for Twice {
        const SQL: &'static str = "-- uses $2 twice\nSELECT $2 || $2, $1 -- and $1";
        type Binds = (Integer, Nullable<Text>);
        type Row = (Nullable<Text>, Integer);
    }

    #[test]
    fn the_file_is_sent_unchanged_and_each_value_once_in_order() {
        let statement = Twice::with((7, Some("x")));
        let sent = debug_query::<Pg, _>(&statement).to_string();
        assert_eq!(
            sent,
            "-- uses $2 twice\nSELECT $2 || $2, $1 -- and $1\n-- binds: $1 $2 \
             -- binds: [7, Some(\"x\")]"
        );
    }

    #[test]
    fn each_file_is_its_own_query_id() {
        struct Other;
        impl SqlFile for Other {
            const SQL: &'static str = "SELECT $1";
            type Binds = (Integer,);
            type Row = Integer;
        }
        fn id<Q: QueryId>(_: &Q) -> Option<std::any::TypeId> {
            Q::query_id()
        }
        let twice = id(&Twice::with((1, None::<&str>)));
        assert!(twice.is_some());
        assert_eq!(twice, id(&Twice::with((2, Some("y")))));
        assert_ne!(twice, id(&Other::with((1,))));
    }

    #[test]
    fn placeholders_skip_comments_and_strings() {
        assert_eq!(placeholders(Twice::SQL), vec![2, 1]);
        assert_eq!(placeholders("SELECT '$3', $1 -- $4"), vec![1]);
        assert_binds_match::<Twice>();
    }

    #[test]
    #[should_panic(expected = "the binds used by")]
    fn a_file_that_skips_a_bind_is_caught() {
        struct Skips;
        impl SqlFile for Skips {
            const SQL: &'static str = "SELECT $1, $3";
            type Binds = (Integer, Integer, Integer);
            type Row = (Integer, Integer);
        }
        assert_binds_match::<Skips>();
    }
}
