//! What the benchmark runs against: its own nats-server (or three-node
//! JetStream cluster, `--replicas 3`) and `fleetd all` (the default), or
//! endpoints given on the command line.

use std::time::Duration;

use anyhow::Context;
use fleetlog_events::log::LogOptions;
use fleetlog_events::{EventLog, Id, StreamId};
use fleetlog_tests::{Authed, Bearer, FleetdProcess, NatsCluster, NatsServer};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Endpoint;

pub const REGION: &str = "eu1";

/// The bootstrap admin key of the fleetd the benchmark starts; every call
/// the benchmark makes sends it.
pub const BOOTSTRAP_ADMIN_KEY: &str = "fleetlog-bench-bootstrap-admin-key-0123456789";

/// Passed to the fleetd the benchmark starts as its RUST_LOG.
const FLEETD_LOG_VAR: &str = "FLEETLOG_BENCH_FLEETD_LOG";

/// The name fleetd's NATS connection gives itself (`fleetd-{role}`), by
/// which the cluster's `/connz` shows which node fleetd is connected to.
const FLEETD_CONNECTION_NAME: &str = "fleetd-all";

/// The NATS side the benchmark started.
enum Nats {
    /// `--nats-url`: someone else's.
    External,
    Single(NatsServer),
    Cluster(NatsCluster),
}

pub struct Cluster {
    /// Every node's client URL, comma-separated (as `FLEETLOG_NATS_URL`
    /// takes them).
    pub nats_url: String,
    pub grpc_url: String,
    /// Replicas of every stream: fleetd's and the raw baselines', so each
    /// ratio compares a write with a write replicated the same way.
    pub replicas: usize,
    /// `authorization: Bearer <key>` on every gRPC call.
    bearer: Bearer,
    /// Fields drop in declaration order: fleetd before its nats-server(s).
    fleetd: Option<FleetdProcess>,
    /// Held for its removal on drop.
    _data: Option<tempfile::TempDir>,
    nats: Nats,
}

impl Cluster {
    /// A fresh nats-server (`replicas` 1) or a `replicas`-node JetStream
    /// cluster, and `fleetd all` on it serving Devices in
    /// `initial_version` (v1alpha2, so the upgrade phase has something to
    /// upgrade), every stream with `replicas` copies. Neither sets
    /// `sync_interval`: JetStream's default flush, the durability figures
    /// are quoted with.
    pub async fn start(initial_version: &str, replicas: usize) -> anyhow::Result<Self> {
        let (nats, nats_url) = if replicas > 1 {
            // One node per replica: R3 on three nodes, as production runs.
            let cluster = NatsCluster::start(replicas)
                .await
                .context("starting the JetStream cluster")?;
            let url = cluster.url_list();
            (Nats::Cluster(cluster), url)
        } else {
            let server = NatsServer::start()?;
            let url = server.url();
            (Nats::Single(server), url)
        };
        let data = tempfile::tempdir().context("creating fleetd's data directory")?;
        let mut env = vec![
            // With a URL, `fleetd all` uses it instead of starting its
            // own nats-server.
            ("FLEETLOG_NATS_URL", nats_url.clone()),
            ("FLEETLOG_NATS_REPLICAS", replicas.to_string()),
            ("FLEETLOG_DATA_DIR", data.path().display().to_string()),
            ("FLEETLOG_REGION", REGION.to_owned()),
            (
                "FLEETLOG_BOOTSTRAP_ADMIN_KEY",
                BOOTSTRAP_ADMIN_KEY.to_owned(),
            ),
            (
                "FLEETLOG_DEVICES_INITIAL_VERSION",
                initial_version.to_owned(),
            ),
            // Seeding a million devices keeps the projector busy; a
            // query waiting for its min_revision may wait that long.
            ("FLEETLOG_READ_WAIT_MS", "60000".to_owned()),
        ];
        // fleetd's log filter (RUST_LOG) for a run that wants to see what
        // fleetd did, e.g. `fleetlog_events=debug` for the log client's
        // retries during the failover phase; fleetd logs to the
        // benchmark's stderr.
        if let Ok(filter) = std::env::var(FLEETD_LOG_VAR) {
            env.push(("RUST_LOG", filter));
        }
        let fleetd = FleetdProcess::start("all", &env)?;
        Ok(Cluster {
            nats_url,
            grpc_url: fleetd.grpc_url(),
            replicas,
            bearer: Bearer::new(BOOTSTRAP_ADMIN_KEY)?,
            fleetd: Some(fleetd),
            _data: Some(data),
            nats,
        })
    }

