//! A headless Chromium driven over the Chrome DevTools Protocol, for the
//! suites that test fleetd from a real browser.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// `$FLEETLOG_CHROMIUM`, else Debian's `/usr/bin/chromium`.
pub fn chromium_bin() -> anyhow::Result<PathBuf> {
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
pub struct Chromium {
    child: Child,
    /// The browser's DevTools websocket, `ws://127.0.0.1:PORT/devtools/browser/…`.
    devtools: String,
    _profile: tempfile::TempDir,
}

impl Chromium {
    pub fn start(bin: &std::path::Path) -> anyhow::Result<Self> {
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
    pub async fn new_page(&self) -> anyhow::Result<Cdp> {
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
pub struct Cdp {
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
    pub async fn call(&mut self, method: &str, params: Value) -> anyhow::Result<Value> {
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
    pub async fn eval(&mut self, expression: &str) -> anyhow::Result<Value> {
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

    /// Evaluates `expression`, a promise, and returns what it resolves to.
    pub async fn eval_async(&mut self, expression: &str) -> anyhow::Result<Value> {
        let mut result = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
            )
            .await?;
        if let Some(exception) = result.get("exceptionDetails") {
            bail!("{expression}: {exception}");
        }
        Ok(result["result"]["value"].take())
    }

    /// Opens `url` and waits until `ready` (an expression) is true.
    pub async fn open(&mut self, url: &str, ready: &str) -> anyhow::Result<()> {
        let navigated = self.call("Page.navigate", json!({ "url": url })).await?;
        if let Some(error) = navigated.get("errorText") {
            bail!("opening {url}: {error}");
        }
        self.wait_for(ready, &format!("{url} to load")).await
    }

    /// Polls `expression` until it is true, for up to 10 s.
    pub async fn wait_for(&mut self, expression: &str, what: &str) -> anyhow::Result<()> {
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
