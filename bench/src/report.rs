//! The markdown table of every figure, and the ratios of service rates to their limits.

use std::fmt::Write as _;

use crate::argon::Argon2Rate;
use crate::load::{HttpResults, PhaseResult, Settings};
use crate::pgbench::PgbenchResult;
use crate::service::LogSummary;

/// Minimum login rate as a share of the argon2id verify rate.
const LOGIN_TARGET: f64 = 0.8;
/// Minimum profile read rate as a share of pgbench script (b).
const GET_TARGET: f64 = 0.5;
/// Maximum p99 latency of a profile read, in milliseconds.
const GET_P99_TARGET_MS: f64 = 10.0;
/// Minimum profile update rate as a share of pgbench script (c).
const PATCH_TARGET: f64 = 0.5;

pub struct Report {
    argon2: Argon2Rate,
    pgbench: Vec<PgbenchResult>,
    http: HttpResults,
    settings: Settings,
    pub service_log: Option<LogSummary>,
}

/// One table row; `None` cells print as a dash.
struct Row {
    measurement: String,
    concurrency: String,
    count: Option<u64>,
    failed: Option<String>,
    rate: Option<String>,
    mean_ms: Option<f64>,
    p50_ms: Option<f64>,
    p99_ms: Option<String>,
}

impl Row {
    fn empty(measurement: String) -> Self {
        Self {
            measurement,
            concurrency: String::new(),
            count: None,
            failed: None,
            rate: None,
            mean_ms: None,
            p50_ms: None,
            p99_ms: None,
        }
    }
}

fn dash<T>(value: Option<T>, show: impl Fn(T) -> String) -> String {
    value.map_or_else(|| "–".to_owned(), show)
}

fn milliseconds(value: f64) -> String {
    format!("{value:.2}")
}

/// `0.83, met` or `0.42, missed by 16%`, for a ratio that should be at least `target`.
fn judge_minimum(ratio: f64, target: f64) -> String {
    if ratio >= target {
        format!("{ratio:.2}, met")
    } else {
        let shortfall = (target - ratio) / target * 100.0;
        format!("{ratio:.2}, missed by {shortfall:.0}%")
    }
}

/// `4.10, met` or `12.30, missed by 2.30 ms`, for a latency that should stay below `target_ms`.
fn judge_maximum_ms(value_ms: f64, target_ms: f64) -> String {
    if value_ms < target_ms {
        format!("{value_ms:.2}, met")
    } else {
        format!("{value_ms:.2}, missed by {:.2} ms", value_ms - target_ms)
    }
}

impl Report {
    pub fn new(
        argon2: Argon2Rate,
        pgbench: Vec<PgbenchResult>,
        http: HttpResults,
        settings: &Settings,
    ) -> Self {
        Self {
            argon2,
            pgbench,
            http,
            settings: settings.clone(),
            service_log: None,
        }
    }

    fn pgbench_tps(&self, name: &str) -> Option<f64> {
        self.pgbench
            .iter()
            .find(|result| result.name == name)
            .map(|result| result.tps)
    }

    fn rows(&self) -> Vec<Row> {
        let mut rows = vec![Row {
            measurement: "argon2id verify (m = 19456 KiB, t = 2, p = 1, v0x13)".to_owned(),
            concurrency: format!("{} threads", self.argon2.threads),
            count: Some(self.argon2.verifications),
            failed: None,
            rate: Some(format!("{:.1}", self.argon2.per_second())),
            mean_ms: Some(self.argon2.mean_ms()),
            p50_ms: None,
            p99_ms: None,
        }];
        for result in &self.pgbench {
            rows.push(Row {
                measurement: result.label.to_owned(),
                concurrency: format!("{} clients", result.clients),
                count: Some(result.transactions),
                failed: Some(result.failed.to_string()),
                rate: Some(format!("{:.1}", result.tps)),
                mean_ms: Some(result.latency_average_ms),
                p50_ms: None,
                p99_ms: None,
            });
        }
        for phase in [
            &self.http.register,
            &self.http.login,
            &self.http.get_profile,
            &self.http.update_profile,
        ] {
            rows.push(phase_row(phase));
        }
        rows.extend(self.ratio_rows());
        rows
    }

