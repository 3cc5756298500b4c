//! pgbench runs on `bench_events`, a copy of the service's events table without its triggers,
//! as the database's own limit for the statements that the service's requests issue.

use std::path::{Path, PathBuf};

use anyhow::Context;
use sqlx::{Connection, PgConnection};

use crate::Cli;
use crate::scratch::Scratch;

/// Number of aggregates in the pre-filled table, and events per aggregate.
const AGGREGATES: u32 = 2_000;
const EVENTS_PER_AGGREGATE: u32 = 20;
/// Size of each event's payload in its JSON text form, in bytes.
const PAYLOAD_BYTES: usize = 500;
/// Event metadata. pgbench would read a colon followed by a letter as a variable, so the
/// actor has no `user:` prefix here.
const METADATA: &str = r#"{"actor": "bench-user", "request_id": "bench"}"#;

/// One pgbench script and the label it has in the report.
pub struct Script {
    pub name: &'static str,
    pub label: &'static str,
    pub body: String,
}

pub struct PgbenchResult {
    pub name: &'static str,
    pub label: &'static str,
    pub clients: u32,
    pub transactions: u64,
    pub failed: u64,
    /// Transactions per second, excluding the time to open connections.
    pub tps: f64,
    pub latency_average_ms: f64,
}

/// A JSON object whose text form is exactly `PAYLOAD_BYTES` long.
fn payload() -> String {
    let frame = r#"{"data": ""}"#;
    format!(
        r#"{{"data": "{}"}}"#,
        "x".repeat(PAYLOAD_BYTES - frame.len())
    )
}

/// The three scripts: (a) append one event, (b) read one event by primary key, (c) load the
/// 20 events of one aggregate and append one, in one transaction.
pub fn scripts() -> [Script; 3] {
    let payload = payload();
    let columns =
        "aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata";
    let insert = format!(
        "INSERT INTO bench_events ({columns})\n\
         VALUES ('user', gen_random_uuid()::text, 1, 'UserRegistered', '1.0',\n\
                 '{payload}', '{METADATA}');\n"
    );
    let select = format!(
        "\\set aggregate random(1, {AGGREGATES})\n\
         \\set sequence random(1, {EVENTS_PER_AGGREGATE})\n\
         SELECT {columns}\n\
           FROM bench_events\n\
          WHERE aggregate_type = 'user' AND aggregate_id = 'bench-' || :aggregate\n\
            AND sequence = :sequence;\n"
    );
    // New events take sequences above the pre-filled ones, from a shared sequence object,
    // so that clients appending to the same aggregate never collide on the primary key.
    let load_and_append = format!(
        "\\set aggregate random(1, {AGGREGATES})\n\
         BEGIN;\n\
         SELECT {columns}\n\
           FROM bench_events\n\
          WHERE aggregate_type = 'user' AND aggregate_id = 'bench-' || :aggregate\n\
            AND sequence <= {EVENTS_PER_AGGREGATE}\n\
          ORDER BY sequence;\n\
         INSERT INTO bench_events ({columns})\n\
         VALUES ('user', 'bench-' || :aggregate,\n\
                 {EVENTS_PER_AGGREGATE} + nextval('bench_event_sequence'),\n\
                 'ProfileUpdated', '1.0', '{payload}', '{METADATA}');\n\
         COMMIT;\n"
    );
    [
        Script {
            name: "a",
            label: "pgbench (a) insert one event",
            body: insert,
        },
        Script {
            name: "b",
            label: "pgbench (b) select one event by primary key",
            body: select,
        },
        Script {
            name: "c",
            label: "pgbench (c) select 20 events and insert one, one transaction",
            body: load_and_append,
        },
    ]
}

/// Creates and fills `bench_events` in the scratch database. The service must have applied
/// its migrations, because the table copies the columns, defaults and indexes of `events`.
async fn prepare_table(database_url: &str) -> anyhow::Result<()> {
    let mut connection = PgConnection::connect(database_url)
        .await
        .context("failed to connect to the scratch database")?;
    sqlx::raw_sql(
        "CREATE TABLE bench_events (LIKE events INCLUDING DEFAULTS INCLUDING IDENTITY
                                   INCLUDING CONSTRAINTS INCLUDING INDEXES);
         CREATE SEQUENCE bench_event_sequence;",
    )
    .execute(&mut connection)
    .await
    .context("failed to create bench_events")?;

    sqlx::query(
        "INSERT INTO bench_events
             (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         SELECT 'user', 'bench-' || aggregate, sequence, 'ProfileUpdated', '1.0',
                $1::jsonb, $2::jsonb
           FROM generate_series(1, $3) AS aggregate,
                generate_series(1, $4) AS sequence",
    )
    .bind(payload())
    .bind(METADATA)
    .bind(AGGREGATES as i32)
    .bind(EVENTS_PER_AGGREGATE as i32)
    .execute(&mut connection)
    .await
    .context("failed to fill bench_events")?;

    sqlx::raw_sql("VACUUM ANALYZE bench_events")
        .execute(&mut connection)
        .await
        .context("failed to vacuum bench_events")?;
    connection.close().await?;
    Ok(())
}

