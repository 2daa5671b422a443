//! `fleetlog-bench`: Fleetlog beside its building blocks, in one run.
//!
//! Starts its own nats-server — or, with `--replicas 3`, a three-node
//! JetStream cluster with every stream R3 — and `fleetd all` (or uses
//! `--nats-url`, `--grpc-url` and `--key`), runs the phases of issue 4 —
//! upgrade, commands, watch, queries, replay — and, on a cluster, issue
//! 15's failover, and prints a Markdown table where every figure stands
//! beside the raw building block (JetStream publish/consume, RocksDB
//! write/get/scan) measured in the same run on the same servers, as a
//! ratio; the same as JSON in `--json`. `--preset smoke` is the
//! seconds-long run CI makes.

mod cluster;
mod latency;
mod phases;
mod raw;
mod report;
mod workload;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, ValueEnum};

use cluster::{Cluster, PeakRss};
use phases::{access, commands, failover, queries, replay, upgrade, watch};
use report::{Machine, Memory, Report, Row};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Preset {
    /// Seconds long, tiny sizes: checks every phase works (CI).
    Smoke,
    /// The sizes issue 4 asks for: 1/16/64 clients, 100k and 1M devices,
    /// 1,000 watchers. Several minutes.
    Full,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Phase {
    Upgrade,
    Access,
    Commands,
    Queries,
    Replay,
    Watch,
    /// The Devices stream's leader SIGKILLed under writes (`--replicas 3`).
    Failover,
}

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Fleetlog beside its building blocks, measured in one run"
)]
struct Args {
    #[arg(long, value_enum, default_value = "full")]
    preset: Preset,
    /// Only these phases (comma separated); replay uses the raw RocksDB
    /// figure of queries when both run.
    #[arg(long, value_enum, value_delimiter = ',')]
    phases: Option<Vec<Phase>>,
    /// Where the JSON report goes.
    #[arg(long, default_value = "bench-results.json")]
    json: PathBuf,
    /// Use a running NATS server instead of starting one (with --grpc-url).
    #[arg(long, requires = "grpc_url")]
    nats_url: Option<String>,
    /// Use a running fleetd instead of starting one (with --nats-url).
    #[arg(long, requires = "nats_url")]
    grpc_url: Option<String>,
    /// API key sent as `authorization: Bearer <key>` on every gRPC call to
    /// the fleetd of --grpc-url (required with it). A fleetd the benchmark
    /// starts gets the benchmark's own bootstrap admin key instead.
    #[arg(long, env = "FLEETLOG_KEY", hide_env_values = true)]
    key: Option<String>,
    /// Concurrent command clients, e.g. 1,16,64.
    #[arg(long, value_delimiter = ',')]
    clients: Option<Vec<usize>>,
    /// Seconds each command level runs.
    #[arg(long)]
    seconds: Option<f64>,
    /// Fleet sizes the queries run at, e.g. 100000,1000000.
    #[arg(long, value_delimiter = ',')]
    fleet: Option<Vec<u64>>,
    /// Concurrent watchers.
    #[arg(long)]
    watchers: Option<usize>,
    /// Copies of every stream: 1 runs one nats-server, 3 a three-node
    /// JetStream cluster (fleetd with FLEETLOG_NATS_REPLICAS=3, the raw
    /// baselines on R3 streams of the same cluster). With --nats-url: what
    /// the deployment's streams have.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=5))]
    replicas: u8,
    /// Concurrent writers in the failover phase.
    #[arg(long)]
    failover_clients: Option<usize>,
}

struct Plan {
    upgrade: upgrade::Settings,
    access: access::Settings,
    commands: commands::Settings,
    queries: queries::Settings,
    watch: watch::Settings,
    failover: failover::Settings,
}