    fn ratio_rows(&self) -> Vec<Row> {
        let login = self.http.login.per_second() / self.argon2.per_second();
        let mut rows = vec![Row {
            rate: Some(judge_minimum(login, LOGIN_TARGET)),
            ..Row::empty(format!(
                "ratio: login ÷ argon2id verify on {} threads, target ≥ {LOGIN_TARGET}",
                self.argon2.threads
            ))
        }];
        if let Some(tps) = self.pgbench_tps("b") {
            rows.push(Row {
                rate: Some(judge_minimum(
                    self.http.get_profile.per_second() / tps,
                    GET_TARGET,
                )),
                ..Row::empty(format!(
                    "ratio: GET /users/me ÷ pgbench (b), target ≥ {GET_TARGET}"
                ))
            });
        }
        rows.push(Row {
            p99_ms: self
                .http
                .get_profile
                .percentile_ms(0.99)
                .map(|p99| judge_maximum_ms(p99, GET_P99_TARGET_MS)),
            ..Row::empty(format!(
                "target: GET /users/me p99 < {GET_P99_TARGET_MS} ms"
            ))
        });
        if let Some(tps) = self.pgbench_tps("c") {
            rows.push(Row {
                rate: Some(judge_minimum(
                    self.http.update_profile.per_second() / tps,
                    PATCH_TARGET,
                )),
                ..Row::empty(format!(
                    "ratio: PATCH /users/me ÷ pgbench (c), target ≥ {PATCH_TARGET}"
                ))
            });
        }
        rows
    }

    /// Renders the table, followed by the failed phases and the service's warnings.
    pub fn to_markdown(&self) -> String {
        let mut text = String::from(
            "| measurement | concurrency | count | failed | rate (/s) or ratio \
             | mean (ms) | p50 (ms) | p99 (ms) |\n\
             | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n",
        );
        for row in self.rows() {
            let _ = writeln!(
                text,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                row.measurement,
                row.concurrency,
                dash(row.count, |count| count.to_string()),
                dash(row.failed, |failed| failed),
                dash(row.rate, |rate| rate),
                dash(row.mean_ms, milliseconds),
                dash(row.p50_ms, milliseconds),
                dash(row.p99_ms, |p99| p99),
            );
        }

        let _ = writeln!(
            text,
            "\nEach HTTP phase ran for at most {} s or {} requests. Rates count 2xx responses \
             only, and latencies are those of the 2xx responses.",
            self.settings.phase.as_secs(),
            self.settings.max_requests
        );
        for phase in self.phases() {
            if phase.failure_count() > 0 {
                let _ = writeln!(
                    text,
                    "\n**{} had failed requests:** {}.",
                    phase.label,
                    phase.failure_summary()
                );
            }
        }
        if let Some(log) = &self.service_log {
            text.push_str(&log_lines(log));
        }
        text
    }

    fn phases(&self) -> [&PhaseResult; 4] {
        [
            &self.http.register,
            &self.http.login,
            &self.http.get_profile,
            &self.http.update_profile,
        ]
    }
}

fn phase_row(phase: &PhaseResult) -> Row {
    Row {
        measurement: phase.label.to_owned(),
        concurrency: format!("{} workers", phase.concurrency),
        count: Some(phase.successes()),
        failed: Some(phase.failure_summary()),
        rate: Some(format!("{:.1}", phase.per_second())),
        mean_ms: phase.mean_ms(),
        p50_ms: phase.percentile_ms(0.5),
        p99_ms: phase.percentile_ms(0.99).map(milliseconds),
    }
}

fn log_lines(log: &LogSummary) -> String {
    let mut text = String::new();
    if log.entries.is_empty() && log.other_lines == 0 {
        text.push_str("\nThe service logged no warnings or errors.\n");
        return text;
    }
    text.push_str("\nThe service logged (RUST_LOG=warn):\n\n");
    for ((level, message), count) in &log.entries {
        let _ = writeln!(text, "- {level} ×{count}: {message}");
    }
    if log.other_lines > 0 {
        let _ = writeln!(
            text,
            "- {} lines that are not JSON log entries",
            log.other_lines
        );
    }
    text
}

/// Writes the report to stdout, the only output of the program that goes there.
#[expect(
    clippy::print_stdout,
    reason = "the report is the program's output on stdout"
)]
pub fn print(markdown: &str) {
    print!("{markdown}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn judge_minimum_states_shortfall() {
        assert_eq!(judge_minimum(0.9, 0.8), "0.90, met");
        assert_eq!(judge_minimum(0.4, 0.8), "0.40, missed by 50%");
    }

    #[test]
    fn judge_maximum_states_excess() {
        assert_eq!(judge_maximum_ms(4.0, 10.0), "4.00, met");
        assert_eq!(judge_maximum_ms(12.5, 10.0), "12.50, missed by 2.50 ms");
    }
}
