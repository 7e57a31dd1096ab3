//! Issues 13 (a) and 21: does a long history slow transitions down or make
//! them write more? Databases of 1000 machines each, their history empty or
//! pre-filled with old transitions (time-ordered v7-like operation ids, as
//! the crate writes them, in the daily partitions of migration
//! 2026-12-05-300000, each machine's chain linked), run the same
//! 1-connection durable walk of `crate/default`, interleaved over the rounds,
//! in two regimes:
//!
//! - `run`: a `CHECKPOINT` before each run (a sweep starting a recipe on each
//!   machine of a window, then one completing each), so each machine's first
//!   transition of the run is its first write since the checkpoint;
//! - `sweep`: a `CHECKPOINT` before each sweep, so every transition is its
//!   machine's first write since the latest checkpoint (the field's regime:
//!   recipes take longer than a checkpoint interval).
//!
//! Per run: the p50, WAL bytes per transition (`pg_current_wal_lsn()` before
//! and after), and, from `pg_walinspect`, how much of that WAL was full-page
//! images and of which relations; from `pg_stat_statements`, server time and
//! buffer reads per transition. The rounds walk different machines.
//!
//! A further series, not a target, runs on the largest history's database
//! (other machines in the same round) with `wal_compression = lz4` for its
//! sessions. After the rounds, the largest history is pruned of its oldest
//! whole partitions holding at least 10M rows (`prune_history`): its time
//! and WAL.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_query;
use diesel::sql_types::{BigInt, Double, Text};
use machine_state::EmbeddedPostgres;

use crate::goal::{self, Goal};
use crate::{Path, Plan, common, connect, max_history_id, verify, workload};

/// The rows a prune removes at least (whole partitions, oldest first).
const PRUNED_ROWS: f64 = 10_000_000.0;

/// Pre-filled entries are this many µs apart: 5M a day, a day a partition.
const STEP_US: u64 = 17_280;

/// One database in one regime, and what its runs measured.
struct Database {
    name: String,
    rows: u64,
    /// The sessions' URL (with `wal_compression` for the variant).
    url: String,
    /// `wal_compression` of the sessions (`off`, the server's default, or
    /// `lz4`): the variant runs on the largest history's database, on other
    /// machines of it in the same round.
    compression: &'static str,
    /// A `CHECKPOINT` before each sweep (`sweep`) rather than each run (`run`).
    per_sweep: bool,
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

impl Database {
    fn new(name: &str, rows: u64, url: String) -> Database {
        Database {
            name: name.to_owned(),
            rows,
            url,
            compression: "off",
            per_sweep: false,
            window_shift: 0,
            last_history: 0,
            p50_us: Vec::new(),
            wal_per_tx: Vec::new(),
            fpi_per_tx: Vec::new(),
            records_per_tx: Vec::new(),
            exec_us_per_tx: Vec::new(),
            reads_per_tx: Vec::new(),
            fpi_by_relation: String::new(),
        }
    }

    fn regime(&self) -> &'static str {
        if self.per_sweep { "sweep" } else { "run" }
    }
}

/// The prune of the largest history.
struct Prune {
    rows: u64,
    removed: u64,
    seconds: f64,
    wal_bytes: f64,
}