/// Prepares the table, then runs each script with `--pgbench-clients` for `--pgbench-secs`.
pub async fn run_all(cli: &Cli, scratch: &Scratch) -> anyhow::Result<Vec<PgbenchResult>> {
    eprintln!("filling bench_events with {AGGREGATES} aggregates of {EVENTS_PER_AGGREGATE} events");
    prepare_table(&scratch.database_url()).await?;

    let threads = std::thread::available_parallelism()
        .map_or(1, |count| count.get() as u32)
        .min(cli.pgbench_clients);
    let mut results = Vec::new();
    for script in scripts() {
        let path = scratch
            .directory()
            .join(format!("pgbench_{}.sql", script.name));
        std::fs::write(&path, &script.body)
            .with_context(|| format!("failed to write {}", path.display()))?;
        eprintln!(
            "running {} with {} clients for {} s",
            script.label, cli.pgbench_clients, cli.pgbench_secs
        );
        let invocation = Invocation {
            pgbench: &cli.pgbench,
            database_url: scratch.database_url(),
            script: path,
            clients: cli.pgbench_clients,
            threads,
            seconds: cli.pgbench_secs,
        };
        let output = invocation.run().await?;
        let result = parse_output(&output, &script, cli.pgbench_clients)
            .with_context(|| format!("unexpected pgbench output:\n{output}"))?;
        results.push(result);
    }
    Ok(results)
}

struct Invocation<'a> {
    pgbench: &'a Path,
    database_url: String,
    script: PathBuf,
    clients: u32,
    threads: u32,
    seconds: u64,
}

impl Invocation<'_> {
    /// Runs pgbench and returns its standard output. Prepared statements match the extended
    /// protocol with cached statements that sqlx uses.
    async fn run(&self) -> anyhow::Result<String> {
        let output = tokio::process::Command::new(self.pgbench)
            .arg("--no-vacuum")
            .args(["--protocol", "prepared"])
            .args(["--client", &self.clients.to_string()])
            .args(["--jobs", &self.threads.to_string()])
            .args(["--time", &self.seconds.to_string()])
            .arg("--file")
            .arg(&self.script)
            .arg(&self.database_url)
            .kill_on_drop(true)
            .output()
            .await
            .with_context(|| format!("failed to run {}", self.pgbench.display()))?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        anyhow::ensure!(
            output.status.success(),
            "pgbench on {} exited with {}:\n{}{stdout}",
            self.script.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(stdout)
    }
}

/// Reads the figures from pgbench 15's summary, such as `tps = 1234.5 (without initial
/// connection time)` and `latency average = 12.9 ms`.
fn parse_output(output: &str, script: &Script, clients: u32) -> anyhow::Result<PgbenchResult> {
    let mut transactions = None;
    let mut failed = 0;
    let mut tps = None;
    let mut latency_average_ms = None;
    for line in output.lines() {
        if let Some(rest) = line.strip_prefix("number of transactions actually processed: ") {
            let count = rest.split('/').next().unwrap_or(rest).trim();
            transactions = Some(count.parse::<u64>()?);
        } else if let Some(rest) = line.strip_prefix("number of failed transactions: ") {
            failed = first_word(rest).parse()?;
        } else if let Some(rest) = line.strip_prefix("latency average = ") {
            anyhow::ensure!(rest.ends_with(" ms"), "latency is not in ms: {line}");
            latency_average_ms = Some(first_word(rest).parse::<f64>()?);
        } else if let Some(rest) = line.strip_prefix("tps = ") {
            if rest.contains("without initial connection time") {
                tps = Some(first_word(rest).parse::<f64>()?);
            }
        }
    }
    Ok(PgbenchResult {
        name: script.name,
        label: script.label,
        clients,
        transactions: transactions.context("no count of processed transactions")?,
        failed,
        tps: tps.context("no tps excluding connection time")?,
        latency_average_ms: latency_average_ms.context("no latency average")?,
    })
}

fn first_word(text: &str) -> &str {
    text.split_whitespace().next().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUTPUT: &str = "\
pgbench (15.20 (Debian 15.20-0+deb12u1))
transaction type: /tmp/pgbench_b.sql
scaling factor: 1
query mode: prepared
number of clients: 16
number of threads: 2
maximum number of tries: 1
duration: 10 s
number of transactions actually processed: 123456
number of failed transactions: 0 (0.000%)
latency average = 1.296 ms
initial connection time = 12.345 ms
tps = 12345.678901 (without initial connection time)
";

    #[test]
    fn parse_output_reads_summary() {
        let [_, script, _] = scripts();

        let result = parse_output(OUTPUT, &script, 16).expect("parse");

        assert_eq!(result.transactions, 123_456);
        assert_eq!(result.failed, 0);
        assert!((result.tps - 12_345.678_901).abs() < 1e-6);
        assert!((result.latency_average_ms - 1.296).abs() < 1e-9);
    }

    #[test]
    fn parse_output_rejects_missing_tps() {
        let [_, script, _] = scripts();
        let truncated = OUTPUT.replace("tps = ", "");

        assert!(parse_output(&truncated, &script, 16).is_err());
    }

    #[test]
    fn payload_has_configured_size() {
        let text = payload();

        assert_eq!(text.len(), PAYLOAD_BYTES);
        assert!(serde_json::from_str::<serde_json::Value>(&text).is_ok());
    }
}