    /// A running nats-server and fleetd; every gRPC call sends `key`.
    /// `replicas` is what the deployment's streams have: the raw
    /// baselines' stream gets as many.
    pub fn external(
        nats_url: String,
        grpc_url: String,
        key: &str,
        replicas: usize,
    ) -> anyhow::Result<Self> {
        Ok(Cluster {
            nats_url,
            grpc_url,
            replicas,
            bearer: Bearer::new(key).context("--key")?,
            fleetd: None,
            _data: None,
            nats: Nats::External,
        })
    }

    /// The three-node cluster the benchmark started, for the failover
    /// phase's faults.
    pub fn nats_cluster(&self) -> Option<&NatsCluster> {
        match &self.nats {
            Nats::Cluster(cluster) => Some(cluster),
            _ => None,
        }
    }

    pub fn nats_cluster_mut(&mut self) -> Option<&mut NatsCluster> {
        match &mut self.nats {
            Nats::Cluster(cluster) => Some(cluster),
            _ => None,
        }
    }

    /// How the log is kept, for the report: the same for every figure of
    /// a run.
    pub fn log_description(&self) -> String {
        let servers = match &self.nats {
            Nats::External => "a deployment's NATS (--nats-url)".to_owned(),
            Nats::Single(_) => "one nats-server".to_owned(),
            Nats::Cluster(cluster) => format!("a {}-node JetStream cluster", cluster.len()),
        };
        let acknowledged = if self.replicas > 1 {
            "once the leader and enough followers for a quorum have written it"
        } else {
            "once the server has written it"
        };
        format!(
            "{servers}; every stream R{} (fleetd's and the raw baselines'); JetStream's \
             default flush (`sync_interval` not set): a write is acknowledged {acknowledged}, \
             without fsync; files are synced every 2 min",
            self.replicas
        )
    }

    /// CPU time of fleetd, nats-server (all nodes together, when the
    /// benchmark started them) and the benchmark itself, from now on.
    pub fn cpu_meter(&self) -> CpuMeter {
        let fleetd_pids = self.fleetd.iter().filter_map(FleetdProcess::pid).collect();
        let (nats_name, nats_pids) = match &self.nats {
            Nats::External => ("nats-server".to_owned(), Vec::new()),
            Nats::Single(server) => ("nats-server".to_owned(), server.pid().into_iter().collect()),
            Nats::Cluster(cluster) => (
                format!("nats-server ({} nodes)", cluster.len()),
                (0..cluster.len()).filter_map(|i| cluster.pid(i)).collect(),
            ),
        };
        let processes = [
            ("fleetd".to_owned(), fleetd_pids),
            (nats_name, nats_pids),
            (
                "client (this benchmark)".to_owned(),
                vec![std::process::id()],
            ),
        ];
        CpuMeter {
            start: processes
                .into_iter()
                .map(|(name, pids)| {
                    let start = ticks_of(&pids);
                    (name, pids, start)
                })
                .collect(),
        }
    }

    /// fleetd's memory, when the benchmark started it.
    pub fn fleetd_memory(&self) -> Option<PeakRss> {
        self.fleetd
            .as_ref()
            .and_then(FleetdProcess::pid)
            .map(PeakRss)
    }

    /// A client given every node's URL, so it follows the cluster as
    /// fleetd's does.
    pub async fn nats(&self) -> anyhow::Result<async_nats::Client> {
        connect_nats(&self.nats_urls()).await
    }

