//! The live console (`/console`) in a real headless Chromium, driven over the
//! Chrome DevTools Protocol: it lists the devices through REST, and a device
//! created through the API afterwards appears through the SSE watch without
//! a reload; the Devices deployment shows its version.

use crate::common;

use anyhow::{Context, bail};
use common::browser::{Chromium, chromium_bin};
use common::{REGION, Sandbox, create, device, device_name};
use fleetlog_tests::ADMIN_KEY;
use serde_json::json;

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
