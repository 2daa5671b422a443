//! What the benchmark runs against: its own nats-server and `fleetd all`
//! (the default), or endpoints given on the command line.

use anyhow::Context;
use fleetlog_events::{EventLog, Id, StreamId};
use fleetlog_tests::{Authed, Bearer, FleetdProcess, NatsServer};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Endpoint;

pub const REGION: &str = "eu1";

/// The bootstrap admin key of the fleetd the benchmark starts; every call
/// the benchmark makes sends it.
pub const BOOTSTRAP_ADMIN_KEY: &str = "fleetlog-bench-bootstrap-admin-key-0123456789";

pub struct Cluster {
    pub nats_url: String,
    pub grpc_url: String,
    /// `authorization: Bearer <key>` on every gRPC call.
    bearer: Bearer,
    /// Fields drop in declaration order: fleetd before its nats-server.
    fleetd: Option<FleetdProcess>,
    /// Held for its removal on drop.
    _data: Option<tempfile::TempDir>,
    nats_server: Option<NatsServer>,
}

impl Cluster {
    /// A fresh nats-server and `fleetd all` serving Devices in
    /// `initial_version` (v1alpha2, so the upgrade phase has something to
    /// upgrade).
    pub fn start(initial_version: &str) -> anyhow::Result<Self> {
        let nats = NatsServer::start()?;
        let data = tempfile::tempdir().context("creating fleetd's data directory")?;
        let fleetd = FleetdProcess::start(
            "all",
            &[
                ("FLEETLOG_NATS_URL", nats.url()),
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
            ],
        )?;
        Ok(Cluster {
            nats_url: nats.url(),
            grpc_url: fleetd.grpc_url(),
            bearer: Bearer::new(BOOTSTRAP_ADMIN_KEY)?,
            fleetd: Some(fleetd),
            _data: Some(data),
            nats_server: Some(nats),
        })
    }

    /// A running nats-server and fleetd; every gRPC call sends `key`.
    pub fn external(nats_url: String, grpc_url: String, key: &str) -> anyhow::Result<Self> {
        Ok(Cluster {
            nats_url,
            grpc_url,
            bearer: Bearer::new(key).context("--key")?,
            fleetd: None,
            _data: None,
            nats_server: None,
        })
    }

    /// CPU time of fleetd, nats-server (when the benchmark started them)
    /// and the benchmark itself, from now on.
    pub fn cpu_meter(&self) -> CpuMeter {
        let processes = [
            ("fleetd", self.fleetd.as_ref().and_then(FleetdProcess::pid)),
            (
                "nats-server",
                self.nats_server.as_ref().and_then(NatsServer::pid),
            ),
            ("client (this benchmark)", Some(std::process::id())),
        ];
        CpuMeter {
            start: processes.map(|(name, pid)| (name, pid, pid.and_then(cpu_ticks))),
        }
    }

    /// fleetd's memory, when the benchmark started it.
    pub fn fleetd_memory(&self) -> Option<PeakRss> {
        self.fleetd
            .as_ref()
            .and_then(FleetdProcess::pid)
            .map(PeakRss)
    }

    pub async fn nats(&self) -> anyhow::Result<async_nats::Client> {
        async_nats::ConnectOptions::new()
            .connection_timeout(std::time::Duration::from_secs(10))
            .connect(&self.nats_url)
            .await
            .with_context(|| format!("connecting to {}", self.nats_url))
    }

    /// The Devices event log fleetd writes.
    pub async fn devices_log(&self) -> anyhow::Result<EventLog> {
        Ok(EventLog::open(self.nats().await?, devices_stream()?).await?)
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

/// CPU time (user + system) per process since the meter started.
pub struct CpuMeter {
    start: [(&'static str, Option<u32>, Option<u64>); 3],
}

impl CpuMeter {
    /// Microseconds of CPU each process spent per operation, for the
    /// processes that could be read.
    pub fn per_operation(&self, operations: u64) -> Vec<(&'static str, f64)> {
        let micros_per_tick = 1e6 / USER_HZ;
        self.start
            .iter()
            .filter_map(|&(name, pid, start)| {
                let spent = cpu_ticks(pid?)?.checked_sub(start?)?;
                Some((
                    name,
                    spent as f64 * micros_per_tick / operations.max(1) as f64,
                ))
            })
            .collect()
    }
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
