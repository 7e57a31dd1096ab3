//! Issue 13 (a): does a long history slow transitions down or make them
//! write more? Three databases of 1000 machines each, their history empty or
//! pre-filled with old transitions (time-ordered v7-like operation ids, as
//! the crate writes them), run the same 1-connection durable walk of
//! `crate/default`, interleaved over the rounds. Per run: the p50, WAL bytes
//! per transition (`pg_current_wal_lsn()` before and after), and, from
//! `pg_walinspect`, how much of that WAL was full-page images and of which
//! relations; from `pg_stat_statements`, server time and buffer reads per
//! transition. Each round starts with a `CHECKPOINT`, and the rounds walk
//! different machines, so every run pays the full-page images a machine's
//! first transition after a checkpoint pays.
//!
//! A fourth series, not a target, runs on the largest history's database
//! (other machines in the same round) with `wal_compression = lz4` for its
//! sessions: the server-side remedy for those images.

use std::fmt::Write as _;
use std::time::Instant;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_query;
use diesel::sql_types::{Double, Text};
use machine_state::EmbeddedPostgres;

use crate::goal::{self, Goal};
use crate::{Path, Plan, common, connect, max_history_id, verify, workload};

/// One database and what its runs measured.
struct Database {
    name: String,
    rows: u64,
    /// The sessions' URL (with `wal_compression` for the variant).
    url: String,
    /// `wal_compression` of the sessions (`off`, the server's default, or
    /// `lz4`): the variant runs on the largest history's database, on other
    /// machines of it in the same round.
    compression: &'static str,
    /// Which window of machines a round walks, moved on by this many.
    window_shift: usize,
    last_history: i64,
    p50_us: Vec<f64>,
    wal_per_tx: Vec<f64>,
    fpi_per_tx: Vec<f64>,
    records_per_tx: Vec<f64>,
    exec_us_per_tx: Vec<f64>,
    reads_per_tx: Vec<f64>,
    /// Full-page images per transition by relation, in the last run.
    fpi_by_relation: String,
}

pub struct HistoryReport {
    databases: Vec<Database>,
    prefill_seconds: f64,
    pub goals: Vec<Goal>,
    /// The variant's ratio (a table row), not a target.
    info: String,
}

#[derive(QueryableByName)]
struct Lsn {
    #[diesel(sql_type = Text)]
    lsn: String,
}

#[derive(QueryableByName)]
struct WalStats {
    #[diesel(sql_type = Double)]
    bytes: f64,
    #[diesel(sql_type = Double)]
    records: f64,
    #[diesel(sql_type = Double)]
    fpi_bytes: f64,
}

#[derive(QueryableByName)]
struct Server {
    #[diesel(sql_type = Double)]
    exec_ms: f64,
    #[diesel(sql_type = Double)]
    reads: f64,
}

fn current_lsn(admin: &mut PgConnection) -> Result<String, String> {
    sql_query("SELECT pg_current_wal_lsn()::text AS lsn")
        .get_result::<Lsn>(admin)
        .map(|l| l.lsn)
        .map_err(|e| format!("cannot read the WAL position: {e}"))
}

