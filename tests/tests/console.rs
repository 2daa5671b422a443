//! The live console (`/console`) in a real headless Chromium, driven over the
//! Chrome DevTools Protocol: it lists the devices through REST, and a device
//! created through the API afterwards appears through the SSE watch without
//! a reload; the Devices deployment shows its version.

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use common::{REGION, Sandbox, create, device, device_name};
use fleetlog_tests::ADMIN_KEY;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const DEPLOYMENT: &str = "services/devices.fleetlog.io/deployments/eu1";

#[tokio::test]
async fn a_device_created_through_the_api_appears_without_a_reload() -> anyhow::Result<()> {
    let bin = chromium_bin()?;
    let sandbox = Sandbox::start().await?;
    let mut client = sandbox.client().await?;
    create(&mut client, "before", device(&[("site", "berlin")], 5)).await?;

    let browser = Chromium::start(&bin)?;
    let mut page = browser.new_page().await?;
    let url = format!(
        "http://{}/console#key={ADMIN_KEY}&project=p0&region={REGION}",
        sandbox.ready.http
    );
    let navigated = page.call("Page.navigate", json!({ "url": url })).await?;
    if let Some(error) = navigated.get("errorText") {
        bail!("opening {url}: {error}");
    }
    page.wait_for(
        &format!(
            "{} && document.getElementById('watch-state').textContent === 'live'",
            row_exists("devices", &device_name("before"))
        ),
        "the device `before` listed and the watch live",
    )
    .await?;

    // A reload or navigation would drop this.
    let load_id = page.eval("window.__loadId = Math.random()").await?;
    create(&mut client, "after", device(&[("site", "paris")], 5)).await?;
    let after = device_name("after");
    page.wait_for(
        &row_exists("devices", &after),
        "the device `after` to appear",
    )
    .await?;
    assert_eq!(
        page.eval("window.__loadId").await?,
        load_id,
        "the page reloaded or navigated"
    );
    let text = page
        .eval(&format!("{}.innerText", row("devices", &after)))
        .await?;
    let text = text.as_str().context("the row's text")?;
    assert!(text.contains("site=paris"), "the new row: {text:?}");

    page.wait_for(
        &format!(
            "{}?.querySelector('td.version')?.textContent === 'v1'",
            row("deployments", DEPLOYMENT)
        ),
        "the eu1 deployment showing version v1",
    )
    .await?;
    assert_eq!(
        page.eval("document.getElementById('errors').innerText")
            .await?,
        json!(""),
        "the page shows errors"
    );

    drop(browser);
    sandbox.stop().await
}

/// A JS expression for the row of `name` in `tbody#{table}` (or null).
fn row(table: &str, name: &str) -> String {
    let selector = format!("#{table} tr[data-name=\"{name}\"]");
    format!("document.querySelector({})", json!(selector))
}

fn row_exists(table: &str, name: &str) -> String {
    format!("({} !== null)", row(table, name))
}

/// `$FLEETLOG_CHROMIUM`, else Debian's `/usr/bin/chromium`.
fn chromium_bin() -> anyhow::Result<PathBuf> {
    let bin = std::env::var_os("FLEETLOG_CHROMIUM")
        .map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
    if !bin.exists() {
        bail!(
            "{} not found: the browser tests need Chromium; run ops/setup.sh \
             (or set FLEETLOG_CHROMIUM to a Chromium binary)",
            bin.display()
        );
    }
    Ok(bin)
}

/// A headless Chromium with its own profile, killed by PID on drop.
struct Chromium {
    child: Child,
    /// The browser's DevTools websocket, `ws://127.0.0.1:PORT/devtools/browser/…`.
    devtools: String,
    _profile: tempfile::TempDir,
}

impl Chromium {
    fn start(bin: &std::path::Path) -> anyhow::Result<Self> {
        let profile = tempfile::tempdir()?;
        let child = Command::new(bin)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        // Guard from here on, so a failure below still kills it.
        let mut chromium = Chromium {
            child,
            devtools: String::new(),
            _profile: profile,
        };
        let stderr = chromium.child.stderr.take().context("chromium's stderr")?;
        // Read stderr to its end (a full pipe would block chromium); pass
        // every line on until the DevTools one has been seen.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(url) = line.split("DevTools listening on ").nth(1) {
                        chromium.devtools = url.trim().to_owned();
                        return Ok(chromium);
                    }
                    seen.push(line);
                }
                Err(_) => bail!(
                    "chromium printed no DevTools URL within 30 s (exit: {:?}); stderr:\n{}",
                    chromium.child.try_wait(),
                    seen.join("\n")
                ),
            }
        }
    }

    /// Opens a new tab and connects to it.
    async fn new_page(&self) -> anyhow::Result<Cdp> {
        let mut browser = Cdp::connect(&self.devtools).await?;
        let target = browser
            .call("Target.createTarget", json!({ "url": "about:blank" }))
            .await?;
        let id = target["targetId"]
            .as_str()
            .context("Target.createTarget's targetId")?;
        let host = self
            .devtools
            .strip_prefix("ws://")
            .and_then(|rest| rest.split('/').next())
            .context("the DevTools URL's host")?;
        Cdp::connect(&format!("ws://{host}/devtools/page/{id}")).await
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Chrome DevTools Protocol connection: one call at a time, events skipped.
struct Cdp {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
}

impl Cdp {
    async fn connect(url: &str) -> anyhow::Result<Self> {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .with_context(|| format!("connecting to {url}"))?;
        Ok(Cdp { ws, next_id: 1 })
    }

    /// Sends `method` and returns its result.
    async fn call(&mut self, method: &str, params: Value) -> anyhow::Result<Value> {
        let id = self.next_id;
        self.next_id += 1;
        let request = json!({ "id": id, "method": method, "params": params });
        self.ws.send(Message::text(request.to_string())).await?;
        loop {
            let message = tokio::time::timeout(Duration::from_secs(10), self.ws.next())
                .await
                .with_context(|| format!("{method}: no answer within 10 s"))?
                .with_context(|| format!("{method}: the DevTools connection closed"))??;
            let Message::Text(text) = message else {
                continue;
            };
            let mut answer: Value = serde_json::from_str(text.as_str())?;
            if answer["id"] != id {
                continue; // an event
            }
            if let Some(error) = answer.get("error") {
                bail!("{method}: {error}");
            }
            return Ok(answer["result"].take());
        }
    }

    /// Evaluates `expression` in the page and returns its value.
    async fn eval(&mut self, expression: &str) -> anyhow::Result<Value> {
        let mut result = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true }),
            )
            .await?;
        if let Some(exception) = result.get("exceptionDetails") {
            bail!("{expression}: {exception}");
        }
        Ok(result["result"]["value"].take())
    }

    /// Polls `expression` until it is true, for up to 10 s.
    async fn wait_for(&mut self, expression: &str, what: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.eval(expression).await? == json!(true) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let shown = self.eval("document.body.innerText").await?;
        bail!(
            "waited 10 s for {what}; the page shows:\n{}",
            shown.as_str().unwrap_or_default()
        )
    }
}
