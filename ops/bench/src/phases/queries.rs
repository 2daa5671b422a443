//! Queries: Get and a label-filtered List over gRPC at each fleet size,
//! beside raw RocksDB point gets and prefix scans over the same keys and
//! record sizes. The fleet is seeded through the log (the create events the
//! command path writes, published raw) so a million devices take seconds.

use std::time::{Duration, Instant};

use fleetlog_projections::store::{Record, record_key};
use fleetlog_proto::devices::v1::device_service_client::DeviceServiceClient;
use fleetlog_proto::devices::v1::{GetDeviceRequest, ListDevicesRequest};
use indicatif::{ProgressBar, ProgressStyle};
use prost::Message;
use rand::Rng;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use crate::cluster::{Cluster, devices_stream};
use crate::latency::Latencies;
use crate::raw::RawRocks;
use crate::report::{Goal, Row};
use crate::workload::{DeviceEvent, FILTER, device_name, parent, publish_pipelined, site};

const PHASE: &str = "queries";
const PROJECT: &str = "fleet";
const PAGE_SIZE: i32 = 100;
/// Pages a List client follows before starting over.
const PAGES_PER_CHAIN: usize = 10;
/// Records a 100-item page at 10 % selectivity reads.
const SCANNED_PER_PAGE: usize = 1000;
const SEED_CHUNK: u64 = 10_000;
const SEED_WINDOW: usize = 4096;
const DEVICE_TYPE: &str = "fleetlog.devices.v1.Device";

pub struct Settings {
    pub sizes: Vec<u64>,
    pub gets: usize,
    pub lists: usize,
}

/// What later phases compare against.
pub struct Outcome {
    pub raw_rocks_write_per_s: f64,
}

pub fn device_id(index: u64) -> String {
    format!("d{index:07}")
}

pub async fn run(
    cluster: &Cluster,
    settings: &Settings,
    rows: &mut Vec<Row>,
) -> anyhow::Result<Outcome> {
    let raw_dir = tempfile::tempdir()?;
    let mut raw = RawRocks::open(raw_dir.path())?;
    let mut client = DeviceServiceClient::new(cluster.channel().await?);
    let mut seeded = 0u64;
    for &size in &settings.sizes {
        let fleet = size.max(seeded);
        seed(cluster, &mut raw, seeded, fleet, rows).await?;
        seeded = fleet;
        eprintln!("bench: queries over {fleet} devices");
        let label = human(fleet);

        let round_trip = health_checks(cluster, settings.gets).await?;
        let ids = random_indexes(fleet, settings.gets);
        let mut gets = Latencies::default();
        for &i in &ids {
            let started = Instant::now();
            client
                .get_device(GetDeviceRequest {
                    name: device_name(PROJECT, &device_id(i)),
                    ..Default::default()
                })
                .await?;
            gets.record(started.elapsed());
        }
        let raw_gets =
            tokio::task::block_in_place(|| raw.point_gets(ids.iter().map(|&i| raw_key(i))))?;
        rows.push(
            Row::new(
                PHASE,
                format!("Get p50, {label} devices"),
                gets.p50_ms(),
                "ms",
            )
            .beside("raw RocksDB point get p50", raw_gets.p50_ms())
            .goal(Goal::AtMost(0.150)),
        );
        rows.push(
            Row::new(
                PHASE,
                format!("Get p99, {label} devices"),
                gets.p99_ms(),
                "ms",
            )
            .beside("raw RocksDB point get p99", raw_gets.p99_ms()),
        );
        // The floor under any unary call on this machine: fleetd's health
        // check does no work at all.
        rows.push(
            Row::new(
                PHASE,
                format!("Get p50, {label} devices, beside a no-op call"),
                gets.p50_ms(),
                "ms",
            )
            .beside(
                "gRPC round trip that does nothing (health Check) p50",
                round_trip.p50_ms(),
            ),
        );

        let lists = list_pages(&mut client, settings.lists).await?;
        let starts = random_indexes(
            fleet.saturating_sub(SCANNED_PER_PAGE as u64).max(1),
            settings.lists,
        );
        let prefix = record_key(DEVICE_TYPE, &format!("{}/devices/", parent(PROJECT)));
        let raw_scans = tokio::task::block_in_place(|| {
            raw.prefix_scans(
                &prefix,
                starts.iter().map(|&i| raw_key(i)),
                SCANNED_PER_PAGE,
            )
        })?;
        let scan = format!("raw RocksDB prefix scan of {SCANNED_PER_PAGE} records");
        rows.push(
            Row::new(
                PHASE,
                format!("List p50 (100/page, label filter), {label} devices"),
                lists.p50_ms(),
                "ms",
            )
            .beside(format!("{scan}, p50"), raw_scans.p50_ms()),
        );
        rows.push(
            Row::new(
                PHASE,
                format!("List p99, {label} devices"),
                lists.p99_ms(),
                "ms",
            )
            .beside(format!("{scan}, p99"), raw_scans.p99_ms()),
        );
    }
    Ok(Outcome {
        raw_rocks_write_per_s: raw.write_rate(),
    })
}

async fn health_checks(cluster: &Cluster, count: usize) -> anyhow::Result<Latencies> {
    let mut health = HealthClient::new(cluster.channel().await?);
    let mut latencies = Latencies::default();
    for _ in 0..count {
        let started = Instant::now();
        health.check(HealthCheckRequest::default()).await?;
        latencies.record(started.elapsed());
    }
    Ok(latencies)
}

