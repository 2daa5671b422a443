//! What a run measured: every figure beside the raw building block measured
//! in the same run, as a ratio, and the targets of issue 4; printed as a
//! Markdown table and written as JSON.

use std::fmt::Write as _;

use serde::Serialize;

/// One measured figure.
#[derive(Debug, Serialize)]
pub struct Row {
    pub phase: &'static str,
    pub figure: String,
    pub value: f64,
    pub unit: &'static str,
    pub baseline: Option<Baseline>,
    pub target: Option<Target>,
}

/// The raw building block the figure stands beside; `ratio` is figure ÷
/// baseline (a throughput fraction, or how many times the raw latency).
#[derive(Debug, Serialize)]
pub struct Baseline {
    pub what: String,
    pub value: f64,
    pub ratio: f64,
}

#[derive(Debug, Serialize)]
pub struct Target {
    pub what: String,
    pub met: bool,
}

/// A target of issue 4.
#[derive(Clone, Copy, Debug)]
pub enum Goal {
    /// figure ÷ baseline at least this.
    RatioAtLeast(f64),
    /// The figure itself at most this (in its unit).
    AtMost(f64),
    /// figure − baseline at most this (in the figure's unit): what Fleetlog
    /// adds to the raw operation.
    AddedAtMost(f64),
}

impl Row {
    pub fn new(
        phase: &'static str,
        figure: impl Into<String>,
        value: f64,
        unit: &'static str,
    ) -> Self {
        Row {
            phase,
            figure: figure.into(),
            value,
            unit,
            baseline: None,
            target: None,
        }
    }

    pub fn beside(mut self, what: impl Into<String>, value: f64) -> Self {
        let ratio = if value > 0.0 { self.value / value } else { 0.0 };
        self.baseline = Some(Baseline {
            what: what.into(),
            value,
            ratio,
        });
        self
    }

    pub fn goal(mut self, goal: Goal) -> Self {
        let ratio = self.baseline.as_ref().map_or(0.0, |b| b.ratio);
        self.target = Some(match goal {
            Goal::RatioAtLeast(at_least) => Target {
                what: format!("≥ {at_least:.2} of raw"),
                met: ratio >= at_least,
            },
            Goal::AtMost(at_most) => Target {
                what: format!("≤ {at_most} {}", self.unit),
                met: self.value <= at_most,
            },
            Goal::AddedAtMost(at_most) => Target {
                what: format!("≤ {at_most} {} over raw", self.unit),
                met: self
                    .baseline
                    .as_ref()
                    .is_some_and(|b| self.value - b.value <= at_most),
            },
        });
        self
    }

    /// [`Row::goal`] when there is one.
    pub fn goal_if(self, goal: Option<Goal>) -> Self {
        match goal {
            Some(goal) => self.goal(goal),
            None => self,
        }
    }
}

/// Peak resident memory of a process during one phase.
#[derive(Debug, Serialize)]
pub struct Memory {
    pub phase: &'static str,
    pub process: &'static str,
    pub peak_rss_mib: f64,
}

/// Where the figures came from.
#[derive(Debug, Serialize)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub memory_gib: f64,
    pub kernel: String,
    pub nats_server: String,
}

