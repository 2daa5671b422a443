//! One module per phase of issue 4's benchmark (and issue 15's failover);
//! each adds its rows.

pub mod access;
pub mod commands;
pub mod failover;
pub mod queries;
pub mod replay;
pub mod upgrade;
pub mod watch;

use std::time::Instant;

use crate::latency::Latencies;

/// Joins the simulated clients, adding up their latencies and counts.
pub async fn join_clients(
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<ClientRun>>>,
    started: Instant,
) -> anyhow::Result<Totals> {
    let mut totals = Totals::default();
    for task in tasks {
        let run = task.await??;
        totals.count += run.count;
        totals.latencies.merge(&run.latencies);
        totals.probes.merge(&run.probes);
        totals.names.push(run.names);
    }
    totals.per_second = totals.count as f64 / started.elapsed().as_secs_f64();
    Ok(totals)
}

/// What one simulated client did.
#[derive(Default)]
pub struct ClientRun {
    pub count: u64,
    pub latencies: Latencies,
    /// A second measurement some phases take on the side (read-after-write).
    pub probes: Latencies,
    /// The resources it made.
    pub names: Vec<String>,
}

#[derive(Default)]
pub struct Totals {
    pub count: u64,
    pub per_second: f64,
    pub latencies: Latencies,
    pub probes: Latencies,
    /// Per client.
    pub names: Vec<Vec<String>>,
}
