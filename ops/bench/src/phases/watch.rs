//! Watch: many concurrent WatchDevices streams on one collection while a
//! writer creates devices in it; delivery lag from the event's time (stamped
//! by fleetd before the append) to arrival at each watcher, beside a raw
//! JetStream consumer on the same subjects.

use std::time::{Duration, Instant};

use fleetlog_events::ResourceName;
use fleetlog_model::devices::names::DeviceName;
use fleetlog_proto::devices::v1::device_service_client::DeviceServiceClient;
use fleetlog_proto::devices::v1::{CreateDeviceRequest, WatchDevicesRequest};
use tokio::sync::{mpsc, watch};

use crate::cluster::{Cluster, devices_stream};
use crate::latency::{Latencies, system_time};
use crate::raw::ConsumerLag;
use crate::report::{Goal, Row};
use crate::workload::{device_name, new_device, parent};

const PHASE: &str = "watch";
const PROJECT: &str = "watched";
/// Watch streams sharing one HTTP/2 connection.
const STREAMS_PER_CONNECTION: usize = 100;
/// How long watchers may take to receive the last event after the writer
/// finished.
const DRAIN: Duration = Duration::from_secs(30);

pub struct Settings {
    pub watchers: usize,
    pub events: usize,
    pub per_second: f64,
}

pub async fn run(
    cluster: &Cluster,
    settings: &Settings,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let watchers = settings.watchers;
    eprintln!(
        "bench: {watchers} watchers, {} events at {}/s",
        settings.events, settings.per_second
    );
    let (ready_tx, mut ready_rx) = mpsc::channel::<Result<(), String>>(watchers.max(1));
    let (stop_tx, stop_rx) = watch::channel(false);
    let setup = Instant::now();
    let mut tasks = Vec::with_capacity(watchers);
    let mut channel = None;
    for w in 0..watchers {
        if w % STREAMS_PER_CONNECTION == 0 {
            channel = Some(cluster.channel().await?);
        }
        let Some(channel) = channel.clone() else {
            continue;
        };
        let ready = ready_tx.clone();
        let mut stop = stop_rx.clone();
        let expected = settings.events;
        tasks.push(tokio::spawn(async move {
            let mut client = DeviceServiceClient::new(channel);
            let opened = client
                .watch_devices(WatchDevicesRequest {
                    parent: parent(PROJECT),
                    ..Default::default()
                })
                .await;
            let mut stream = match opened {
                Ok(response) => response.into_inner(),
                Err(status) => {
                    let _ = ready.send(Err(format!("watcher {w}: {status}"))).await;
                    return Err(status.into());
                }
            };
            let mut lags = Latencies::default();
            let mut announced = false;
            while lags.count() < expected as u64 {
                let message = tokio::select! {
                    _ = stop.wait_for(|s| *s) => break,
                    message = stream.message() => message?,
                };
                let Some(response) = message else { break };
                if response.is_current && !announced {
                    announced = true;
                    let _ = ready.send(Ok(())).await;
                }
                for change in response.changes {
                    let time = change
                        .device
                        .as_ref()
                        .and_then(|d| d.metadata.as_ref())
                        .and_then(|m| m.update_time.as_ref())
                        .and_then(system_time);
                    if let Some(time) = time {
                        lags.record_since(time);
                    }
                }
            }
            anyhow::Ok(lags)
        }));
    }
    drop(ready_tx);
    for _ in 0..watchers {
        tokio::time::timeout(Duration::from_secs(300), ready_rx.recv())
            .await
            .map_err(|_| anyhow::anyhow!("watchers did not become current within 300 s"))?
            .ok_or_else(|| anyhow::anyhow!("a watcher ended before it was current"))?
            .map_err(|e| anyhow::anyhow!("opening a watch failed: {e}"))?;
    }
    let setup = setup.elapsed();

    let collection: DeviceName = device_name(PROJECT, "x").parse()?;
    let raw = ConsumerLag::start(
        cluster,
        devices_stream()?.collection_subject::<DeviceName>(&collection.parent()),
    )
    .await?;
    let mut writer = DeviceServiceClient::new(cluster.channel().await?);
    let cpu = cluster.cpu_meter();
    let interval = Duration::from_secs_f64(1.0 / settings.per_second.max(0.001));
    let mut ticks = tokio::time::interval(interval);
    for i in 0..settings.events {
        ticks.tick().await;
        writer
            .create_device(CreateDeviceRequest {
                parent: parent(PROJECT),
                device_id: format!("w{i}"),
                device: Some(new_device("berlin")),
                request_id: String::new(),
            })
            .await?;
    }
    // Watchers end once they have every change; whoever is still waiting
    // when the drain time is up is stopped and counted short.
    let stopper = tokio::spawn(async move {
        tokio::time::sleep(DRAIN).await;
        let _ = stop_tx.send(true);
    });
    let mut lags = Latencies::default();
    for task in tasks {
        lags.merge(&task.await??);
    }
    stopper.abort();
    let spent = cpu.per_operation(lags.count());
    let raw = raw.finish().await?;
    let expected = (watchers * settings.events) as f64;
    rows.push(
        Row::new(
            PHASE,
            format!("delivery lag p50, {watchers} watchers"),
            lags.p50_ms(),
            "ms",
        )
        .beside("raw JetStream consumer lag p50", raw.p50_ms()),
    );
    rows.push(
        Row::new(
            PHASE,
            format!("delivery lag p99, {watchers} watchers"),
            lags.p99_ms(),
            "ms",
        )
        .beside("raw JetStream consumer lag p99", raw.p99_ms())
        .goal(Goal::AtMost(50.0)),
    );
    rows.push(Row::new(
        PHASE,
        format!(
            "changes delivered within {} s of the last write",
            DRAIN.as_secs()
        ),
        100.0 * lags.count() as f64 / expected.max(1.0),
        "%",
    ));
    rows.push(Row::new(
        PHASE,
        format!("opening {watchers} watches until each is current"),
        setup.as_secs_f64() * 1000.0,
        "ms",
    ));
    // Fan-out is CPU: every change is shaped, encoded and sent once per
    // watcher, and decoded once per watcher by the clients.
    for (process, micros) in spent {
        rows.push(Row::new(
            PHASE,
            format!("CPU per delivered change in {process}"),
            micros,
            "µs",
        ));
    }
    Ok(())
}
