//! Commands: creates/s and updates/s through gRPC with N concurrent clients
//! (each its own connection), beside raw JetStream publishes of the same
//! events with the same headers and expected-last-subject-sequence,
//! pipelined; read-after-write lag under the heaviest load, beside a raw
//! consumer's delivery lag.

use std::time::{Duration, Instant};

use fleetlog_events::ResourceName;
use fleetlog_events::{EventLog, Id, StreamId};
use fleetlog_model::devices::names::DeviceName;
use fleetlog_proto::devices::v1::device_service_client::DeviceServiceClient;
use fleetlog_proto::devices::v1::{
    CreateDeviceRequest, Device, GetDeviceRequest, UpdateDeviceRequest,
};

use super::{ClientRun, Totals, join_clients};
use crate::cluster::{Cluster, REGION, devices_stream};
use crate::latency::Latencies;
use crate::raw::ConsumerLag;
use crate::report::{Goal, Row};
use crate::workload::{DeviceEvent, device_name, new_device, parent, publish_pipelined, site};

const PHASE: &str = "commands";
const PROJECT: &str = "cmd";
/// Acks a raw publisher keeps outstanding.
const RAW_WINDOW: usize = 1024;
/// Raw publishes timed one at a time, for the latency baseline.
const RAW_SEQUENTIAL: usize = 300;
/// Under the heaviest load every this-many-th create is read back.
const PROBE_EVERY: u64 = 8;

pub struct Settings {
    pub clients: Vec<usize>,
    pub seconds: f64,
    pub raw_messages: usize,
}

