//! The SQL-only paths, run by `pgbench` against the same server and the same
//! machines as the crate.
//!
//! Every script walks the client's machines in the same order as the crate's
//! workload (see [`crate::Plan`]): client `c` of `C` owns machines `c + 1`,
//! `c + 1 + C`, ...; the first sweep over a window of them starts a recipe on
//! each (`idle -> processing`), the next one completes it, and so on.
//! Variables persist across a client's transactions, so a counter `k` says
//! which machine and which direction comes next.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{Measured, Path as BenchPath, Plan};

/// bench machine `n` as SQL (see `common::machine_id`).
const MACHINE: &str = "lpad(to_hex(:m::int), 32, '0')::uuid";
/// The run of machine `n` as SQL (see `common::process_id`).
const PROCESS: &str = "('10000000' || lpad(to_hex(:m::int), 24, '0'))::uuid";

/// The direction of one step.
#[derive(Clone, Copy)]
enum Direction {
    Start,
    Complete,
}

impl Direction {
    fn from(self) -> &'static str {
        match self {
            Direction::Start => "idle",
            Direction::Complete => "processing",
        }
    }

    fn to(self) -> &'static str {
        match self {
            Direction::Start => "processing",
            Direction::Complete => "idle",
        }
    }

    /// The process id the machine holds after the step (SQL).
    fn new_process(self) -> &'static str {
        match self {
            Direction::Start => PROCESS,
            Direction::Complete => "NULL",
        }
    }

    /// `= x` or `IS NULL`, comparing a column with `expected`.
    fn matches_expected(self) -> String {
        match self {
            Direction::Start => "IS NULL".to_owned(),
            Direction::Complete => format!("= {PROCESS}"),
        }
    }
}

/// The pgbench script of a SQL path.
fn script(path: BenchPath) -> String {
    let header = "\\set k :k + 1\n\
                  \\set j (:k - 1) % :window\n\
                  \\set m :client_id + 1 + ((:offset + :j) % :per) * :nclients\n";
    if path == BenchPath::Select1 {
        return format!("{header}SELECT 1;\n");
    }
    let body = |direction| match path {
        BenchPath::Function => function_sql(direction),
        BenchPath::Cte => cte_sql(direction),
        BenchPath::ExplicitTx => explicit_tx_sql(direction),
        BenchPath::Legacy => legacy_sql(direction),
        _ => unreachable!("{path:?} is not a pgbench path"),
    };
    format!(
        "{header}\\if ((:k - 1) / :window) % 2 = 0\n{}\\else\n{}\\endif\n",
        body(Direction::Start),
        body(Direction::Complete)
    )
}

/// One statement: the shipped plpgsql function (locks both rows, writes both
/// and the history).
fn function_sql(d: Direction) -> String {
    // Leaving `processing` names the run expected to end; entering it, the new run.
    format!(
        "SELECT machine_state_transition({MACHINE}, '{}', '{}', {PROCESS});\n",
        d.from(),
        d.to()
    )
}

/// One statement: two data-modifying CTEs guarded on both rows, plus the
/// history insert.
fn cte_sql(d: Direction) -> String {
    let (from, to, new, expected) = (d.from(), d.to(), d.new_process(), d.matches_expected());
    format!(
        "WITH m AS (\n\
        \x20   UPDATE machines m\n\
        \x20   SET status = '{to}', current_process_id = {new}, updated_at = now()\n\
        \x20   FROM machine_state s\n\
        \x20   WHERE m.id = {MACHINE} AND s.machine_id = m.id\n\
        \x20     AND m.status = '{from}' AND m.current_process_id {expected}\n\
        \x20     AND s.current_state = '{from}' AND s.process_id {expected}\n\
        \x20   RETURNING m.id\n\
        ), s AS (\n\
        \x20   UPDATE machine_state\n\
        \x20   SET current_state = '{to}', process_id = {new}, state_since = now(),\n\
        \x20       updated_at = now(), is_failure_mode = false, failure_component = NULL,\n\
        \x20       failure_description = NULL\n\
        \x20   WHERE machine_id IN (SELECT id FROM m)\n\
        \x20   RETURNING machine_id\n\
        )\n\
        INSERT INTO machine_state_transitions\n\
        \x20   (machine_id, from_state, to_state, process_id, operation_id, kind, transitioned_at)\n\
        SELECT machine_id, '{from}', '{to}', {PROCESS}, gen_random_uuid(), 'transition', now()\n\
        FROM s;\n"
    )
}

