//! Commands: creates/s and updates/s through gRPC with N concurrent clients
//! (each its own connection), beside raw JetStream publishes of the same
//! events with the same headers and expected-last-subject-sequence,
//! pipelined; read-after-write lag under the heaviest load, beside a raw
//! consumer's delivery lag.

use std::time::{Duration, Instant};

use anyhow::Context;
use fleetlog_events::ResourceName;
use fleetlog_events::{EventLog, Id, StreamId};
use fleetlog_model::devices::names::DeviceName;
use fleetlog_proto::devices::v1::device_service_client::DeviceServiceClient;
use fleetlog_proto::devices::v1::{
    CreateDeviceRequest, Device, GetDeviceRequest, UpdateDeviceRequest,
};
use fleetlog_tests::cluster::wait_for_stream_leader;

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
/// Under the heaviest load every this-many-th create is read back.
const PROBE_EVERY: u64 = 8;

pub struct Settings {
    pub clients: Vec<usize>,
    pub seconds: f64,
    pub raw_messages: usize,
    /// Raw publishes timed one at a time, for the latency baseline: enough
    /// that its p99 (issue 15's 1-client target) is not a handful of
    /// samples.
    pub raw_sequential: usize,
}

struct Raw {
    creates_per_s: f64,
    updates_per_s: f64,
    sequential: Latencies,
    /// CPU µs per pipelined publish, by process.
    cpu_per_publish: Vec<(String, f64)>,
    /// As many publishers as the busiest command level has clients, on one
    /// connection (as fleetd has one), each waiting for its ack before the
    /// next publish: what JetStream does with that many writes in flight
    /// and no pipelining, the other side of the pipelined figure.
    concurrent: Concurrent,
}

struct Concurrent {
    publishers: usize,
    per_s: f64,
    cpu_per_publish: Vec<(String, f64)>,
}

pub async fn run(
    cluster: &Cluster,
    settings: &Settings,
    rows: &mut Vec<Row>,
    notes: &mut Vec<String>,
) -> anyhow::Result<()> {
    let busiest = settings.clients.iter().copied().max().unwrap_or(1);
    let raw = raw_publishes(
        cluster,
        settings.raw_messages,
        settings.raw_sequential,
        busiest,
        notes,
    )
    .await?;
    // The raw stream has fleetd's replicas; the names say how many, so a
    // table read on its own still says what each ratio compares.
    let replicas = cluster.replicas;
    let raw_create = format!("raw JetStream publish (R{replicas}), pipelined");
    let raw_update =
        format!("raw JetStream publish (R{replicas}), pipelined, expecting the last sequence");
    let raw_latency = format!("raw JetStream publish-with-ack (R{replicas}), one at a time");
    for &clients in &settings.clients {
        eprintln!(
            "bench: commands with {clients} clients for {} s",
            settings.seconds
        );
        let heaviest = clients == busiest;
        let p99_goal = (replicas > 1 && clients == 1).then_some(Goal::AddedAtMost(2.0));
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
            let concurrent = &raw.concurrent;
            let what = format!(
                "CPU per raw publish-with-ack, {} publishers one at a time",
                concurrent.publishers
            );
            for (process, micros) in &concurrent.cpu_per_publish {
                let fleetlog = spent
                    .iter()
                    .find(|(name, _)| name == process)
                    .map_or(0.0, |(_, micros)| *micros);
                if *micros > 0.0 {
                    rows.push(
                        Row::new(
                            PHASE,
                            format!(
                                "CPU per create in {process}, {clients} clients, beside \
                                 unpipelined raw publishes"
                            ),
                            fleetlog,
                            "µs",
                        )
                        .beside(format!("{what}, in {process}"), *micros),
                    );
                }
            }
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
            .beside(raw_create.as_str(), raw.creates_per_s),
        ));
        if heaviest {
            rows.push(
                Row::new(
                    PHASE,
                    format!("creates/s, {clients} clients, beside unpipelined raw publishes"),
                    created.per_second,
                    "/s",
                )
                .beside(
                    format!(
                        "raw JetStream publish-with-ack (R{replicas}), {} publishers on one \
                         connection, one at a time each",
                        raw.concurrent.publishers
                    ),
                    raw.concurrent.per_s,
                ),
            );
        }
        push_latencies(
            rows,
            "create",
            clients,
            &created.latencies,
            &raw.sequential,
            &raw_latency,
            p99_goal,
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
            .beside(raw_update.as_str(), raw.updates_per_s),
        );
        push_latencies(
            rows,
            "update",
            clients,
            &updated.latencies,
            &raw.sequential,
            &raw_latency,
            p99_goal,
        );
    }
    Ok(())
}