impl Plan {
    fn of(args: &Args) -> Self {
        let full = args.preset == Preset::Full;
        Plan {
            upgrade: upgrade::Settings {
                devices: if full { 10_000 } else { 200 },
                writers: if full { 8 } else { 2 },
            },
            access: access::Settings {
                gets: if full { 5000 } else { 100 },
            },
            commands: commands::Settings {
                clients: args
                    .clients
                    .clone()
                    .unwrap_or_else(|| if full { vec![1, 16, 64] } else { vec![1, 4] }),
                seconds: args.seconds.unwrap_or(if full { 5.0 } else { 0.5 }),
                raw_messages: if full { 50_000 } else { 1000 },
                raw_sequential: if full { 3000 } else { 300 },
            },
            queries: queries::Settings {
                sizes: args.fleet.clone().unwrap_or_else(|| {
                    if full {
                        vec![100_000, 1_000_000]
                    } else {
                        vec![2000]
                    }
                }),
                gets: if full { 5000 } else { 100 },
                lists: if full { 500 } else { 20 },
            },
            watch: watch::Settings {
                watchers: args.watchers.unwrap_or(if full { 1000 } else { 20 }),
                events: if full { 200 } else { 20 },
                per_second: if full { 50.0 } else { 200.0 },
            },
            failover: failover::Settings {
                clients: args.failover_clients.unwrap_or(if full { 16 } else { 4 }),
                warm_up: Duration::from_secs(if full { 3 } else { 1 }),
                window: Duration::from_secs(if full { 5 } else { 1 }),
                // Issue 15 asks for a restart after about 10 s; the smoke run
                // only checks that the phase works.
                down: Duration::from_secs(if full { 10 } else { 3 }),
            },
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let plan = Plan::of(&args);
    let replicas = usize::from(args.replicas);
    let external = args.nats_url.is_some();
    // Without --phases every phase runs, failover only where it can: on
    // the benchmark's own cluster.
    let wanted = |phase: Phase| match &args.phases {
        Some(phases) => phases.contains(&phase),
        None => phase != Phase::Failover || (replicas > 1 && !external),
    };
    if wanted(Phase::Failover) {
        anyhow::ensure!(
            replicas > 1 && !external,
            "the failover phase kills a node of the benchmark's own cluster: run it with \
             --replicas 3 and without --nats-url"
        );
    }
    let started = Instant::now();
    let mut cluster = match (&args.nats_url, &args.grpc_url) {
        (Some(nats), Some(grpc)) => {
            let key = args
                .key
                .as_deref()
                .context("--key (or FLEETLOG_KEY) is required with --grpc-url")?;
            Cluster::external(nats.clone(), grpc.clone(), key, replicas)?
        }
        // The upgrade phase needs a region still on v1alpha2; the others
        // run on v1, where the upgrade phase leaves it.
        _ => {
            Cluster::start(
                if wanted(Phase::Upgrade) {
                    "v1alpha2"
                } else {
                    "v1"
                },
                replicas,
            )
            .await?
        }
    };
    eprintln!("bench: log: {}", cluster.log_description());
    let nats_version = cluster.nats().await?.server_info().version;
    let fleetd = cluster.fleetd_memory();
    let bench = PeakRss::this_process();
    let mut rows: Vec<Row> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    let mut memory = Vec::new();
    let mut measure = |phase: &'static str, process: &'static str, peak: Option<PeakRss>| {
        if let Some(mib) = peak.and_then(PeakRss::mib) {
            memory.push(Memory {
                phase,
                process,
                peak_rss_mib: mib,
            });
        }
    };
    let reset = |peak: Option<PeakRss>| {
        if let Some(peak) = peak {
            peak.reset();
        }
    };

    // Each phase's rows go to stderr as soon as it ends, so a long run that
    // fails late still shows what it measured.
    let mut shown = 0;
    let mut show = |rows: &[Row]| {
        for row in &rows[shown..] {
            eprintln!("bench:   {} = {:.3} {}", row.figure, row.value, row.unit);
        }
        shown = rows.len();
    };
    if wanted(Phase::Upgrade) {
        reset(fleetd);
        upgrade::run(&cluster, &plan.upgrade, &mut rows).await?;
        show(&rows);
        measure("upgrade", "fleetd", fleetd);
    }
    if wanted(Phase::Access) {
        reset(fleetd);
        access::run(&cluster, &plan.access, &mut rows).await?;
        show(&rows);
        measure("access", "fleetd", fleetd);
    }
    if wanted(Phase::Commands) {
        reset(fleetd);
        commands::run(&cluster, &plan.commands, &mut rows, &mut notes).await?;
        show(&rows);
        measure("commands", "fleetd", fleetd);
    }
    // Watch runs before the fleet grows to a million devices: RocksDB's
    // background compactions after that would share its CPU.
    if wanted(Phase::Watch) {
        reset(fleetd);
        watch::run(&cluster, &plan.watch, &mut rows).await?;
        show(&rows);
        measure("watch", "fleetd", fleetd);
    }
    let mut raw_rocks_write_per_s = None;
    if wanted(Phase::Queries) {
        reset(fleetd);
        let outcome = queries::run(&cluster, &plan.queries, &mut rows).await?;
        show(&rows);
        raw_rocks_write_per_s = Some(outcome.raw_rocks_write_per_s);
        measure("queries (incl. seeding)", "fleetd", fleetd);
    }
    if wanted(Phase::Replay) {
        let raw_rocks = match raw_rocks_write_per_s {
            Some(rate) => rate,
            None => standalone_rocks_rate()?,
        };
        reset(Some(bench));
        replay::run(&cluster, raw_rocks, &mut rows).await?;
        show(&rows);
        measure(
            "replay (runs in the benchmark process)",
            "fleetlog-bench",
            Some(bench),
        );
    }
    // Last: it kills a node, and the phases before measure a healthy
    // cluster.
    if wanted(Phase::Failover) {
        reset(fleetd);
        failover::run(&mut cluster, &plan.failover, &mut rows, &mut notes).await?;
        show(&rows);
        measure("failover", "fleetd", fleetd);
    }
    for note in &notes {
        eprintln!("bench: note: {note}");
    }

    let report = Report {
        preset: format!("{:?}", args.preset).to_lowercase(),
        machine: Machine::read(nats_version),
        log: cluster.log_description(),
        rows,
        memory,
        notes,
        seconds: started.elapsed().as_secs_f64(),
    };
    cluster.stop()?;
    println!("{}", report.markdown());
    std::fs::write(&args.json, serde_json::to_string_pretty(&report)?)?;
    eprintln!("bench: wrote {}", args.json.display());
    Ok(())
}

/// The raw RocksDB batch write rate when the queries phase (which measures
/// it over the seeded fleet) did not run.
fn standalone_rocks_rate() -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    let mut raw = raw::RawRocks::open(dir.path())?;
    raw.write((0..100_000u32).map(|i| (format!("key{i:08}").into_bytes(), vec![7u8; 240])))?;
    Ok(raw.write_rate())
}