pub struct HistoryReport {
    databases: Vec<Database>,
    prefill_seconds: f64,
    prune: Option<Prune>,
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
/// idle cycles of every machine), [`STEP_US`] apart, ending now, each
/// machine's chain unbroken (each entry names the previous one,
/// `history_head` the latest) and ending idle, as the machine is. The daily
/// partitions of that time are created first (today's in every database,
/// the empty one's too), and filled one `INSERT … SELECT generate_series` a
/// day of entries, with `synchronous_commit = off`; foreign-key and link
/// triggers are off for the insert (`session_replication_role = replica`);
/// every machine exists. Operation ids are UUIDv7 of the entry's time, their
/// last 64 bits the entry's number, so that an entry's previous one is
/// computed.
fn prefill(conn: &mut PgConnection, rows: u64, machines: u32) -> Result<(), String> {
    let per_cycle = 2 * u64::from(machines);
    let rows = rows.div_ceil(per_cycle) * per_cycle;
    let days = (rows * STEP_US).div_ceil(86_400_000_000) + 1;
    conn.batch_execute(&format!(
        "SET synchronous_commit = off;
         SELECT count(*) FROM machine_state_prepare_history({days}::integer, now() - interval '{days} days');
         CREATE TEMPORARY TABLE prefill_now AS SELECT (extract(epoch FROM now()) * 1e6)::bigint AS now_us;"
    ))
    .map_err(|e| format!("cannot prepare the partitions: {e}"))?;
    let op = |g: &str, at_ms: &str| {
        format!("(lpad(to_hex({at_ms}), 12, '0') || '7000' || lpad(to_hex({g}), 16, '0'))::uuid")
    };
    let at_ms = |g: &str| format!("((now_us - ({rows} - ({g})) * {STEP_US}) / 1000)");
    // One statement per day of entries.
    let per_day = 86_400_000_000 / STEP_US;
    let mut first = 0;
    while first < rows {
        let last = (first + per_day).min(rows) - 1;
        conn.batch_execute(&format!(
            "SET session_replication_role = replica;
             INSERT INTO machine_state_transitions
                 (machine_id, from_state, to_state, process_id, operation_id, kind,
                  transitioned_at, isolation_level, verb, previous_operation_id)
             SELECT lpad(to_hex(g % {machines} + 1), 32, '0')::uuid,
                    CASE WHEN (g / {machines}) % 2 = 0 THEN 'idle' ELSE 'processing' END,
                    CASE WHEN (g / {machines}) % 2 = 0 THEN 'processing' ELSE 'idle' END,
                    ('2' || lpad(to_hex(g / {per_cycle}), 15, '0')
                         || lpad(to_hex(g % {machines} + 1), 16, '0'))::uuid,
                    {this}, 'transition', to_timestamp({at} / 1000.0), 'repeatable read',
                    CASE WHEN (g / {machines}) % 2 = 0 THEN 'start' ELSE 'complete' END,
                    CASE WHEN g >= {machines} THEN {previous} END
             FROM prefill_now, generate_series({first}::bigint, {last}) g;
             SET session_replication_role = DEFAULT;",
            this = op("g", &at_ms("g")),
            at = at_ms("g"),
            previous = op(
                &format!("(g - {machines})"),
                &at_ms(&format!("g - {machines}"))
            ),
        ))
        .map_err(|e| format!("cannot pre-fill history rows {first}..={last}: {e}"))?;
        first = last + 1;
    }
    conn.batch_execute(&format!(
        "UPDATE machine_state s SET history_head = {head}
         FROM prefill_now, generate_series({rows} - {machines}, {rows} - 1) g
         WHERE {rows} > 0 AND s.machine_id = lpad(to_hex(g % {machines} + 1), 32, '0')::uuid;
         SET synchronous_commit = DEFAULT",
        head = op("g", &at_ms("g")),
    ))
    .map_err(|e| format!("cannot link the pre-filled history: {e}"))?;
    conn.batch_execute("VACUUM ANALYZE machine_state_transitions")
        .map_err(|e| format!("cannot vacuum the pre-filled history: {e}"))
}

pub fn run(
    server: &EmbeddedPostgres,
    admin: &mut PgConnection,
    sizes: &[u64],
    machines: u32,
    plan: Plan,
    rounds: usize,
) -> Result<HistoryReport, String> {
    let began = Instant::now();
    let mut databases = Vec::new();
    for (i, rows) in std::iter::once(0).chain(sizes.iter().copied()).enumerate() {
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
        // Both regimes on each database, on different machines in a round.
        for per_sweep in [false, true] {
            databases.push(Database {
                per_sweep,
                window_shift: if per_sweep { 2 } else { 0 },
                ..Database::new(&name, rows, url.clone())
            });
        }
    }
    if let Some(largest) = databases.iter().rfind(|d| !d.per_sweep) {
        let variant = Database {
            compression: "lz4",
            window_shift: 4,
            ..Database::new(
                &largest.name,
                largest.rows,
                format!("{}&options=-c%20wal_compression%3Dlz4", largest.url),
            )
        };
        databases.push(variant);
    }
    let prefill_seconds = began.elapsed().as_secs_f64();

    for round in 0..rounds {
        let mut order: Vec<usize> = (0..databases.len()).collect();
        order.rotate_left(round % databases.len());
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let plan = plan.in_round(round + databases[i].window_shift);
            measure(&mut databases[i], plan)?;
        }
        println!("history: round {}/{rounds} done", round + 1);
    }

