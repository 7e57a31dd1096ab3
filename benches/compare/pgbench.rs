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
pub struct Target<'a> {
    /// The `pgbench` to run ([`find`]).
    pub pgbench: &'a Path,
    pub socket_dir: &'a Path,
    pub database: &'a str,
    /// The directory of the scripts, also used for pgbench's logs.
    pub work_dir: &'a Path,
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
    let latencies_us = read_logs(&prefix)?;
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
/// the third field of each line is the transaction's latency in µs.
fn read_logs(prefix: &Path) -> Result<Vec<f64>, String> {
    let (dir, stem) = match (prefix.parent(), prefix.file_name()) {
        (Some(dir), Some(stem)) => (dir, format!("{}.", stem.to_string_lossy())),
        _ => return Err(format!("bad log prefix {}", prefix.display())),
    };
    let mut latencies = Vec::new();
    let entries = fs::read_dir(dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(&stem) {
            continue;
        }
        let text = fs::read_to_string(entry.path())
            .map_err(|e| format!("cannot read {}: {e}", entry.path().display()))?;
        for line in text.lines() {
            let latency = line
                .split_whitespace()
                .nth(2)
                .and_then(|field| field.parse::<f64>().ok())
                .ok_or_else(|| format!("unexpected pgbench log line `{line}`"))?;
            latencies.push(latency);
        }
        fs::remove_file(entry.path())
            .map_err(|e| format!("cannot remove {}: {e}", entry.path().display()))?;
    }
    Ok(latencies)
}