/// Pages through the Berlin devices: `count` List calls in chains of
/// consecutive pages.
async fn list_pages(
    client: &mut DeviceServiceClient<fleetlog_tests::Authed>,
    count: usize,
) -> anyhow::Result<Latencies> {
    let mut latencies = Latencies::default();
    let mut token = String::new();
    for call in 0..count {
        if call % PAGES_PER_CHAIN == 0 {
            token.clear();
        }
        let started = Instant::now();
        let page = client
            .list_devices(ListDevicesRequest {
                parent: parent(PROJECT),
                page_size: PAGE_SIZE,
                page_token: std::mem::take(&mut token),
                filter: FILTER.into(),
                ..Default::default()
            })
            .await?
            .into_inner();
        latencies.record(started.elapsed());
        anyhow::ensure!(!page.devices.is_empty(), "a List page came back empty");
        token = page.next_page_token;
    }
    Ok(latencies)
}

/// Publishes create events for devices `from..to` (as the command path
/// writes them), writes the same records into the raw RocksDB, and waits
/// until fleetd's projection has applied them.
async fn seed(
    cluster: &Cluster,
    raw: &mut RawRocks,
    from: u64,
    to: u64,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    if to <= from {
        return Ok(());
    }
    eprintln!("bench: seeding devices {from}..{to} through the log");
    let stream = devices_stream()?;
    let js = async_nats::jetstream::new(cluster.nats().await?);
    let bar = ProgressBar::new(to - from).with_style(ProgressStyle::with_template(
        "seeding {bar:40} {pos}/{len} devices ({per_sec}, {eta})",
    )?);
    let started = Instant::now();
    let mut last = 0u64;
    let mut start = from;
    while start < to {
        let end = (start + SEED_CHUNK).min(to);
        let events = (start..end)
            .map(|i| DeviceEvent::new(&stream, PROJECT, &device_id(i), site(i)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let sequences =
            publish_pipelined(&js, events.iter().map(|e| e.publish(0)), SEED_WINDOW).await?;
        last = sequences.last().copied().unwrap_or(last);
        let records = events
            .iter()
            .zip(&sequences)
            .map(|(event, &revision)| raw_record(event, revision))
            .collect::<anyhow::Result<Vec<_>>>()?;
        tokio::task::block_in_place(|| raw.write(records))?;
        bar.inc(end - start);
        start = end;
    }
    bar.finish_and_clear();
    let published = started.elapsed();
    wait_applied(cluster, &device_name(PROJECT, &device_id(to - 1)), last).await?;
    let visible = started.elapsed();
    let count = (to - from) as f64;
    rows.push(
        Row::new(
            PHASE,
            format!(
                "seeding {} devices: publish → applied by fleetd's projector",
                human(to - from)
            ),
            count / visible.as_secs_f64(),
            "/s",
        )
        .beside(
            "raw JetStream publish of the same events, pipelined",
            count / published.as_secs_f64(),
        ),
    );
    Ok(())
}

/// Waits until fleetd's projection has applied `revision` (a Get with
/// `min_revision`, repeated while fleetd's own read wait runs out).
async fn wait_applied(cluster: &Cluster, name: &str, revision: u64) -> anyhow::Result<()> {
    let mut client = DeviceServiceClient::new(cluster.channel().await?);
    let deadline = Instant::now() + Duration::from_secs(1800);
    loop {
        let outcome = client
            .get_device(GetDeviceRequest {
                name: name.to_owned(),
                min_revision: i64::try_from(revision)?,
                ..Default::default()
            })
            .await;
        match outcome {
            Ok(_) => return Ok(()),
            Err(status) if status.code() == Code::DeadlineExceeded && Instant::now() < deadline => {
            }
            Err(status) => {
                anyhow::bail!("waiting for the projector to apply revision {revision}: {status}")
            }
        }
    }
}

fn raw_key(index: u64) -> Vec<u8> {
    record_key(DEVICE_TYPE, &device_name(PROJECT, &device_id(index)))
}

/// The record a projection keeps for a create event (bincode as in the
/// projection store).
fn raw_record(event: &DeviceEvent, revision: u64) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
    let device = event
        .change
        .resource
        .as_ref()
        .map(|any| any.value.clone())
        .unwrap_or_default();
    let name = fleetlog_proto::devices::v1::Device::decode(device.as_slice())?.name;
    let record = Record {
        revision,
        bytes: device,
    };
    let value = bincode::serde::encode_to_vec(&record, bincode::config::standard())?;
    Ok((record_key(DEVICE_TYPE, &name), value))
}

fn random_indexes(below: u64, count: usize) -> Vec<u64> {
    let mut rng = rand::rng();
    (0..count)
        .map(|_| rng.random_range(0..below.max(1)))
        .collect()
}

/// 100000 → "100k", 1000000 → "1M".
pub fn human(count: u64) -> String {
    match count {
        c if c >= 1_000_000 && c.is_multiple_of(1_000_000) => format!("{}M", c / 1_000_000),
        c if c >= 1000 && c.is_multiple_of(1000) => format!("{}k", c / 1000),
        c => c.to_string(),
    }
}