    fn nats_urls(&self) -> Vec<String> {
        self.nats_url
            .split(',')
            .map(str::trim)
            .filter(|url| !url.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// A client on node `i` of the benchmark's cluster only; on one server
    /// (or an external deployment), the same as [`Cluster::nats`].
    pub async fn nats_on(&self, i: usize) -> anyhow::Result<async_nats::Client> {
        match self.nats_cluster() {
            Some(cluster) => connect_nats(&[cluster.node_url(i)]).await,
            None => self.nats().await,
        }
    }

    /// The index of the node fleetd's NATS connection is on, from each
    /// node's `/connz`; `None` without a cluster or when no node lists it.
    pub async fn fleetd_node(&self) -> Option<usize> {
        let cluster = self.nats_cluster()?;
        for i in 0..cluster.len() {
            // A node that is down or slow to answer simply does not hold it.
            let Ok(connz) = cluster.monitor_json(i, "/connz").await else {
                continue;
            };
            let listed = connz["connections"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["name"].as_str() == Some(FLEETD_CONNECTION_NAME));
            if listed {
                return Some(i);
            }
        }
        None
    }

    /// The Devices event log fleetd writes, opened with its replicas (a
    /// different count would make `open_with` rescale the stream).
    pub async fn devices_log(&self) -> anyhow::Result<EventLog> {
        Ok(EventLog::open_with(self.nats().await?, devices_stream()?, self.log_options()).await?)
    }

    /// The options fleetd's log has: the same replicas.
    pub fn log_options(&self) -> LogOptions {
        LogOptions {
            replicas: self.replicas,
            ..Default::default()
        }
    }

    /// A new HTTP/2 connection to fleetd: each simulated client has its own.
    /// Every call on it (the no-op health Check included, so comparisons
    /// stay fair) sends the key.
    pub async fn channel(&self) -> anyhow::Result<Authed> {
        self.connect(self.bearer.clone()).await
    }

    /// Like [`Cluster::channel`], calling with `key` instead.
    pub async fn channel_as(&self, key: &str) -> anyhow::Result<Authed> {
        self.connect(Bearer::new(key)?).await
    }

    async fn connect(&self, bearer: Bearer) -> anyhow::Result<Authed> {
        let channel = Endpoint::from_shared(self.grpc_url.clone())?
            .tcp_nodelay(true)
            .connect()
            .await
            .with_context(|| format!("connecting to fleetd at {}", self.grpc_url))?;
        Ok(InterceptedService::new(channel, bearer))
    }

    pub fn stop(mut self) -> anyhow::Result<()> {
        if let Some(mut fleetd) = self.fleetd.take() {
            let status = fleetd.terminate()?;
            anyhow::ensure!(status.success(), "fleetd exited with {status}");
        }
        Ok(())
    }
}

async fn connect_nats(urls: &[String]) -> anyhow::Result<async_nats::Client> {
    async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(10))
        .connect(urls)
        .await
        .with_context(|| format!("connecting to {}", urls.join(",")))
}

pub fn devices_stream() -> anyhow::Result<StreamId> {
    Ok(StreamId::new(Id::parse("devices")?, Id::parse(REGION)?))
}

/// A process's peak resident set (`VmHWM`), which Linux resets on request
/// (`clear_refs` 5), so each phase gets its own peak.
#[derive(Clone, Copy, Debug)]
pub struct PeakRss(pub u32);

impl PeakRss {
    pub fn this_process() -> Self {
        PeakRss(std::process::id())
    }

    pub fn reset(self) {
        // Without permission the peak simply covers the whole run.
        let _ = std::fs::write(format!("/proc/{}/clear_refs", self.0), "5");
    }

    pub fn mib(self) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.0)).ok()?;
        let kib: f64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()?;
        Some(kib / 1024.0)
    }
}

/// CPU time (user + system) per process since the meter started; a
/// process of several PIDs (the cluster's nodes) counts them together.
pub struct CpuMeter {
    start: Vec<(String, Vec<u32>, Option<u64>)>,
}

impl CpuMeter {
    /// Microseconds of CPU each process spent per operation, for the
    /// processes that could be read.
    pub fn per_operation(&self, operations: u64) -> Vec<(String, f64)> {
        let micros_per_tick = 1e6 / USER_HZ;
        self.start
            .iter()
            .filter_map(|(name, pids, start)| {
                let spent = ticks_of(pids)?.checked_sub((*start)?)?;
                Some((
                    name.clone(),
                    spent as f64 * micros_per_tick / operations.max(1) as f64,
                ))
            })
            .collect()
    }
}

/// The CPU ticks of all `pids` together; `None` when there are none or one
/// cannot be read (it exited: the sum would be wrong).
fn ticks_of(pids: &[u32]) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|&pid| cpu_ticks(pid)).sum()
}

/// utime + stime of a process, in clock ticks (`/proc/PID/stat` fields 14
/// and 15, counted after the parenthesised command name).
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let user: u64 = fields.get(11)?.parse().ok()?;
    let system: u64 = fields.get(12)?.parse().ok()?;
    Some(user + system)
}

/// Clock ticks per second in /proc: the kernel ABI fixes USER_HZ at 100
/// whatever the kernel's internal tick rate.
const USER_HZ: f64 = 100.0;