/// The hand-written SQL of the query-builder path: `BEGIN`, two guarded
/// updates, the history insert, `COMMIT` (five round trips, all prepared).
fn explicit_tx_sql(d: Direction) -> String {
    let (from, to, new, expected) = (d.from(), d.to(), d.new_process(), d.matches_expected());
    format!(
        "BEGIN ISOLATION LEVEL REPEATABLE READ;\n\
        UPDATE machines SET status = '{to}', current_process_id = {new}, updated_at = now()\n\
        WHERE id = {MACHINE} AND status = '{from}' AND current_process_id {expected};\n\
        UPDATE machine_state SET current_state = '{to}', process_id = {new}, state_since = now(),\n\
        \x20   updated_at = now(), is_failure_mode = false, failure_component = NULL,\n\
        \x20   failure_description = NULL\n\
        WHERE machine_id = {MACHINE} AND current_state = '{from}' AND process_id {expected};\n\
        INSERT INTO machine_state_transitions\n\
        \x20   (machine_id, from_state, to_state, process_id, operation_id, kind, transitioned_at)\n\
        VALUES ({MACHINE}, '{from}', '{to}', {PROCESS}, gen_random_uuid(), 'transition', now());\n\
        COMMIT;\n"
    )
}

/// The legacy pattern: two blind autocommit updates, no history.
fn legacy_sql(d: Direction) -> String {
    let (to, new) = (d.to(), d.new_process());
    format!(
        "UPDATE machines SET status = '{to}', current_process_id = {new}, updated_at = now()\n\
        WHERE id = {MACHINE};\n\
        UPDATE machine_state SET current_state = '{to}', process_id = {new}, state_since = now(),\n\
        \x20   updated_at = now()\n\
        WHERE machine_id = {MACHINE};\n"
    )
}

/// Write every pgbench script into `dir`.
pub fn write_scripts(dir: &Path) -> std::io::Result<()> {
    for path in BenchPath::ALL.iter().filter(|p| p.is_pgbench()) {
        fs::write(script_path(dir, *path), script(*path))?;
    }
    Ok(())
}

fn script_path(dir: &Path, path: BenchPath) -> PathBuf {
    dir.join(format!("{}.sql", path.name()))
}

/// The `pgbench` of the server's installation: beside its `postgres` (the
/// binary directory may hold symbolic links to it), else on `PATH`.
pub fn find(bin_dir: &Path) -> PathBuf {
    let beside = |dir: &Path| Some(dir.join("pgbench")).filter(|p| p.is_file());
    beside(bin_dir)
        .or_else(|| {
            let real = fs::canonicalize(bin_dir.join("postgres")).ok()?;
            beside(real.parent()?)
        })
        .unwrap_or_else(|| PathBuf::from("pgbench"))
}

/// Where to reach the server, and as whom.
#[derive(Clone, Copy)]
pub struct Target<'a> {
    /// The `pgbench` to run ([`find`]).
    pub pgbench: &'a Path,
    pub socket_dir: &'a Path,
    pub database: &'a str,
    /// The directory of the scripts, also used for pgbench's logs.
    pub work_dir: &'a Path,
    /// More `PGOPTIONS` for the sessions (`-c name=value ...`), or empty.
    pub options: &'a str,
}