struct Raw {
    creates_per_s: f64,
    updates_per_s: f64,
    sequential: Latencies,
    /// CPU µs per pipelined publish, by process.
    cpu_per_publish: Vec<(&'static str, f64)>,
}

pub async fn run(
    cluster: &Cluster,
    settings: &Settings,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let raw = raw_publishes(cluster, settings.raw_messages).await?;
    let busiest = settings.clients.iter().copied().max().unwrap_or(1);
    let raw_create = "raw JetStream publish, pipelined";
    let raw_latency = "raw JetStream publish-with-ack, one at a time";
    for &clients in &settings.clients {
        eprintln!(
            "bench: commands with {clients} clients for {} s",
            settings.seconds
        );
        let heaviest = clients == busiest;
        let probe = if heaviest {
            let parent: DeviceName = device_name(PROJECT, "x").parse()?;
            let filter = devices_stream()?.collection_subject::<DeviceName>(&parent.parent());
            Some(ConsumerLag::start(cluster, filter).await?)
        } else {
            None
        };
        let cpu = cluster.cpu_meter();
        let created = creates(cluster, clients, settings.seconds, heaviest).await?;
        if heaviest {
            // Where the time goes: the machine's cores are shared by the
            // client, fleetd and nats-server.
            let spent = cpu.per_operation(created.count);
            let raw_of = |process: &str| {
                raw.cpu_per_publish
                    .iter()
                    .find(|(name, _)| *name == process)
                    .map_or(0.0, |(_, micros)| *micros)
            };
            for (process, micros) in &spent {
                rows.push(
                    Row::new(
                        PHASE,
                        format!("CPU per create in {process}, {clients} clients"),
                        *micros,
                        "µs",
                    )
                    .beside(format!("CPU per raw publish in {process}"), raw_of(process)),
                );
            }
            let total: f64 = spent.iter().map(|(_, micros)| micros).sum();
            let raw_total: f64 = raw.cpu_per_publish.iter().map(|(_, micros)| micros).sum();
            rows.push(
                Row::new(
                    PHASE,
                    format!("CPU per create, all processes, {clients} clients"),
                    total,
                    "µs",
                )
                .beside("CPU per raw publish, all processes", raw_total),
            );
        }
        let goal_creates = |row: Row| {
            if heaviest {
                row.goal(Goal::RatioAtLeast(0.5))
            } else {
                row
            }
        };
        rows.push(goal_creates(
            Row::new(
                PHASE,
                format!("creates/s, {clients} clients"),
                created.per_second,
                "/s",
            )
            .beside(raw_create, raw.creates_per_s),
        ));
        push_latencies(
            rows,
            "create",
            clients,
            &created.latencies,
            &raw.sequential,
            raw_latency,
        );
        if let Some(probe) = probe {
            let delivery = probe.finish().await?;
            rows.push(
                Row::new(
                    PHASE,
                    format!("read-after-write p50 (ack → visible to Get), {clients} clients"),
                    created.probes.p50_ms(),
                    "ms",
                )
                .beside("raw consumer delivery lag p50", delivery.p50_ms()),
            );
            rows.push(
                Row::new(
                    PHASE,
                    format!("read-after-write p99, {clients} clients"),
                    created.probes.p99_ms(),
                    "ms",
                )
                .beside("raw consumer delivery lag p99", delivery.p99_ms())
                .goal(Goal::AtMost(10.0)),
            );
        }
        let updated = updates(cluster, &created.names, settings.seconds).await?;
        rows.push(
            Row::new(
                PHASE,
                format!("updates/s, {clients} clients"),
                updated.per_second,
                "/s",
            )
            .beside(
                "raw JetStream publish, pipelined, expecting the last sequence",
                raw.updates_per_s,
            ),
        );
        push_latencies(
            rows,
            "update",
            clients,
            &updated.latencies,
            &raw.sequential,
            raw_latency,
        );
    }
    Ok(())
}

fn push_latencies(
    rows: &mut Vec<Row>,
    what: &str,
    clients: usize,
    latencies: &Latencies,
    raw: &Latencies,
    raw_what: &str,
) {
    rows.push(
        Row::new(
            PHASE,
            format!("{what} p50, {clients} clients"),
            latencies.p50_ms(),
            "ms",
        )
        .beside(format!("{raw_what}, p50"), raw.p50_ms()),
    );
    rows.push(
        Row::new(
            PHASE,
            format!("{what} p99, {clients} clients"),
            latencies.p99_ms(),
            "ms",
        )
        .beside(format!("{raw_what}, p99"), raw.p99_ms()),
    );
}

/// The same create and update events fleetd writes, published straight to
/// a stream configured like fleetd's.
async fn raw_publishes(cluster: &Cluster, messages: usize) -> anyhow::Result<Raw> {
    let client = cluster.nats().await?;
    let stream = StreamId::new(Id::parse("rawbench")?, Id::parse(REGION)?);
    // Opening through the log client gives the stream fleetd's config.
    EventLog::open(client.clone(), stream.clone()).await?;
    let js = async_nats::jetstream::new(client);
    let events = (0..messages)
        .map(|i| DeviceEvent::new(&stream, "raw", &format!("r{i}"), site(i as u64)))
        .collect::<anyhow::Result<Vec<_>>>()?;

    let cpu = cluster.cpu_meter();
    let started = Instant::now();
    let sequences = publish_pipelined(&js, events.iter().map(|e| e.publish(0)), RAW_WINDOW).await?;
    let creates_per_s = messages as f64 / started.elapsed().as_secs_f64();
    let cpu_per_publish = cpu.per_operation(messages as u64);

    let updates: Vec<_> = events
        .iter()
        .zip(&sequences)
        .map(|(event, sequence)| event.updated().publish(*sequence))
        .collect();
    let started = Instant::now();
    publish_pipelined(&js, updates, RAW_WINDOW).await?;
    let updates_per_s = messages as f64 / started.elapsed().as_secs_f64();

    let mut sequential = Latencies::default();
    for i in 0..RAW_SEQUENTIAL {
        let (subject, message) =
            DeviceEvent::new(&stream, "raw", &format!("s{i}"), "berlin")?.publish(0);
        let started = Instant::now();
        js.send_publish(subject, message).await?.await?;
        sequential.record(started.elapsed());
    }
    Ok(Raw {
        creates_per_s,
        updates_per_s,
        sequential,
        cpu_per_publish,
    })
}

fn revision(device: &Device) -> i64 {
    device.metadata.as_ref().map_or(0, |m| m.revision)
}

async fn creates(
    cluster: &Cluster,
    clients: usize,
    seconds: f64,
    probe_reads: bool,
) -> anyhow::Result<Totals> {
    let mut channels = Vec::with_capacity(clients);
    for _ in 0..clients {
        channels.push(cluster.channel().await?);
    }
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(seconds);
    let tasks = channels
        .into_iter()
        .enumerate()
        .map(|(c, channel)| {
            tokio::spawn(async move {
                let mut client = DeviceServiceClient::new(channel);
                let mut run = ClientRun::default();
                while Instant::now() < deadline {
                    let sent = Instant::now();
                    let device = client
                        .create_device(CreateDeviceRequest {
                            parent: parent(PROJECT),
                            device_id: format!("c{clients}-{c}-{}", run.count),
                            device: Some(new_device(site(run.count))),
                            request_id: String::new(),
                        })
                        .await?
                        .into_inner();
                    let acked = Instant::now();
                    run.latencies.record(acked - sent);
                    if probe_reads && run.count.is_multiple_of(PROBE_EVERY) {
                        client
                            .get_device(GetDeviceRequest {
                                name: device.name.clone(),
                                min_revision: revision(&device),
                                ..Default::default()
                            })
                            .await?;
                        run.probes.record(acked.elapsed());
                    }
                    run.names.push(device.name);
                    run.count += 1;
                }
                anyhow::Ok(run)
            })
        })
        .collect();
    join_clients(tasks, started).await
}

/// Each client updates the devices it created, round robin, with a mask.
async fn updates(cluster: &Cluster, names: &[Vec<String>], seconds: f64) -> anyhow::Result<Totals> {
    let mut channels = Vec::with_capacity(names.len());
    for _ in names {
        channels.push(cluster.channel().await?);
    }
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(seconds);
    let tasks = channels
        .into_iter()
        .zip(names.iter().cloned())
        .map(|(channel, names)| {
            tokio::spawn(async move {
                let mut client = DeviceServiceClient::new(channel);
                let mut run = ClientRun::default();
                if names.is_empty() {
                    return anyhow::Ok(run);
                }
                while Instant::now() < deadline {
                    let name = &names[(run.count as usize) % names.len()];
                    let sent = Instant::now();
                    client
                        .update_device(UpdateDeviceRequest {
                            device: Some(Device {
                                name: name.clone(),
                                display_name: format!("renamed {}", run.count),
                                ..Default::default()
                            }),
                            update_mask: Some(prost_types::FieldMask {
                                paths: vec!["display_name".into()],
                            }),
                            ..Default::default()
                        })
                        .await?;
                    run.latencies.record(sent.elapsed());
                    run.count += 1;
                }
                anyhow::Ok(run)
            })
        })
        .collect();
    join_clients(tasks, started).await
}
