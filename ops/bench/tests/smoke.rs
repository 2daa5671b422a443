//! The benchmark in its CI configuration: every phase runs against a real
//! nats-server and fleetd, and every figure the issue asks for is there.

use std::process::Command;

#[test]
fn smoke_preset_reports_every_phase() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let json = dir.path().join("bench.json");
    let output = Command::new(env!("CARGO_BIN_EXE_fleetlog-bench"))
        .args(["--preset", "smoke", "--json"])
        .arg(&json)
        .output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    anyhow::ensure!(
        output.status.success(),
        "fleetlog-bench failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json)?)?;
    let rows = report["rows"].as_array().cloned().unwrap_or_default();
    let figure = |needle: &str| {
        rows.iter()
            .find(|row| row["figure"].as_str().is_some_and(|f| f.contains(needle)))
            .cloned()
    };
    for needle in [
        "creates/s, 4 clients",
        "updates/s, 1 clients",
        "read-after-write p99",
        "Get p50",
        "List p99",
        "full history",
        "compacted",
        "write pause at the switch",
        "delivery lag p99, 20 watchers",
        "Get p50 as a device-operator service account",
        "Get p99 as the device's own agent",
    ] {
        let row =
            figure(needle).ok_or_else(|| anyhow::anyhow!("no row for {needle:?}:\n{stdout}"))?;
        let value = row["value"].as_f64().unwrap_or(-1.0);
        anyhow::ensure!(value > 0.0, "{needle}: {value} is not a measurement");
    }
    // Throughputs stand beside their raw building block, as a ratio.
    let creates = figure("creates/s, 4 clients").unwrap_or_default();
    anyhow::ensure!(creates["baseline"]["value"].as_f64().unwrap_or(0.0) > 0.0);
    anyhow::ensure!(creates["baseline"]["ratio"].as_f64().unwrap_or(0.0) > 0.0);
    let delivered = figure("changes delivered").unwrap_or_default();
    anyhow::ensure!(
        delivered["value"].as_f64() == Some(100.0),
        "every watcher got every change: {delivered}"
    );
    let memory = report["memory"].as_array().cloned().unwrap_or_default();
    anyhow::ensure!(
        memory
            .iter()
            .any(|m| m["process"] == "fleetd" && m["peak_rss_mib"].as_f64().unwrap_or(0.0) > 1.0),
        "fleetd's peak RSS is reported: {memory:?}"
    );
    anyhow::ensure!(
        stdout.contains("| phase | figure |"),
        "a table is printed:\n{stdout}"
    );
    Ok(())
}