/// Run `path` under `plan`; per-transaction latencies come from pgbench's
/// own log (`-l`), the throughput from its report.
pub fn run(target: &Target<'_>, path: BenchPath, plan: &Plan) -> Result<Measured, String> {
    let threads = plan.clients.min(plan.cores);
    let prefix = target.work_dir.join(format!("log-{}", path.name()));
    let mut options = String::from("-c default_transaction_isolation=repeatable\\ read");
    if !plan.durable {
        options.push_str(" -c synchronous_commit=off");
    }
    if !target.options.is_empty() {
        options.push(' ');
        options.push_str(target.options);
    }
    let output = Command::new(target.pgbench)
        .args(["-n", "-M", "prepared", "-l"])
        .arg(format!("--log-prefix={}", prefix.display()))
        .arg("-f")
        .arg(script_path(target.work_dir, path))
        .args(["-c", &plan.clients.to_string()])
        .args(["-j", &threads.to_string()])
        .args(["-t", &plan.transactions_per_client.to_string()])
        .args(["-D", "k=0"])
        .args(["-D", &format!("per={}", plan.machines_per_client)])
        .args(["-D", &format!("window={}", plan.window)])
        .args(["-D", &format!("offset={}", plan.offset)])
        .args(["-D", &format!("nclients={}", plan.clients)])
        .arg("-h")
        .arg(target.socket_dir)
        .args(["-p", "5432", "-U", "postgres", target.database])
        .env("PGOPTIONS", options)
        .current_dir(target.work_dir)
        .output()
        .map_err(|e| format!("cannot run `pgbench`: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!(
            "`pgbench` failed on {} ({}):\n{}\n{}",
            path.name(),
            output.status,
            stdout.trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let tps = stdout
        .lines()
        .find_map(|line| line.strip_prefix("tps = "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|tps| tps.parse::<f64>().ok())
        .ok_or_else(|| format!("no `tps = ` line in pgbench's output:\n{stdout}"))?;
    let (latencies_us, failed) = read_logs(&prefix)?;
    if failed > 0 {
        return Err(format!(
            "pgbench logged {failed} failed transactions of {}",
            path.name()
        ));
    }
    let expected = plan.transactions();
    if latencies_us.len() != expected {
        return Err(format!(
            "pgbench logged {} transactions of {}, expected {expected}",
            latencies_us.len(),
            path.name()
        ));
    }
    Ok(Measured { latencies_us, tps })
}

/// Read and remove pgbench's per-thread logs (`<prefix>.<pid>[.<thread>]`):
/// the third field of each line is the transaction's latency in µs, or
/// `failed` for a transaction that failed (after its tries): the latencies,
/// and the number of failed transactions.
fn read_logs(prefix: &Path) -> Result<(Vec<f64>, usize), String> {
    let (dir, stem) = match (prefix.parent(), prefix.file_name()) {
        (Some(dir), Some(stem)) => (dir, format!("{}.", stem.to_string_lossy())),
        _ => return Err(format!("bad log prefix {}", prefix.display())),
    };
    let mut latencies = Vec::new();
    let mut failed = 0;
    let entries = fs::read_dir(dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(&stem) {
            continue;
        }
        let text = fs::read_to_string(entry.path())
            .map_err(|e| format!("cannot read {}: {e}", entry.path().display()))?;
        for line in text.lines() {
            match line.split_whitespace().nth(2) {
                Some("failed" | "serialization" | "deadlock") => failed += 1,
                field => latencies.push(
                    field
                        .and_then(|field| field.parse::<f64>().ok())
                        .ok_or_else(|| format!("unexpected pgbench log line `{line}`"))?,
                ),
            }
        }
        fs::remove_file(entry.path())
            .map_err(|e| format!("cannot remove {}: {e}", entry.path().display()))?;
    }
    Ok((latencies, failed))
}

/// The hot spot's script: one REPEATABLE READ statement that performs the
/// transition machine 1's state calls for (start when idle, complete when
/// processing), guarded on both rows, with its history row. A concurrent
/// writer makes it fail with 40001; pgbench retries it (`--max-tries`).
const HOT_SQL: &str = "\
WITH cur AS (
    SELECT s.current_state AS from_state, s.process_id AS old_process,
           CASE s.current_state WHEN 'idle' THEN 'processing' ELSE 'idle' END AS to_state,
           CASE s.current_state WHEN 'idle' THEN gen_random_uuid() END AS new_process
    FROM machine_state s JOIN machines m ON m.id = s.machine_id
    WHERE s.machine_id = '00000000-0000-0000-0000-000000000001'
      AND m.status = s.current_state
      AND m.current_process_id IS NOT DISTINCT FROM s.process_id
      AND s.current_state IN ('idle', 'processing')
), m AS (
    UPDATE machines m
    SET status = cur.to_state, current_process_id = cur.new_process, updated_at = now()
    FROM cur
    WHERE m.id = '00000000-0000-0000-0000-000000000001' AND m.status = cur.from_state
    RETURNING m.id
), s AS (
    UPDATE machine_state s
    SET current_state = cur.to_state, process_id = cur.new_process, state_since = now(),
        updated_at = now(), is_failure_mode = false, failure_component = NULL,
        failure_description = NULL
    FROM cur, m
    WHERE s.machine_id = m.id AND s.current_state = cur.from_state
    RETURNING s.machine_id
)
INSERT INTO machine_state_transitions
    (machine_id, from_state, to_state, process_id, operation_id, kind, transitioned_at)
SELECT s.machine_id, cur.from_state, cur.to_state, coalesce(cur.new_process, cur.old_process),
       gen_random_uuid(), 'transition', now()
FROM s, cur;
";

/// What pgbench reported on the hot spot.
pub struct HotRun {
    /// Transactions that committed.
    pub processed: u64,
    /// Transactions that failed after their tries.
    pub failed: u64,
    /// Retries (serialization failures pgbench ran again).
    pub retries: u64,
    pub seconds: f64,
    /// Latency of the committed transactions (retries included), µs.
    pub latencies_us: Vec<f64>,
}

/// Run the hot spot's script on `target` for `seconds` with `clients`
/// sessions defaulting to REPEATABLE READ, retrying each transaction up to
/// `max_tries` times in all.
pub fn run_hot(
    target: &Target<'_>,
    clients: u32,
    cores: u32,
    seconds: f64,
    max_tries: u32,
) -> Result<HotRun, String> {
    let script = target.work_dir.join("hot.sql");
    fs::write(&script, HOT_SQL).map_err(|e| format!("cannot write {}: {e}", script.display()))?;
    let prefix = target.work_dir.join("log-hot");
    let seconds_whole = seconds.ceil().max(1.0) as u64;
    let output = Command::new(target.pgbench)
        .args(["-n", "-M", "prepared", "-l"])
        .arg(format!("--log-prefix={}", prefix.display()))
        .arg("-f")
        .arg(&script)
        .args(["-c", &clients.to_string()])
        .args(["-j", &clients.min(cores).to_string()])
        .args(["-T", &seconds_whole.to_string()])
        .arg(format!("--max-tries={max_tries}"))
        .arg("-h")
        .arg(target.socket_dir)
        .args(["-p", "5432", "-U", "postgres", target.database])
        .env(
            "PGOPTIONS",
            "-c default_transaction_isolation=repeatable\\ read",
        )
        .current_dir(target.work_dir)
        .output()
        .map_err(|e| format!("cannot run `pgbench`: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!(
            "`pgbench` failed on the hot spot ({}):\n{}\n{}",
            output.status,
            stdout.trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let number = |prefix: &str| {
        stdout
            .lines()
            .find_map(|line| line.trim().strip_prefix(prefix))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
    };
    let processed = number("number of transactions actually processed: ")
        .ok_or_else(|| format!("no processed count in pgbench's output:\n{stdout}"))?;
    let failed = number("number of failed transactions: ").unwrap_or(0);
    let retries = number("total number of retries: ").unwrap_or(0);
    let (latencies_us, logged_failed) = read_logs(&prefix)?;
    if latencies_us.len() as u64 != processed || logged_failed as u64 != failed {
        return Err(format!(
            "pgbench reported {processed} processed and {failed} failed, logged {} and {logged_failed}",
            latencies_us.len()
        ));
    }
    Ok(HotRun {
        processed,
        failed,
        retries,
        seconds: seconds_whole as f64,
        latencies_us,
    })
}
