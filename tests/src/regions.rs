//! Regions on loopback: one nats-server per region, each its own JetStream
//! domain named after the region, every other region linked by a leafnode
//! to the first (the hub; leafnodes must not form a cycle).
//!
//! Each spoke's leafnode runs through a [`Link`], a TCP relay in the test
//! process: [`cut`](NatsRegions::cut) drops the relayed connections and
//! refuses new ones (a partition between the regions, while both keep
//! serving their own clients); [`heal`](NatsRegions::heal) lets the
//! leafnode reconnect. [`kill9`](NatsRegions::kill9) and
//! [`restart`](NatsRegions::restart) act on a region's server.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use fleetlog_tests::NatsRegions;
//! let mut regions = NatsRegions::start(&["eu1", "us1"]).await?;
//! let us1 = regions.connect("us1").await?;
//! // ... a mirror in us1 of a stream in domain eu1 ...
//! regions.cut("us1").await?;
//! regions.heal("us1").await?;
//! # Ok(()) }
//! ```

use std::fs::OpenOptions;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::cluster::{free_ports, http_get, quoted};
use crate::nats_server_bin;

/// The longest [`start`](NatsRegions::start), [`heal`](NatsRegions::heal)
/// and [`restart`](NatsRegions::restart) wait for every domain to answer
/// from every other.
const LINK_TIMEOUT: Duration = Duration::from_secs(30);
const API_ATTEMPT: Duration = Duration::from_millis(500);
const POLL_INTERVAL: Duration = Duration::from_millis(100);

struct RegionServer {
    region: String,
    client_port: u16,
    monitor_port: u16,
    /// The hub's leafnode port; the spokes' relays dial it.
    leaf_port: u16,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// One nats-server per region, each the JetStream domain of its region,
/// linked to the first region's server by leafnodes through [`Link`]s.
/// Every process is killed and the directory removed on drop.
pub struct NatsRegions {
    servers: Vec<RegionServer>,
    /// Per server: the relay its leafnode runs through (none for the hub).
    links: Vec<Option<Link>>,
    dir: tempfile::TempDir,
}

impl NatsRegions {
    /// Starts one server per region (the first is the hub) and waits until
    /// every domain's JetStream API answers from every region.
    pub async fn start(regions: &[&str]) -> anyhow::Result<Self> {
        if regions.is_empty() {
            bail!("NatsRegions needs at least one region");
        }
        let dir = tempfile::tempdir().context("creating the regions directory")?;
        let ports = free_ports(regions.len() * 3)?;
        let hub_leaf_port = ports[2];
        let mut servers = Vec::with_capacity(regions.len());
        let mut links = Vec::with_capacity(regions.len());
        for (i, region) in regions.iter().enumerate() {
            let server_dir = dir.path().join(region);
            std::fs::create_dir_all(&server_dir)
                .with_context(|| format!("creating {}", server_dir.display()))?;
            let store = server_dir.join("store");
            let link = if i == 0 {
                None
            } else {
                Some(Link::open(hub_leaf_port).await?)
            };
            let leafnodes = match &link {
                // Not advertised: a spoke that learnt the hub's own address
                // would reconnect around its link after a cut.
                None => format!(
                    "leafnodes {{\n  listen: 127.0.0.1:{hub_leaf_port}\n  no_advertise: true\n}}\n"
                ),
                Some(link) => format!(
                    "leafnodes {{\n  reconnect: 1\n  remotes: [{{ url: \"nats-leaf://127.0.0.1:{}\" }}]\n}}\n",
                    link.port
                ),
            };
            let config = server_dir.join("nats.conf");
            let text = format!(
                "# Written by fleetlog_tests::NatsRegions.\n\
                 server_name: {region}\n\
                 listen: 127.0.0.1:{client}\n\
                 http: 127.0.0.1:{monitor}\n\
                 {leafnodes}\
                 jetstream {{\n  store_dir: {store}\n  domain: {region}\n}}\n",
                client = ports[i * 3],
                monitor = ports[i * 3 + 1],
                store = quoted(&store)?,
            );
            std::fs::write(&config, text)
                .with_context(|| format!("writing {}", config.display()))?;
            servers.push(RegionServer {
                region: (*region).to_owned(),
                client_port: ports[i * 3],
                monitor_port: ports[i * 3 + 1],
                leaf_port: hub_leaf_port,
                config,
                log: server_dir.join("nats.log"),
                child: None,
            });
            links.push(link);
        }
        let mut this = NatsRegions {
            servers,
            links,
            dir,
        };
        for i in 0..this.servers.len() {
            this.spawn(i)?;
        }
        this.wait_linked().await?;
        Ok(this)
    }

    fn index(&self, region: &str) -> anyhow::Result<usize> {
        self.servers
            .iter()
            .position(|s| s.region == region)
            .with_context(|| format!("{region} is not one of the regions started"))
    }

    fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        let server = &mut self.servers[i];
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&server.log)
            .with_context(|| format!("opening {}", server.log.display()))?;
        let log_err = log.try_clone().context("duplicating the log handle")?;
        let child = Command::new(nats_server_bin())
            .arg("-c")
            .arg(&server.config)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .with_context(|| format!("starting nats-server for region {}", server.region))?;
        server.child = Some(child);
        Ok(())
    }

    /// The regions, hub first.
    pub fn regions(&self) -> Vec<String> {
        self.servers.iter().map(|s| s.region.clone()).collect()
    }

    /// The client URL of `region`'s server. Panics for a region not started.
    pub fn url(&self, region: &str) -> String {
        let server = self
            .servers
            .iter()
            .find(|s| s.region == region)
            .unwrap_or_else(|| panic!("{region} is not one of the regions started"));
        format!("nats://127.0.0.1:{}", server.client_port)
    }

    /// The directory every region's config, store and log are in.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// A client of `region`'s server; retries for up to 10 s while it
    /// comes up.
    pub async fn connect(&self, region: &str) -> anyhow::Result<async_nats::Client> {
        let url = self.url(region);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match async_nats::ConnectOptions::new()
                .connection_timeout(Duration::from_secs(2))
                .connect(url.as_str())
                .await
            {
                Ok(client) => return Ok(client),
                Err(_) if Instant::now() < deadline => tokio::time::sleep(POLL_INTERVAL).await,
                Err(err) => return Err(err).with_context(|| format!("connecting to {url}")),
            }
        }
    }

    /// Partitions `region` from the hub: its leafnode connection drops and
    /// cannot reconnect until [`heal`](Self::heal). Both sides keep
    /// serving their own clients. Returns once the hub no longer answers
    /// for `region`'s domain.
    pub async fn cut(&mut self, region: &str) -> anyhow::Result<()> {
        let i = self.index(region)?;
        let link = self.links[i]
            .as_ref()
            .with_context(|| format!("{region} is the hub: cut a spoke"))?;
        link.set_open(false);
        let hub = self.connect(&self.servers[0].region).await?;
        let deadline = Instant::now() + LINK_TIMEOUT;
        while domain_answers(&hub, region).await {
            if Instant::now() > deadline {
                bail!("{region}'s domain still answers through the hub after the cut");
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
        Ok(())
    }

    /// Lets `region`'s leafnode reconnect and waits until every domain
    /// answers from every region again.
    pub async fn heal(&mut self, region: &str) -> anyhow::Result<()> {
        let i = self.index(region)?;
        let link = self.links[i]
            .as_ref()
            .with_context(|| format!("{region} is the hub: heal a spoke"))?;
        link.set_open(true);
        self.wait_linked().await
    }

    /// SIGKILLs `region`'s server and reaps it.
    pub fn kill9(&mut self, region: &str) -> anyhow::Result<()> {
        let i = self.index(region)?;
        let mut child = self.servers[i]
            .child
            .take()
            .with_context(|| format!("kill9: {region}'s server is not running"))?;
        let _ = child.kill();
        child
            .wait()
            .with_context(|| format!("reaping {region}'s server"))?;
        Ok(())
    }

    /// Starts `region`'s server again (same ports, config and store) and
    /// waits until the regions are linked again.
    pub async fn restart(&mut self, region: &str) -> anyhow::Result<()> {
        let i = self.index(region)?;
        if let Some(mut child) = self.servers[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.spawn(i)?;
        self.wait_linked().await
    }

    /// A monitoring endpoint of `region`'s server as JSON (`/leafz`,
    /// `/jsz?streams=true`).
    pub async fn monitor_json(
        &self,
        region: &str,
        path: &str,
    ) -> anyhow::Result<serde_json::Value> {
        let i = self.index(region)?;
        let body = tokio::time::timeout(
            Duration::from_secs(5),
            http_get(self.servers[i].monitor_port, path),
        )
        .await
        .with_context(|| format!("GET {path} on {region}: no answer within 5 s"))??;
        serde_json::from_str(&body).with_context(|| format!("GET {path} on {region}: not JSON"))
    }

    /// Waits until, from every running region, every other running
    /// region's JetStream API (`$JS.<domain>.API`) answers.
    async fn wait_linked(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + LINK_TIMEOUT;
        let running: Vec<&RegionServer> =
            self.servers.iter().filter(|s| s.child.is_some()).collect();
        for from in &running {
            let client = self.connect(&from.region).await?;
            for to in &running {
                while !domain_answers(&client, &to.region).await {
                    if Instant::now() > deadline {
                        bail!(
                            "domain {} does not answer from region {} within {LINK_TIMEOUT:?} \
                             (hub leafnode port {}); logs in {}",
                            to.region,
                            from.region,
                            from.leaf_port,
                            self.dir.path().display()
                        );
                    }
                    tokio::time::sleep(POLL_INTERVAL).await;
                }
            }
        }
        Ok(())
    }
}

impl Drop for NatsRegions {
    fn drop(&mut self) {
        for server in &mut self.servers {
            if let Some(mut child) = server.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Whether `$JS.<domain>.API.INFO` answers through `client` without an
/// error: the domain is reachable and its JetStream is up.
async fn domain_answers(client: &async_nats::Client, domain: &str) -> bool {
    let asked = client.request(format!("$JS.{domain}.API.INFO"), "".into());
    match tokio::time::timeout(API_ATTEMPT, asked).await {
        Ok(Ok(reply)) => serde_json::from_slice::<serde_json::Value>(&reply.payload)
            .is_ok_and(|info| info.get("error").is_none()),
        _ => false,
    }
}

/// A TCP relay on loopback from a spoke's leafnode to the hub's leafnode
/// port, which the test can close: a network partition between two
/// regions without root or network namespaces.
pub struct Link {
    port: u16,
    open: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Link {
    /// A relay on a free loopback port to `to_port` (a fleetd's gRPC port,
    /// say, so that a test can cut the path between two regions' fleetd as
    /// well as their leafnode).
    pub async fn relay(to_port: u16) -> anyhow::Result<Self> {
        Self::open(to_port).await
    }

    /// The relay's own port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Drops every relayed connection and refuses new ones.
    pub fn cut(&self) {
        self.set_open(false);
    }

    /// Relays again.
    pub fn heal(&self) {
        self.set_open(true);
    }

    async fn open(to_port: u16) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding a link port")?;
        let port = listener.local_addr()?.port();
        let (open, is_open) = watch::channel(true);
        let task = tokio::spawn(async move {
            // Dropped with the task: every relayed connection ends with it.
            let mut relays = JoinSet::new();
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    continue;
                };
                if !*is_open.borrow() {
                    drop(inbound);
                    continue;
                }
                let mut is_open = is_open.clone();
                relays.spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", to_port)).await else {
                        return;
                    };
                    let mut inbound = inbound;
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = is_open.wait_for(|open| !*open) => {}
                    }
                });
                // Reap finished relays so the set does not grow.
                while relays.try_join_next().is_some() {}
            }
        });
        Ok(Link { port, open, task })
    }

    fn set_open(&self, open: bool) {
        self.open.send_replace(open);
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use async_nats::jetstream::stream::{Config, External, Source};

    use super::*;

    /// The harness's own promise: a stream in one domain is mirrored into
    /// another over the leafnode, keeping its sequence numbers; a cut stops
    /// the flow while both regions keep serving; a heal resumes it.
    #[tokio::test]
    async fn a_mirror_follows_across_the_link_and_a_cut_pauses_it() -> anyhow::Result<()> {
        let mut regions = NatsRegions::start(&["eu1", "us1"]).await?;
        let eu1 = async_nats::jetstream::new(regions.connect("eu1").await?);
        let us1 = async_nats::jetstream::new(regions.connect("us1").await?);
        eu1.create_stream(Config {
            name: "ORIGIN_EU1".into(),
            subjects: vec!["origin.eu1.>".into()],
            ..Default::default()
        })
        .await?;
        for n in 0..5 {
            eu1.publish(format!("origin.eu1.{n}"), "before".into())
                .await?
                .await?;
        }
        let mirror = us1
            .create_stream(Config {
                name: "ORIGIN_EU1".into(),
                mirror: Some(Source {
                    name: "ORIGIN_EU1".into(),
                    external: Some(External {
                        api_prefix: "$JS.eu1.API".into(),
                        delivery_prefix: None,
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await?;
        let copied = |want: u64| {
            let mut mirror = mirror.clone();
            async move {
                let deadline = Instant::now() + Duration::from_secs(20);
                loop {
                    let state = mirror.info().await?.state.clone();
                    if state.last_sequence == want {
                        return anyhow::Ok(state.messages);
                    }
                    anyhow::ensure!(
                        Instant::now() < deadline,
                        "the mirror holds {} of {want}",
                        state.last_sequence
                    );
                    tokio::time::sleep(POLL_INTERVAL).await;
                }
            }
        };
        assert_eq!(copied(5).await?, 5);
        let third = mirror.get_raw_message(3).await?;
        assert_eq!(
            third.subject.as_str(),
            "origin.eu1.2",
            "same sequence, same message"
        );

        regions.cut("us1").await?;
        for n in 5..8 {
            eu1.publish(format!("origin.eu1.{n}"), "during".into())
                .await?
                .await?;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let info = mirror.clone().info().await?.clone();
        assert_eq!(info.state.last_sequence, 5, "nothing crosses a cut link");
        let active = info.mirror.as_ref().and_then(|m| m.active);
        assert!(
            active.is_some_and(|a| a >= Duration::from_secs(1)),
            "the mirror's last activity ages during the cut: {active:?}"
        );

        regions.heal("us1").await?;
        assert_eq!(copied(8).await?, 8, "the mirror catches up after the heal");
        Ok(())
    }
}