impl Machine {
    pub fn read(nats_server: String) -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|line| line.strip_prefix("model name"))
            .and_then(|rest| rest.split_once(':'))
            .map_or_else(
                || "unknown".to_owned(),
                |(_, model)| model.trim().to_owned(),
            );
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_kib: f64 = meminfo
            .lines()
            .find_map(|line| line.strip_prefix("MemTotal:"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
            .unwrap_or(0.0);
        Machine {
            cpu,
            cores: std::thread::available_parallelism().map_or(0, usize::from),
            memory_gib: memory_kib / 1024.0 / 1024.0,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_owned(),
            nats_server,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub preset: String,
    pub machine: Machine,
    /// How the log was kept for every figure of the run (servers,
    /// replicas, flush): Fleetlog's streams and the raw baselines' alike.
    pub log: String,
    pub rows: Vec<Row>,
    pub memory: Vec<Memory>,
    /// What the figures depend on beyond the table (where the stream
    /// leaders and connections were).
    pub notes: Vec<String>,
    pub seconds: f64,
}

impl Report {
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let m = &self.machine;
        let _ = writeln!(
            out,
            "Machine: {} × {} cores, {:.0} GiB, Linux {}, nats-server {}; preset `{}`, {:.0} s\n",
            m.cpu, m.cores, m.memory_gib, m.kernel, m.nats_server, self.preset, self.seconds
        );
        let _ = writeln!(out, "Log: {}\n", self.log);
        out.push_str(
            "| phase | figure | value | raw building block (same run) | raw | ratio | target |\n",
        );
        out.push_str("| --- | --- | ---: | --- | ---: | ---: | --- |\n");
        for row in &self.rows {
            let (what, raw, ratio) = match &row.baseline {
                Some(b) => (
                    b.what.as_str(),
                    format!("{} {}", number(b.value), row.unit),
                    format!("{:.2}", b.ratio),
                ),
                None => ("", String::new(), String::new()),
            };
            let target = row.target.as_ref().map_or_else(String::new, |t| {
                format!("{} {}", t.what, if t.met { "✅" } else { "❌" })
            });
            let _ = writeln!(
                out,
                "| {} | {} | {} {} | {what} | {raw} | {ratio} | {target} |",
                row.phase,
                row.figure,
                number(row.value),
                row.unit
            );
        }
        out.push_str("\n| phase | process | peak RSS (MiB) |\n| --- | --- | ---: |\n");
        for memory in &self.memory {
            let _ = writeln!(
                out,
                "| {} | {} | {:.0} |",
                memory.phase, memory.process, memory.peak_rss_mib
            );
        }
        if !self.notes.is_empty() {
            out.push('\n');
            for note in &self.notes {
                let _ = writeln!(out, "- {note}");
            }
        }
        out
    }
}

/// Throughputs as integers, latencies with their useful precision.
fn number(value: f64) -> String {
    if value >= 100.0 {
        format!("{value:.0}")
    } else if value >= 1.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_and_targets_follow_the_figures() {
        let row = Row::new("commands", "creates/s", 30.0, "/s")
            .beside("raw", 100.0)
            .goal(Goal::RatioAtLeast(0.5));
        let baseline = row.baseline.as_ref().expect("baseline");
        assert!((baseline.ratio - 0.3).abs() < 1e-9);
        assert!(!row.target.as_ref().expect("target").met);
        let row = Row::new("queries", "Get p50", 0.12, "ms").goal(Goal::AtMost(0.15));
        assert!(row.target.as_ref().expect("target").met);
        let added = Row::new("commands", "create p99", 3.2, "ms")
            .beside("raw p99", 1.0)
            .goal(Goal::AddedAtMost(2.0));
        assert!(!added.target.as_ref().expect("target").met);
        let report = Report {
            preset: "smoke".into(),
            machine: Machine::read("2.15.1".into()),
            log: "one nats-server; every stream R1".into(),
            rows: vec![row, added],
            memory: vec![Memory {
                phase: "queries",
                process: "fleetd",
                peak_rss_mib: 42.0,
            }],
            notes: vec!["fleetd on n1".into()],
            seconds: 1.0,
        };
        let table = report.markdown();
        assert!(
            table.contains("| queries | Get p50 | 0.120 ms |"),
            "{table}"
        );
        assert!(table.contains("≤ 0.15 ms ✅"), "{table}");
        assert!(table.contains("| queries | fleetd | 42 |"), "{table}");
        assert!(table.contains("≤ 2 ms over raw ❌"), "{table}");
        assert!(
            table.contains("Log: one nats-server; every stream R1"),
            "{table}"
        );
        assert!(table.contains("- fleetd on n1"), "{table}");
    }
}