/// Pre-fill `rows` old transitions (rounded up to whole idle → processing →
/// idle cycles of every machine), 10 ms apart, ending now, each machine's
/// chain unbroken (each entry names the previous one, `history_head` the
/// latest) and ending idle, as the machine is. The daily partitions of that
/// time are created first, and filled one `INSERT … SELECT generate_series`
/// each, with `synchronous_commit = off`; foreign-key and link triggers are
/// off for the insert (`session_replication_role = replica`); every machine
/// exists. Operation ids are UUIDv7 of the entry's time, their last 64 bits
/// the entry's number, so that an entry's previous one is computed.
fn prefill(conn: &mut PgConnection, rows: u64, machines: u32) -> Result<(), String> {
    if rows == 0 {
        return Ok(());
    }
    let per_cycle = 2 * u64::from(machines);
    let rows = rows.div_ceil(per_cycle) * per_cycle;
    let op = |g: &str, at: &str| {
        format!("(lpad(to_hex({at}), 12, '0') || '7000' || lpad(to_hex({g}), 16, '0'))::uuid")
    };
    let days = (rows * 10).div_ceil(86_400_000) + 1;
    conn.batch_execute(&format!(
        "SET synchronous_commit = off;
         SELECT count(*) FROM machine_state_prepare_history({days}::integer, now() - interval '{days} days');
         CREATE TEMPORARY TABLE prefill_now AS SELECT (extract(epoch FROM now()) * 1000)::bigint AS now_ms;"
    ))
    .map_err(|e| format!("cannot prepare the partitions: {e}"))?;
    // One statement per day of entries: each fills one partition.
    let per_day = 8_640_000u64;
    let mut first = 0;
    while first < rows {
        let last = (first + per_day).min(rows) - 1;
        conn.batch_execute(&format!(
            "SET session_replication_role = replica;
             INSERT INTO machine_state_transitions
                 (machine_id, from_state, to_state, process_id, operation_id, kind,
                  transitioned_at, isolation_level, previous_operation_id)
             SELECT lpad(to_hex(g % {machines} + 1), 32, '0')::uuid,
                    CASE WHEN (g / {machines}) % 2 = 0 THEN 'idle' ELSE 'processing' END,
                    CASE WHEN (g / {machines}) % 2 = 0 THEN 'processing' ELSE 'idle' END,
                    ('2' || lpad(to_hex(g / {per_cycle}), 15, '0')
                         || lpad(to_hex(g % {machines} + 1), 16, '0'))::uuid,
                    {this}, 'transition', to_timestamp(at_ms / 1000.0), 'repeatable read',
                    CASE WHEN g >= {machines} THEN {previous} END
             FROM (SELECT g, now_ms - ({rows} - g) * 10 AS at_ms
                   FROM prefill_now, generate_series({first}::bigint, {last}) g) t;
             SET session_replication_role = DEFAULT;",
            this = op("g", "at_ms"),
            previous = op(&format!("(g - {machines})"), "(at_ms - 10 * {machines})"),
        ))
        .map_err(|e| format!("cannot pre-fill history rows {first}..={last}: {e}"))?;
        first = last + 1;
    }
    conn.batch_execute(&format!(
        "UPDATE machine_state s SET history_head = {head}
         FROM prefill_now, generate_series({rows} - {machines}, {rows} - 1) g
         WHERE s.machine_id = lpad(to_hex(g % {machines} + 1), 32, '0')::uuid;
         SET synchronous_commit = DEFAULT;
         VACUUM ANALYZE machine_state_transitions",
        head = op("g", &format!("(now_ms - ({rows} - g) * 10)")),
    ))
    .map_err(|e| format!("cannot link the pre-filled history: {e}"))
}