    let mut goals = Vec::new();
    let mut goals_info = String::new();
    for db in &databases {
        let Some(empty) = databases
            .iter()
            .find(|e| e.rows == 0 && e.per_sweep == db.per_sweep && e.compression == "off")
        else {
            continue;
        };
        if db.rows == 0 {
            continue;
        }
        let ratio = |f: &dyn Fn(&Database) -> &Vec<f64>| -> Vec<f64> {
            f(db).iter().zip(f(empty)).map(|(a, b)| a / b).collect()
        };
        let p50 = ratio(&|d| &d.p50_us);
        let wal = ratio(&|d| &d.wal_per_tx);
        if db.compression != "off" {
            let _ = writeln!(
                goals_info,
                "| WAL per transition, {} rows, `wal_compression = {}` ÷ empty (off) | {:.2}× ({}) |",
                db.rows,
                db.compression,
                goal::median(&wal),
                goal::range(&wal)
            );
            continue;
        }
        let what = format!(
            "(a) history of {} rows, checkpoint per {}",
            millions(db.rows),
            db.regime()
        );
        goals.push(
            Goal::at_most(
                format!("{what}: p50 ÷ empty history"),
                goal::median(&p50),
                1.05,
                "×",
            )
            .note(goal::range(&p50)),
        );
        goals.push(
            Goal::at_most(
                format!("{what}: WAL per transition ÷ empty history"),
                goal::median(&wal),
                1.3,
                "×",
            )
            .note(goal::range(&wal)),
        );
    }
    let prune = match databases.iter().rfind(|d| d.rows > 0) {
        Some(largest) => Some(prune(&largest.url, largest.rows)?),
        None => None,
    };
    if let Some(prune) = &prune {
        let what = format!(
            "(a) pruning {} of {} rows",
            millions(prune.removed),
            millions(prune.rows)
        );
        goals.push(Goal::at_most(
            format!("{what}: time"),
            prune.seconds,
            5.0,
            " s",
        ));
        goals.push(Goal::at_most(
            format!("{what}: WAL"),
            prune.wal_bytes / 1e6,
            10.0,
            " MB",
        ));
    }
    Ok(HistoryReport {
        databases,
        prefill_seconds,
        prune,
        goals,
        info: goals_info,
    })
}

/// One measurement of `db` under `plan`: one run, or (`per_sweep`) one run
/// per sweep, each right after a `CHECKPOINT`; the figures are their sums.
fn measure(db: &mut Database, plan: Plan) -> Result<(), String> {
    let runs = if db.per_sweep {
        vec![plan.sweep(0), plan.sweep(1)]
    } else {
        vec![plan]
    };
    let conn = &mut connect(&db.url)?;
    db.last_history = max_history_id(conn)?;
    let (mut latencies, mut wal, mut server) = (Vec::new(), Vec::new(), Vec::new());
    let mut fpi = Vec::new();
    for run in &runs {
        let mut start = None;
        let measured = workload::run(&db.url, Path::Default, run, || {
            // Every run (sweep) starts a checkpoint cycle: each first change
            // of a page writes it whole, as in production.
            conn.batch_execute("CHECKPOINT; SELECT pg_stat_statements_reset()")
                .map_err(|e| format!("cannot checkpoint and reset pg_stat_statements: {e}"))?;
            start = Some(current_lsn(conn)?);
            Ok(())
        })?;
        let end = current_lsn(conn)?;
        let start = start.ok_or("the run never started")?;
        wal.push(
            sql_query(format!(
                "SELECT pg_wal_lsn_diff('{end}', '{start}')::float8 AS bytes,
                        coalesce(sum(count), 0)::float8 AS records,
                        coalesce(sum(fpi_size), 0)::float8 AS fpi_bytes
                 FROM pg_get_wal_stats('{start}', '{end}')"
            ))
            .get_result::<WalStats>(conn)
            .map_err(|e| format!("cannot read the WAL stats: {e}"))?,
        );
        server.push(
            sql_query(
                "SELECT coalesce(sum(s.total_exec_time), 0)::float8 AS exec_ms,
                        coalesce(sum(s.shared_blks_read), 0)::float8 AS reads
                 FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
                 WHERE d.datname = current_database()
                   AND s.query NOT LIKE '%pg_stat_statements%'
                   AND s.query NOT LIKE '%pg_current_wal_lsn%'",
            )
            .get_result::<Server>(conn)
            .map_err(|e| format!("cannot read pg_stat_statements: {e}"))?,
        );
        fpi.push(fpi_by_relation(
            conn,
            &start,
            &end,
            measured.latencies_us.len() as f64,
        )?);
        latencies.extend(measured.latencies_us);
    }
    db.last_history = verify(conn, Path::Default, &plan, db.last_history)?;
    let n = latencies.len() as f64;
    db.fpi_by_relation = fpi.join("; ");
    db.p50_us.push(goal::median(&latencies));
    db.wal_per_tx
        .push(wal.iter().map(|w| w.bytes).sum::<f64>() / n);
    db.fpi_per_tx
        .push(wal.iter().map(|w| w.fpi_bytes).sum::<f64>() / n);
    db.records_per_tx
        .push(wal.iter().map(|w| w.records).sum::<f64>() / n);
    db.exec_us_per_tx
        .push(server.iter().map(|s| s.exec_ms).sum::<f64>() * 1000.0 / n);
    db.reads_per_tx
        .push(server.iter().map(|s| s.reads).sum::<f64>() / n);
    Ok(())
}

