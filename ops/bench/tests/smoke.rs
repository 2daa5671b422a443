//! The benchmark in its CI configuration: every phase runs against a real
//! nats-server (or three-node JetStream cluster) and fleetd, and every
//! figure the issues ask for is there.

use std::process::Command;

/// Runs `fleetlog-bench --preset smoke` with `args`: the JSON report and
/// the printed table.
fn smoke_run(args: &[&str]) -> anyhow::Result<(serde_json::Value, String)> {
    let dir = tempfile::tempdir()?;
    let json = dir.path().join("bench.json");
    let output = Command::new(env!("CARGO_BIN_EXE_fleetlog-bench"))
        .args(["--preset", "smoke"])
        .args(args)
        .arg("--json")
        .arg(&json)
        .output()?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    anyhow::ensure!(
        output.status.success(),
        "fleetlog-bench failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok((serde_json::from_slice(&std::fs::read(&json)?)?, stdout))
}

/// The first row whose figure contains `needle`.
fn find_row(report: &serde_json::Value, needle: &str) -> Option<serde_json::Value> {
    report["rows"]
        .as_array()?
        .iter()
        .find(|row| row["figure"].as_str().is_some_and(|f| f.contains(needle)))
        .cloned()
}

#[test]
fn smoke_preset_reports_every_phase() -> anyhow::Result<()> {
    let (report, stdout) = smoke_run(&[])?;
    let figure = |needle: &str| find_row(&report, needle);
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

/// `--replicas 3`: fleetd and the raw baselines on R3 streams of one
/// three-node cluster, and the failover phase (the Devices stream's leader
/// SIGKILLed and restarted under writers) with nothing but UNAVAILABLE
/// failing.
#[test]
fn smoke_preset_on_a_three_node_cluster() -> anyhow::Result<()> {
    let (report, stdout) = smoke_run(&["--replicas", "3"])?;
    let figure = |needle: &str| {
        find_row(&report, needle).ok_or_else(|| anyhow::anyhow!("no row for {needle:?}:\n{stdout}"))
    };
    anyhow::ensure!(
        report["log"]
            .as_str()
            .is_some_and(|log| log.contains("every stream R3")),
        "the report says how the log was kept: {}",
        report["log"]
    );
    let creates = figure("creates/s, 4 clients")?;
    anyhow::ensure!(
        creates["baseline"]["what"]
            .as_str()
            .is_some_and(|what| what.contains("(R3)")),
        "the raw baseline is an R3 publish: {creates}"
    );
    anyhow::ensure!(creates["baseline"]["value"].as_f64().unwrap_or(0.0) > 0.0);
    for needle in [
        "first write acknowledged",
        "longest call",
        "writes/s before the kill",
        "writes/s after the restart",
        "replica current",
    ] {
        let value = figure(needle)?["value"].as_f64().unwrap_or(-1.0);
        anyhow::ensure!(value > 0.0, "{needle}: {value} is not a measurement");
    }
    for needle in ["failed with another code", "given up unanswered"] {
        let row = figure(needle)?;
        anyhow::ensure!(row["value"].as_f64() == Some(0.0), "{needle}: {row}");
    }
    Ok(())
}