/// `p99_goal`: issue 15's target for one client on a cluster, at most
/// 2 ms added over the raw publish-with-ack at p99.
fn push_latencies(
    rows: &mut Vec<Row>,
    what: &str,
    clients: usize,
    latencies: &Latencies,
    raw: &Latencies,
    raw_what: &str,
    p99_goal: Option<Goal>,
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
        .beside(format!("{raw_what}, p99"), raw.p99_ms())
        .goal_if(p99_goal),
    );
}

/// The same create and update events fleetd writes, published straight to
/// a stream configured like fleetd's, with its replicas, on the same
/// servers.
async fn raw_publishes(
    cluster: &Cluster,
    messages: usize,
    sequential_publishes: usize,
    publishers: usize,
    notes: &mut Vec<String>,
) -> anyhow::Result<Raw> {
    let stream = StreamId::new(Id::parse("rawbench")?, Id::parse(REGION)?);
    // Opening through the log client gives the stream fleetd's config,
    // replicas included.
    EventLog::open_with(cluster.nats().await?, stream.clone(), cluster.log_options()).await?;
    let client = raw_client(cluster, &stream.stream_name(), notes).await?;
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
    for i in 0..sequential_publishes {
        let (subject, message) =
            DeviceEvent::new(&stream, "raw", &format!("s{i}"), "berlin")?.publish(0);
        let started = Instant::now();
        js.send_publish(subject, message).await?.await?;
        sequential.record(started.elapsed());
    }
    let concurrent = concurrent_publishes(cluster, &js, &stream, publishers, messages).await?;
    Ok(Raw {
        creates_per_s,
        updates_per_s,
        sequential,
        cpu_per_publish,
        concurrent,
    })
}

/// `messages` create events published by `publishers` tasks sharing one
/// connection, each awaiting its ack before its next publish.
async fn concurrent_publishes(
    cluster: &Cluster,
    js: &async_nats::jetstream::Context,
    stream: &StreamId,
    publishers: usize,
    messages: usize,
) -> anyhow::Result<Concurrent> {
    let publishers = publishers.max(1);
    let each = messages.div_ceil(publishers);
    let mut batches = Vec::with_capacity(publishers);
    for p in 0..publishers {
        let events = (0..each)
            .map(|i| DeviceEvent::new(stream, "raw", &format!("p{p}-{i}"), site(i as u64)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        batches.push(events);
    }
    let cpu = cluster.cpu_meter();
    let started = Instant::now();
    let tasks: Vec<_> = batches
        .into_iter()
        .map(|events| {
            let js = js.clone();
            tokio::spawn(async move {
                for event in events {
                    let (subject, message) = event.publish(0);
                    js.send_publish(subject, message).await?.await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    let published = (each * publishers) as u64;
    Ok(Concurrent {
        publishers,
        per_s: published as f64 / started.elapsed().as_secs_f64(),
        cpu_per_publish: cpu.per_operation(published),
    })
}

/// A client for the raw publishes, placed like fleetd's connection: on the
/// raw stream's leader when fleetd is connected to the Devices stream's
/// leader, on a follower when it is not. On a cluster a publish to a
/// follower is routed to the leader and its ack back, so both sides of a
/// ratio then make the same hops. Where everything was goes into the notes.
async fn raw_client(
    cluster: &Cluster,
    raw_stream: &str,
    notes: &mut Vec<String>,
) -> anyhow::Result<async_nats::Client> {
    let Some(nats) = cluster.nats_cluster() else {
        return cluster.nats().await;
    };
    let any = cluster.nats().await?;
    let wait = Duration::from_secs(10);
    let devices = devices_stream()?.stream_name();
    let devices_leader = wait_for_stream_leader(&any, &devices, wait).await?;
    let raw_leader = wait_for_stream_leader(&any, raw_stream, wait).await?;
    let node = |name: &str| {
        nats.index_of(name)
            .with_context(|| format!("{name} is not a node of the benchmark's cluster"))
    };
    let (devices_leader, raw_leader) = (node(&devices_leader)?, node(&raw_leader)?);
    let fleetd = cluster
        .fleetd_node()
        .await
        .context("no node lists fleetd's NATS connection in /connz")?;
    let on_leader = fleetd == devices_leader;
    let chosen = if on_leader {
        raw_leader
    } else {
        // fleetd's own node when it follows the raw stream too, so the
        // two share a node's load as well; else any follower.
        [fleetd]
            .into_iter()
            .chain(0..nats.len())
            .find(|&i| i != raw_leader)
            .context("a cluster of one node has no follower")?
    };
    let name = |i: usize| nats.server_name(i).to_owned();
    let hops = |on: bool| if on { "on the leader" } else { "one route hop" };
    notes.push(format!(
        "commands: fleetd's NATS connection on {}, {devices} leader {} ({}); raw publisher on {}, \
         {raw_stream} leader {} ({})",
        name(fleetd),
        name(devices_leader),
        hops(on_leader),
        name(chosen),
        name(raw_leader),
        hops(chosen == raw_leader),
    ));
    cluster.nats_on(chosen).await
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