pub fn run(
    server: &EmbeddedPostgres,
    admin: &mut PgConnection,
    sizes: [u64; 2],
    machines: u32,
    plan: Plan,
    rounds: usize,
) -> Result<HistoryReport, String> {
    let began = Instant::now();
    let mut databases = Vec::new();
    for (i, rows) in [0, sizes[0], sizes[1]].into_iter().enumerate() {
        let name = format!("history_{i}");
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .map_err(|e| format!("cannot create the database `{name}`: {e}"))?;
        let url = server.url(&name);
        let conn = &mut connect(&url)?;
        machine_state::run_migrations(conn).map_err(|e| format!("cannot migrate: {e}"))?;
        conn.batch_execute("CREATE EXTENSION pg_stat_statements; CREATE EXTENSION pg_walinspect")
            .map_err(|e| format!("cannot create the extensions: {e}"))?;
        common::seed(conn, machines);
        let started = Instant::now();
        prefill(conn, rows, machines)?;
        println!(
            "history: `{name}` pre-filled with {rows} rows in {:.0} s",
            started.elapsed().as_secs_f64()
        );
        databases.push(Database {
            name,
            rows,
            last_history: max_history_id(conn)?,
            url,
            compression: "off",
            window_shift: 0,
            p50_us: Vec::new(),
            wal_per_tx: Vec::new(),
            fpi_per_tx: Vec::new(),
            records_per_tx: Vec::new(),
            exec_us_per_tx: Vec::new(),
            reads_per_tx: Vec::new(),
            fpi_by_relation: String::new(),
        });
    }
    if let Some(largest) = databases.last() {
        let variant = Database {
            url: format!("{}&options=-c%20wal_compression%3Dlz4", largest.url),
            compression: "lz4",
            window_shift: 4,
            name: largest.name.clone(),
            rows: largest.rows,
            last_history: 0,
            p50_us: Vec::new(),
            wal_per_tx: Vec::new(),
            fpi_per_tx: Vec::new(),
            records_per_tx: Vec::new(),
            exec_us_per_tx: Vec::new(),
            reads_per_tx: Vec::new(),
            fpi_by_relation: String::new(),
        };
        databases.push(variant);
    }
    let prefill_seconds = began.elapsed().as_secs_f64();

    for round in 0..rounds {
        // Every round starts a checkpoint cycle: each run's first change of a
        // page writes it whole, as the first transition of a machine after a
        // checkpoint does in production.
        admin
            .batch_execute("CHECKPOINT")
            .map_err(|e| format!("cannot checkpoint: {e}"))?;
        let mut order: Vec<usize> = (0..databases.len()).collect();
        order.rotate_left(round % databases.len());
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let db = &mut databases[i];
            let plan = plan.in_round(round + db.window_shift);
            let conn = &mut connect(&db.url)?;
            db.last_history = max_history_id(conn)?;
            let mut start = None;
            let measured = workload::run(&db.url, Path::Default, &plan, || {
                conn.batch_execute("SELECT pg_stat_statements_reset()")
                    .map_err(|e| format!("cannot reset pg_stat_statements: {e}"))?;
                start = Some(current_lsn(conn)?);
                Ok(())
            })?;
            let end = current_lsn(conn)?;
            let start = start.ok_or("the run never started")?;
            db.last_history = verify(conn, Path::Default, &plan, db.last_history)?;
            let wal: WalStats = sql_query(format!(
                "SELECT pg_wal_lsn_diff('{end}', '{start}')::float8 AS bytes,
                        coalesce(sum(count), 0)::float8 AS records,
                        coalesce(sum(fpi_size), 0)::float8 AS fpi_bytes
                 FROM pg_get_wal_stats('{start}', '{end}')"
            ))
            .get_result(conn)
            .map_err(|e| format!("cannot read the WAL stats: {e}"))?;
            let server: Server = sql_query(
                "SELECT coalesce(sum(s.total_exec_time), 0)::float8 AS exec_ms,
                        coalesce(sum(s.shared_blks_read), 0)::float8 AS reads
                 FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
                 WHERE d.datname = current_database()
                   AND s.query NOT LIKE '%pg_stat_statements%'
                   AND s.query NOT LIKE '%pg_current_wal_lsn%'",
            )
            .get_result(conn)
            .map_err(|e| format!("cannot read pg_stat_statements: {e}"))?;
            let n = measured.latencies_us.len() as f64;
            db.fpi_by_relation = fpi_by_relation(conn, &start, &end, n)?;
            db.p50_us.push(goal::median(&measured.latencies_us));
            db.wal_per_tx.push(wal.bytes / n);
            db.fpi_per_tx.push(wal.fpi_bytes / n);
            db.records_per_tx.push(wal.records / n);
            db.exec_us_per_tx.push(server.exec_ms * 1000.0 / n);
            db.reads_per_tx.push(server.reads / n);
        }
        println!("history: round {}/{rounds} done", round + 1);
    }

    let mut goals = Vec::new();
    let mut goals_info = String::new();
    for i in 1..databases.len() {
        let ratio = |f: &dyn Fn(&Database) -> &Vec<f64>| -> Vec<f64> {
            f(&databases[i])
                .iter()
                .zip(f(&databases[0]))
                .map(|(a, b)| a / b)
                .collect()
        };
        let p50 = ratio(&|d| &d.p50_us);
        let wal = ratio(&|d| &d.wal_per_tx);
        let rows = databases[i].rows;
        if databases[i].compression != "off" {
            let _ = writeln!(
                goals_info,
                "| WAL per transition, {} rows, `wal_compression = {}` ÷ empty (off) | {:.2}× ({}) |",
                rows,
                databases[i].compression,
                goal::median(&wal),
                goal::range(&wal)
            );
            continue;
        }
        goals.push(
            Goal::at_most(
                format!(
                    "(a) history of {} rows: p50 ÷ empty history",
                    millions(rows)
                ),
                goal::median(&p50),
                1.05,
                "×",
            )
            .note(goal::range(&p50)),
        );
        goals.push(
            Goal::at_most(
                format!(
                    "(a) history of {} rows: WAL per transition ÷ empty history",
                    millions(rows)
                ),
                goal::median(&wal),
                1.5,
                "×",
            )
            .note(goal::range(&wal)),
        );
    }
    Ok(HistoryReport {
        databases,
        prefill_seconds,
        goals,
        info: goals_info,
    })
}