#[derive(QueryableByName)]
struct Cutoff {
    #[diesel(sql_type = Double)]
    older_than_s: f64,
}

#[derive(QueryableByName)]
struct Headless {
    #[diesel(sql_type = BigInt)]
    headless: i64,
}

/// Prune the history at `url` of its oldest whole daily partitions holding
/// at least [`PRUNED_ROWS`] entries (all those older than a day, if fewer),
/// with `prune_history`: its time and WAL. Every machine's latest entry must
/// survive it.
fn prune(url: &str, rows: u64) -> Result<Prune, String> {
    let conn = &mut connect(url)?;
    let cutoff: Cutoff = sql_query(format!(
        "WITH parts AS (
             SELECT c.reltuples::float8 AS entries,
                    ('x' || left(translate((regexp_match(pg_get_expr(c.relpartbound, c.oid),
                                                         'TO \\(''([^'']+)''\\)'))[1], '-', ''), 12)
                    )::bit(48)::bigint AS high_ms
             FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = 'machine_state_transitions'::regclass
               AND pg_get_expr(c.relpartbound, c.oid) <> 'DEFAULT'
         ),
         old AS (
             SELECT high_ms, sum(entries) OVER (ORDER BY high_ms) AS entries
             FROM parts WHERE to_timestamp(high_ms / 1000.0) <= now() - interval '1 day'
         )
         SELECT extract(epoch FROM now() - to_timestamp(coalesce(
                    (SELECT min(high_ms) FROM old WHERE entries >= {PRUNED_ROWS}),
                    (SELECT max(high_ms) FROM old)) / 1000.0))::float8 AS older_than_s"
    ))
    .get_result(conn)
    .map_err(|e| format!("cannot choose the partitions to prune: {e}"))?;
    conn.batch_execute("CHECKPOINT")
        .map_err(|e| format!("cannot checkpoint: {e}"))?;
    let start = current_lsn(conn)?;
    let started = Instant::now();
    let removed = machine_state::history::prune_history(
        conn,
        Duration::from_secs_f64(cutoff.older_than_s),
        10_000,
    )
    .map_err(|e| format!("cannot prune the history: {e}"))?;
    let seconds = started.elapsed().as_secs_f64();
    let end = current_lsn(conn)?;
    let wal: WalStats = sql_query(format!(
        "SELECT pg_wal_lsn_diff('{end}', '{start}')::float8 AS bytes, 0::float8 AS records,
                0::float8 AS fpi_bytes"
    ))
    .get_result(conn)
    .map_err(|e| format!("cannot read the WAL position: {e}"))?;
    let headless: Headless = sql_query(
        "SELECT count(*) AS headless FROM machine_state s
         WHERE NOT EXISTS (SELECT 1 FROM machine_state_transitions t
                           WHERE t.operation_id = s.history_head AND t.machine_id = s.machine_id)",
    )
    .get_result(conn)
    .map_err(|e| format!("cannot check the heads: {e}"))?;
    if headless.headless != 0 {
        return Err(format!(
            "pruning removed the latest entry of {} machines",
            headless.headless
        ));
    }
    println!("history: pruned {removed} of {rows} rows in {seconds:.2} s");
    Ok(Prune {
        rows,
        removed,
        seconds,
        wal_bytes: wal.bytes,
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
             Setup and pre-fill: {:.0} s. Medians over rounds, per transition; a `CHECKPOINT` \
             before each run (`run`: a sweep starting a recipe on each machine of a window, \
             one completing each) or before each sweep (`sweep`: every transition is its \
             machine's first write since the latest checkpoint).\n\n\
             | history rows | checkpoint per | `wal_compression` | p50 µs | WAL bytes | of which full-page images | WAL records | server exec µs | shared blocks read | full-page images by relation (last run) |\n\
             |---|---|---|---|---|---|---|---|---|---|\n",
            self.prefill_seconds
        );
        for db in &self.databases {
            let _ = writeln!(
                text,
                "| {} (`{}`) | {} | {} | {:.0} | {:.0} | {:.0} | {:.1} | {:.0} | {:.2} | {} |",
                db.rows,
                db.name,
                db.regime(),
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
             image is written for the first change of a page after a checkpoint.\n",
        );
        if let Some(prune) = &self.prune {
            let _ = writeln!(
                text,
                "\nPruning the largest history ({} rows) of its oldest whole daily partitions \
                 (`prune_history`, after a `CHECKPOINT`): {} entries removed in {:.2} s, \
                 {:.2} MB of WAL.",
                prune.rows,
                prune.removed,
                prune.seconds,
                prune.wal_bytes / 1e6
            );
        }
        if !self.info.is_empty() {
            text.push_str("\n| remedy | ratio |\n|---|---|\n");
            text.push_str(&self.info);
        }
        text
    }
}