#[derive(QueryableByName)]
struct RelationFpi {
    #[diesel(sql_type = Text)]
    relation: String,
    #[diesel(sql_type = Double)]
    images: f64,
}

/// Which relations the full-page images between `start` and `end` were of
/// (block references marked `FPW`), the top three, per transition.
fn fpi_by_relation(
    conn: &mut PgConnection,
    start: &str,
    end: &str,
    transactions: f64,
) -> Result<String, String> {
    let rows: Vec<RelationFpi> = sql_query(format!(
        "SELECT coalesce(pg_filenode_relation(0, m[1]::oid)::text, 'filenode ' || m[1])
                    AS relation,
                count(*)::float8 AS images
         FROM pg_get_wal_records_info('{start}', '{end}') r,
              regexp_matches(r.block_ref, 'rel [0-9]+/[0-9]+/([0-9]+)(?: fork [a-z_]+)? blk [0-9]+ [(]?FPW', 'g') m
         GROUP BY 1 ORDER BY 2 DESC LIMIT 3"
    ))
    .load(conn)
    .map_err(|e| format!("cannot read the WAL records: {e}"))?;
    Ok(rows
        .iter()
        .map(|r| format!("`{}` {:.3}", r.relation, r.images / transactions))
        .collect::<Vec<_>>()
        .join(", "))
}

fn millions(rows: u64) -> String {
    format!("{}M", rows as f64 / 1e6)
}

impl HistoryReport {
    pub fn markdown(&self) -> String {
        let mut text = format!(
            "## (a) Transitions over a long history (`crate/default`, 1 conn, durable)\n\n\
             Setup and pre-fill: {:.0} s. Medians over rounds, per transition.\n\n\
             | history rows | `wal_compression` | p50 µs | WAL bytes | of which full-page images | WAL records | server exec µs | shared blocks read | full-page images by relation (last run) |\n\
             |---|---|---|---|---|---|---|---|---|\n",
            self.prefill_seconds
        );
        for db in &self.databases {
            let _ = writeln!(
                text,
                "| {} (`{}`) | {} | {:.0} | {:.0} | {:.0} | {:.1} | {:.0} | {:.2} | {} |",
                db.rows,
                db.name,
                db.compression,
                goal::median(&db.p50_us),
                goal::median(&db.wal_per_tx),
                goal::median(&db.fpi_per_tx),
                goal::median(&db.records_per_tx),
                goal::median(&db.exec_us_per_tx),
                goal::median(&db.reads_per_tx),
                db.fpi_by_relation,
            );
        }
        text.push_str(
            "\nWAL: `pg_current_wal_lsn()` difference around each run (the whole server: \
             the bench runs nothing else meanwhile), split by `pg_walinspect`; a full-page \
             image is written for the first change of a page after a checkpoint \
             (each round starts with a `CHECKPOINT`).\n",
        );
        if !self.info.is_empty() {
            text.push_str("\n| remedy | ratio |\n|---|---|\n");
            text.push_str(&self.info);
        }
        text
    }
}
