//! Fleetlog on a real three-node JetStream cluster (issue 15): replicated
//! streams, several fleetd processes on one region, and the Devices stream's
//! leader killed under load with nothing acknowledged lost.

use crate::common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use common::{PARENT, REGION, device, device_name, revision};
use fleetlog_events::log::LogOptions;
use fleetlog_events::{EventLog, Id, StreamId};
use fleetlog_projections::AsWritten;
use fleetlog_projections::store::Store;
use fleetlog_proto::devices::v1::device_service_client::DeviceServiceClient;
use fleetlog_proto::devices::v1::{
    CreateDeviceRequest, Device, GetDeviceRequest, UpdateDeviceRequest, WatchDevicesRequest,
};
use fleetlog_tests::{Authed, FleetdProcess, NatsCluster};
use futures::{StreamExt, TryStreamExt};
use tonic::Code;

/// One fleetd process of the region, with its own data dir.
struct Process {
    name: &'static str,
    fleetd: FleetdProcess,
    data: tempfile::TempDir,
}

impl Process {
    fn start(nats: &NatsCluster, role: &str, name: &'static str) -> anyhow::Result<Self> {
        let data = tempfile::tempdir()?;
        let env = vec![
            ("FLEETLOG_NATS_URL", nats.url_list()),
            ("FLEETLOG_NATS_REPLICAS", "3".to_owned()),
            ("FLEETLOG_DATA_DIR", data.path().display().to_string()),
            ("FLEETLOG_REGION", REGION.to_owned()),
            ("FLEETLOG_PROCESS_NAME", name.to_owned()),
        ];
        let fleetd = FleetdProcess::start(role, &env)?;
        Ok(Process { name, fleetd, data })
    }

    async fn devices(&self) -> anyhow::Result<DeviceServiceClient<Authed>> {
        Ok(DeviceServiceClient::new(
            fleetlog_tests::admin(self.fleetd.grpc_url()).await?,
        ))
    }

    /// Stops fleetd and opens its Devices projection.
    async fn stopped_projection(self) -> anyhow::Result<(tempfile::TempDir, Store)> {
        let status = self.fleetd.shut_down().await?;
        assert!(status.success(), "{} stops cleanly: {status}", self.name);
        let dir = self
            .data
            .path()
            .join("projections")
            .join(format!("devices-{REGION}-v1"));
        let store = Store::open(&dir, "v1")?;
        Ok((self.data, store))
    }
}

async fn devices_log(nats: &NatsCluster) -> anyhow::Result<EventLog> {
    Ok(EventLog::open_with(
        nats.connect().await?,
        StreamId::new(Id::parse("devices")?, Id::parse(REGION)?),
        LogOptions {
            replicas: 3,
            ..Default::default()
        },
    )
    .await?)
}

#[tokio::test]
async fn every_stream_is_replicated_and_a_write_through_one_process_is_read_through_another()
-> anyhow::Result<()> {
    let nats = NatsCluster::start(3).await?;
    let api_1 = Process::start(&nats, "api", "api-1")?;
    let api_2 = Process::start(&nats, "api", "api-2")?;
    let projector = Process::start(&nats, "projector", "projector-1")?;

    let js = async_nats::jetstream::new(nats.connect().await?);
    let mut names: Vec<String> = js.stream_names().try_collect().await?;
    names.sort();
    assert!(
        names.len() >= 4,
        "each service's events and the device logs: {names:?}"
    );
    for name in &names {
        let mut stream = js.get_stream(name).await?;
        let info = stream.info().await?;
        assert_eq!(info.config.num_replicas, 3, "{name}");
        let cluster = info.cluster.clone().unwrap_or_default();
        assert!(cluster.leader.is_some(), "{name} has a leader: {cluster:?}");
        assert_eq!(cluster.replicas.len(), 2, "{name}: {cluster:?}");
    }

    let mut writer = api_1.devices().await?;
    let created = writer
        .create_device(CreateDeviceRequest {
            parent: PARENT.into(),
            device_id: "across".into(),
            device: Some(device(&[("via", "api-1")], 1)),
            request_id: String::new(),
        })
        .await?
        .into_inner();
    for reader in [&api_2, &projector] {
        let read = reader
            .devices()
            .await?
            .get_device(GetDeviceRequest {
                name: device_name("across"),
                min_revision: revision(&created),
                ..Default::default()
            })
            .await?
            .into_inner();
        assert_eq!(read, created, "read through {}", reader.name);
    }

    // A watch on another process sees the change, and resumes there by
    // revision after another write.
    let mut watch = api_2
        .devices()
        .await?
        .watch_devices(WatchDevicesRequest {
            parent: PARENT.into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await?
        .transpose()?
        .expect("a first batch");
    let seen: Vec<String> = first
        .changes
        .iter()
        .filter_map(|c| c.device.as_ref().map(|d| d.name.clone()))
        .collect();
    assert!(seen.contains(&device_name("across")), "{seen:?}");
    drop(watch);
    // Resumed on a third process by the revision the first one reached.
    let next = writer
        .create_device(CreateDeviceRequest {
            parent: PARENT.into(),
            device_id: "across-2".into(),
            device: Some(device(&[("via", "api-1")], 1)),
            request_id: String::new(),
        })
        .await?
        .into_inner();
    let mut resumed = projector
        .devices()
        .await?
        .watch_devices(WatchDevicesRequest {
            parent: PARENT.into(),
            resume_revision: revision(&created),
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut after = Vec::new();
    while !after.contains(&device_name("across-2")) {
        let batch = tokio::time::timeout(Duration::from_secs(10), resumed.next())
            .await?
            .transpose()?
            .ok_or_else(|| anyhow::anyhow!("the resumed watch ended"))?;
        after.extend(
            batch
                .changes
                .iter()
                .filter_map(|c| c.device.as_ref().map(|d| d.name.clone())),
        );
    }
    assert_eq!(
        after,
        vec![device_name("across-2")],
        "exactly the changes after the resume revision ({} at {})",
        next.name,
        revision(&next)
    );
    drop(resumed);

    let metrics = reqwest::get(format!("http://{}/metrics", api_1.fleetd.http_addr))
        .await?
        .text()
        .await?;
    assert!(
        metrics.contains("process=\"api-1\""),
        "metrics name the process"
    );

    for process in [api_1, api_2, projector] {
        let status = process.fleetd.shut_down().await?;
        assert!(status.success(), "{status}");
    }
    Ok(())
}

/// What a writer saw of one call.
struct Call {
    took: Duration,
    code: Code,
    ended: Instant,
}

/// A write the server acknowledged: the resource, its revision, and the
/// request ID it was sent with.
#[derive(Clone, Debug)]
struct Acked {
    name: String,
    revision: i64,
    request_id: String,
}

const CALL_DEADLINE: Duration = Duration::from_secs(12);

/// Sends `send()` until it is answered with something other than
/// UNAVAILABLE (the same request each time: same `request_id`, same
/// expected revision), recording every answer.
async fn until_answered<F>(
    calls: &mut Vec<Call>,
    mut send: impl FnMut() -> F,
    give_up: Instant,
) -> Option<Result<Device, tonic::Status>>
where
    F: std::future::Future<Output = Result<Device, tonic::Status>>,
{
    loop {
        let started = Instant::now();
        let answered = send().await;
        let code = answered.as_ref().err().map_or(Code::Ok, |s| s.code());
        calls.push(Call {
            took: started.elapsed(),
            code,
            ended: Instant::now(),
        });
        if code != Code::Unavailable {
            return Some(answered);
        }
        if Instant::now() > give_up {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Creates and updates (with `expected_revision`) devices of its own until
/// `stop`, retrying each call that answered UNAVAILABLE with the same
/// request.
async fn write_until(
    writer: usize,
    client: DeviceServiceClient<Authed>,
    stop: tokio_util::sync::CancellationToken,
) -> anyhow::Result<(Vec<Acked>, Vec<Call>)> {
    let mut acked = Vec::new();
    let mut calls = Vec::new();
    let mut n = 0;
    while !stop.is_cancelled() {
        let id = format!("w{writer}-{n}");
        n += 1;
        let give_up = Instant::now() + Duration::from_secs(60);
        let create_id = format!("{:032x}", rand::random::<u128>());
        let create = CreateDeviceRequest {
            parent: PARENT.into(),
            device_id: id.clone(),
            device: Some(device(&[("step", "created")], 1)),
            request_id: create_id.clone(),
        };
        let created = until_answered(
            &mut calls,
            || {
                let (mut client, mut request) =
                    (client.clone(), tonic::Request::new(create.clone()));
                request.set_timeout(CALL_DEADLINE);
                async move { client.create_device(request).await.map(|r| r.into_inner()) }
            },
            give_up,
        )
        .await
        .ok_or_else(|| anyhow::anyhow!("creating {id} never got past UNAVAILABLE"))??;
        if n % 5 == 0 {
            // A client's retry of a write that was answered: the same
            // answer, nothing written again.
            let again = until_answered(
                &mut calls,
                || {
                    let (mut client, mut request) =
                        (client.clone(), tonic::Request::new(create.clone()));
                    request.set_timeout(CALL_DEADLINE);
                    async move { client.create_device(request).await.map(|r| r.into_inner()) }
                },
                give_up,
            )
            .await
            .ok_or_else(|| anyhow::anyhow!("retrying {id} never got past UNAVAILABLE"))??;
            anyhow::ensure!(
                again == created,
                "a retried create of {id} is answered as the first: {again:?} vs {created:?}"
            );
        }
        acked.push(Acked {
            name: created.name.clone(),
            revision: revision(&created),
            request_id: create_id,
        });
        let update_id = format!("{:032x}", rand::random::<u128>());
        let mut patch = device(&[("step", "updated")], 2);
        patch.name = created.name.clone();
        let update = UpdateDeviceRequest {
            device: Some(patch),
            expected_revision: revision(&created),
            request_id: update_id.clone(),
            ..Default::default()
        };
        let updated = until_answered(
            &mut calls,
            || {
                let (mut client, mut request) =
                    (client.clone(), tonic::Request::new(update.clone()));
                request.set_timeout(CALL_DEADLINE);
                async move { client.update_device(request).await.map(|r| r.into_inner()) }
            },
            give_up,
        )
        .await
        .ok_or_else(|| anyhow::anyhow!("updating {id} never got past UNAVAILABLE"))??;
        acked.push(Acked {
            name: updated.name.clone(),
            revision: revision(&updated),
            request_id: update_id,
        });
    }
    Ok((acked, calls))
}

/// `count` writers ([`write_until`]), spread over `processes` in turn.
async fn spawn_writers(
    count: usize,
    processes: &[&Process],
    stop: &tokio_util::sync::CancellationToken,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<anyhow::Result<(Vec<Acked>, Vec<Call>)>>>> {
    let mut writers = Vec::new();
    for writer in 0..count {
        let process = processes[writer % processes.len()];
        writers.push(tokio::spawn(write_until(
            writer,
            process.devices().await?,
            stop.clone(),
        )));
    }
    Ok(writers)
}

#[tokio::test]
async fn the_devices_stream_leader_killed_under_load_loses_no_acknowledged_write()
-> anyhow::Result<()> {
    let mut nats = NatsCluster::start(3).await?;
    let api_1 = Process::start(&nats, "api", "api-1")?;
    let api_2 = Process::start(&nats, "api", "api-2")?;
    let stream = StreamId::new(Id::parse("devices")?, Id::parse(REGION)?).stream_name();

    let stop = tokio_util::sync::CancellationToken::new();
    let writers = spawn_writers(4, &[&api_1, &api_2], &stop).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let client = nats.connect().await?;
    let leader = fleetlog_tests::cluster::stream_leader(&client, &stream)
        .await?
        .ok_or_else(|| anyhow::anyhow!("{stream} has no leader"))?;
    let victim = nats
        .index_of(&leader)
        .ok_or_else(|| anyhow::anyhow!("{leader} is not a node of the cluster"))?;
    drop(client);
    nats.kill9(victim)?;
    let killed_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(12)).await;
    nats.restart(victim).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.cancel();

    let mut acked = Vec::new();
    let mut calls = Vec::new();
    for writer in writers {
        let (a, c) = writer.await??;
        acked.extend(a);
        calls.extend(c);
    }

    // Every call ended within its deadline, with success or UNAVAILABLE.
    let wrong: Vec<Code> = calls
        .iter()
        .map(|c| c.code)
        .filter(|c| !matches!(c, Code::Ok | Code::Unavailable))
        .collect();
    assert!(wrong.is_empty(), "no call answered wrongly: {wrong:?}");
    let slowest = calls.iter().map(|c| c.took).max().unwrap_or_default();
    assert!(slowest < CALL_DEADLINE, "slowest call {slowest:?}");
    let resumed = calls
        .iter()
        .filter(|c| c.code == Code::Ok && c.ended > killed_at + Duration::from_millis(100))
        .map(|c| c.ended - killed_at)
        .min()
        .ok_or_else(|| anyhow::anyhow!("no write succeeded after the kill"))?;
    let unavailable = calls.iter().filter(|c| c.code == Code::Unavailable).count();
    println!(
        "leader {leader} killed: writes resumed after {resumed:?}; {} acknowledged writes, {} calls, {unavailable} UNAVAILABLE, slowest call {slowest:?}",
        acked.len(),
        calls.len()
    );
    assert!(
        resumed <= Duration::from_secs(10),
        "writes resumed {resumed:?} after the kill"
    );
    assert!(
        acked.len() > 20,
        "the writers kept writing: {} acks",
        acked.len()
    );

    // Every acknowledged write is in the log exactly once, as acknowledged.
    let log = devices_log(&nats).await?;
    let events = common::every_event(&log).await?;
    let last = events.last().map_or(0, |e| e.revision.get());
    let mut by_command: HashMap<String, Vec<i64>> = HashMap::new();
    for event in &events {
        by_command
            .entry(event.change.command_id.clone())
            .or_default()
            .push(event.revision.get() as i64);
    }
    for write in &acked {
        let stored = by_command
            .get(&write.request_id)
            .cloned()
            .unwrap_or_default();
        assert_eq!(
            stored,
            vec![write.revision],
            "{} (request {}) is in the log once, at the acknowledged revision",
            write.name,
            write.request_id
        );
    }
    let acked_names: HashSet<&str> = acked.iter().map(|a| a.name.as_str()).collect();
    assert!(acked_names.len() * 2 >= acked.len());

    // Every process's projection equals a fresh replay of the log.
    let (_fresh_dir, fresh) = common::fresh_replay(&log, std::sync::Arc::new(AsWritten)).await?;
    for process in [api_1, api_2] {
        // Caught up first: a Get with the last revision waits for it.
        process
            .devices()
            .await?
            .get_device(GetDeviceRequest {
                name: acked[0].name.clone(),
                min_revision: last as i64,
                ..Default::default()
            })
            .await?;
        let name = process.name;
        let (_data, store) = process.stopped_projection().await?;
        assert_eq!(
            store.dump()?,
            fresh.store().dump()?,
            "{name}'s projection equals a fresh replay"
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_rolling_restart_of_every_node_fails_no_call() -> anyhow::Result<()> {
    let mut nats = NatsCluster::start(3).await?;
    let api_1 = Process::start(&nats, "api", "api-1")?;
    let api_2 = Process::start(&nats, "api", "api-2")?;
    let stream = StreamId::new(Id::parse("devices")?, Id::parse(REGION)?).stream_name();
    let stop = tokio_util::sync::CancellationToken::new();
    let writers = spawn_writers(4, &[&api_1, &api_2], &stop).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // One node at a time, each back and caught up before the next goes.
    for node in 0..nats.len() {
        let took = nats.lame_duck(node).await?;
        println!(
            "{} left in lame duck mode after {took:?}",
            nats.server_name(node)
        );
        nats.restart(node).await?;
        let client = nats.connect().await?;
        fleetlog_tests::cluster::wait_for_replicas_current(
            &client,
            &stream,
            Duration::from_secs(30),
        )
        .await?;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.cancel();
    let mut acked = 0;
    let mut failed = Vec::new();
    let mut slowest = Duration::ZERO;
    for writer in writers {
        let (a, calls) = writer.await??;
        acked += a.len();
        slowest = slowest.max(calls.iter().map(|c| c.took).max().unwrap_or_default());
        failed.extend(calls.iter().filter(|c| c.code != Code::Ok).map(|c| c.code));
    }
    println!(
        "rolling restart: {acked} acknowledged writes, slowest call {slowest:?}, failed {failed:?}"
    );
    assert!(
        failed.is_empty(),
        "calls failed during the rolling restart: {failed:?}"
    );
    assert!(acked > 20, "the writers kept writing: {acked}");
    for process in [api_1, api_2] {
        let status = process.fleetd.shut_down().await?;
        assert!(status.success(), "{status}");
    }
    Ok(())
}

#[tokio::test]
async fn a_projector_killed_at_random_points_on_the_cluster_equals_a_fresh_replay()
-> anyhow::Result<()> {
    let nats = NatsCluster::start(3).await?;
    let api = Process::start(&nats, "api", "api-1")?;
    let stop = tokio_util::sync::CancellationToken::new();
    let writer = tokio::spawn(write_until(0, api.devices().await?, stop.clone()));
    let data = tempfile::tempdir()?;
    let env = vec![
        ("FLEETLOG_NATS_URL", nats.url_list()),
        ("FLEETLOG_NATS_REPLICAS", "3".to_owned()),
        ("FLEETLOG_DATA_DIR", data.path().display().to_string()),
        ("FLEETLOG_REGION", REGION.to_owned()),
        ("FLEETLOG_PROCESS_NAME", "projector-1".to_owned()),
    ];
    for kill in 0..8u64 {
        let mut projector = FleetdProcess::start("projector", &env)?;
        // Pseudo-random points: 30..=380 ms into each life.
        tokio::time::sleep(Duration::from_millis(30 + (kill * 7_919) % 350)).await;
        projector.kill9();
    }
    stop.cancel();
    writer.await??;
    let projector = Process {
        name: "projector-1",
        fleetd: FleetdProcess::start("projector", &env)?,
        data,
    };
    let log = devices_log(&nats).await?;
    let last = log.last_revision().await?;
    assert!(last.get() > 50, "events flowed while it was killed: {last}");
    projector
        .devices()
        .await?
        .get_device(GetDeviceRequest {
            name: device_name("w0-0"),
            min_revision: last.get() as i64,
            ..Default::default()
        })
        .await?;
    let (_data, survivor) = projector.stopped_projection().await?;
    let checkpoint = survivor.checkpoint()?;
    assert_eq!(checkpoint.revision, last);
    assert_eq!(
        checkpoint.events_applied,
        last.get(),
        "no event applied twice or skipped"
    );
    let (_fresh_dir, fresh) = common::fresh_replay(&log, std::sync::Arc::new(AsWritten)).await?;
    assert_eq!(
        survivor.dump()?,
        fresh.store().dump()?,
        "the projection equals a fresh replay"
    );
    let status = api.fleetd.shut_down().await?;
    assert!(status.success(), "{status}");
    Ok(())
}

mod switch {
    //! The version switch with two api processes: the fence of
    //! `fleetlog_services::fence` holds writes on both.

    use super::*;
    use common::{begin, settled_on};
    use fleetlog_proto::devices::v1alpha2;
    use fleetlog_proto::meta::v1::deployment_service_client::DeploymentServiceClient;
    use fleetlog_services::fence::ProcessEntry;

    type OldClient = v1alpha2::device_service_client::DeviceServiceClient<Authed>;

    fn start(nats: &NatsCluster, name: &'static str) -> anyhow::Result<Process> {
        let data = tempfile::tempdir()?;
        let env = vec![
            ("FLEETLOG_NATS_URL", nats.url_list()),
            ("FLEETLOG_NATS_REPLICAS", "3".to_owned()),
            ("FLEETLOG_DATA_DIR", data.path().display().to_string()),
            ("FLEETLOG_REGION", REGION.to_owned()),
            ("FLEETLOG_PROCESS_NAME", name.to_owned()),
            ("FLEETLOG_DEVICES_INITIAL_VERSION", "v1alpha2".to_owned()),
        ];
        let fleetd = FleetdProcess::start("api", &env)?;
        Ok(Process { name, fleetd, data })
    }

    /// A create a process acknowledged: its request ID and revision.
    type AckedCreate = (String, i64);

    /// Creates devices through v1alpha2 until `stop`, each with its own
    /// `request_id`; every create must succeed (the switch queues writes,
    /// it never rejects them) unless the process is to be `killed`: then
    /// the first failure ends the writer. Returns what was acknowledged.
    async fn create_until(
        process: &Process,
        writer: usize,
        stop: tokio_util::sync::CancellationToken,
        killed: bool,
    ) -> anyhow::Result<tokio::task::JoinHandle<anyhow::Result<Vec<AckedCreate>>>> {
        let mut client = OldClient::new(fleetlog_tests::admin(process.fleetd.grpc_url()).await?);
        Ok(tokio::spawn(async move {
            let mut acked = Vec::new();
            while !stop.is_cancelled() {
                let n = acked.len();
                let request_id = format!("{:032x}", rand::random::<u128>());
                let created = client
                    .create_device(v1alpha2::CreateDeviceRequest {
                        parent: "projects/p0".into(),
                        device_id: format!("w{writer}-{n}"),
                        device: Some(v1alpha2::Device::default()),
                        request_id: request_id.clone(),
                    })
                    .await;
                match created {
                    Ok(device) => {
                        let revision = device.into_inner().metadata.map_or(0, |m| m.revision);
                        acked.push((request_id, revision));
                    }
                    Err(_) if killed => break,
                    Err(s) => anyhow::bail!("writer {writer}, create {n} rejected: {s}"),
                }
            }
            Ok(acked)
        }))
    }

    /// Every acknowledged create is in the log exactly once, at its
    /// acknowledged revision.
    fn assert_every_acked_create_is_logged_once(
        events: &[fleetlog_events::StoredEvent],
        acked: &[AckedCreate],
    ) {
        let mut by_command: HashMap<&str, Vec<i64>> = HashMap::new();
        for event in events {
            by_command
                .entry(event.change.command_id.as_str())
                .or_default()
                .push(event.revision.get() as i64);
        }
        for (request_id, revision) in acked {
            assert_eq!(
                by_command.get(request_id.as_str()),
                Some(&vec![*revision]),
                "request {request_id} is in the log once, at its acknowledged revision"
            );
        }
    }

    /// The event versions in log order: no v1alpha2 event may follow the
    /// first v1 one (an old-version write after the switch would drop what
    /// only v1 holds).
    fn versions_in_log_order(events: &[fleetlog_events::StoredEvent]) -> Vec<String> {
        events
            .iter()
            .map(|event| {
                let type_url = event
                    .change
                    .resource
                    .as_ref()
                    .map_or("", |r| r.type_url.as_str());
                if type_url.contains(".v1alpha2.") {
                    "v1alpha2"
                } else {
                    "v1"
                }
                .to_owned()
            })
            .collect()
    }

    fn assert_no_old_write_after_a_new_one(versions: &[String]) {
        let first_new = versions.iter().position(|v| v == "v1");
        let last_old = versions.iter().rposition(|v| v == "v1alpha2");
        assert!(first_new.is_some(), "writes went on after the switch");
        assert!(
            last_old < first_new,
            "a v1alpha2 event (#{last_old:?}) follows the first v1 event (#{first_new:?})"
        );
    }

    #[tokio::test]
    async fn a_switch_pauses_every_api_process_and_no_old_write_follows_a_new_one()
    -> anyhow::Result<()> {
        let nats = NatsCluster::start(3).await?;
        let api_1 = start(&nats, "api-1")?;
        let api_2 = start(&nats, "api-2")?;
        let stop = tokio_util::sync::CancellationToken::new();
        let writers = vec![
            create_until(&api_1, 1, stop.clone(), false).await?,
            create_until(&api_2, 2, stop.clone(), false).await?,
        ];
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut meta =
            DeploymentServiceClient::new(fleetlog_tests::admin(api_1.fleetd.grpc_url()).await?);
        begin(&mut meta, "v1").await?;
        let done = settled_on(&mut meta, "v1", Duration::from_secs(60)).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        stop.cancel();
        let mut acked = Vec::new();
        for writer in writers {
            acked.extend(writer.await??);
        }
        let created = acked.len();
        let pause = done
            .upgrade_state
            .and_then(|s| s.switch_pause)
            .ok_or_else(|| anyhow::anyhow!("no pause recorded"))?;
        let pause = Duration::new(pause.seconds as u64, pause.nanos as u32);
        println!("{created} creates through two api processes; region-wide pause {pause:?}");
        assert!(
            pause > Duration::ZERO && pause < Duration::from_secs(5),
            "{pause:?}"
        );
        let events = common::every_event(&devices_log(&nats).await?).await?;
        assert_no_old_write_after_a_new_one(&versions_in_log_order(&events));
        assert_every_acked_create_is_logged_once(&events, &acked);
        for process in [api_1, api_2] {
            let status = process.fleetd.shut_down().await?;
            assert!(status.success(), "{status}");
        }
        Ok(())
    }

    #[tokio::test]
    async fn an_api_process_killed_before_the_switch_cannot_block_it() -> anyhow::Result<()> {
        let nats = NatsCluster::start(3).await?;
        let api_1 = start(&nats, "api-1")?;
        let mut api_2 = start(&nats, "api-2")?;
        let stop = tokio_util::sync::CancellationToken::new();
        let writer = create_until(&api_1, 1, stop.clone(), false).await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        // Its fence entry outlives it by up to the TTL: the switch waits
        // that out and completes.
        api_2.fleetd.kill9();
        let mut meta =
            DeploymentServiceClient::new(fleetlog_tests::admin(api_1.fleetd.grpc_url()).await?);
        let started = Instant::now();
        begin(&mut meta, "v1").await?;
        settled_on(&mut meta, "v1", Duration::from_secs(60)).await?;
        let took = started.elapsed();
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.cancel();
        let acked = writer.await??;
        let created = acked.len();
        println!("upgrade with a dead api process took {took:?}; {created} creates, none rejected");
        assert!(took < Duration::from_secs(15), "{took:?}");
        let events = common::every_event(&devices_log(&nats).await?).await?;
        assert_no_old_write_after_a_new_one(&versions_in_log_order(&events));
        assert_every_acked_create_is_logged_once(&events, &acked);
        let status = api_1.fleetd.shut_down().await?;
        assert!(status.success(), "{status}");
        Ok(())
    }

    /// The harder case: api-2 dies with its gate closed, paused for the
    /// switch and waiting on the fence. A third, slow api process (its
    /// entry, kept fresh by the test, still writing v1alpha2) holds both
    /// api-1 and api-2 in the fence, so api-2 cannot finish before the
    /// kill; then the slow one leaves, and api-1 finds api-2's entry paused
    /// (or, later, expired) and completes the switch.
    #[tokio::test]
    async fn an_api_process_killed_with_its_gate_closed_mid_switch_cannot_block_it()
    -> anyhow::Result<()> {
        let nats = NatsCluster::start(3).await?;
        let api_1 = start(&nats, "api-1")?;
        let mut api_2 = start(&nats, "api-2")?;
        let stop = tokio_util::sync::CancellationToken::new();
        let survivor = create_until(&api_1, 1, stop.clone(), false).await?;
        let victim = create_until(&api_2, 2, stop.clone(), true).await?;
        tokio::time::sleep(Duration::from_millis(300)).await;

        let js = async_nats::jetstream::new(nats.connect().await?);
        let bucket = js
            .get_key_value(format!("fleetlog-processes-{REGION}"))
            .await?;
        let slow = tokio_util::sync::CancellationToken::new();
        let slow_process = tokio::spawn({
            let (bucket, slow) = (bucket.clone(), slow.clone());
            let entry = serde_json::to_vec(&ProcessEntry {
                version: "v1alpha2".into(),
                ..Default::default()
            })?;
            async move {
                while !slow.is_cancelled() {
                    bucket.put("api-3", entry.clone().into()).await?;
                    tokio::select! {
                        _ = slow.cancelled() => {}
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    }
                }
                bucket.delete("api-3").await?;
                anyhow::Ok(())
            }
        });
        let mut api_2_entries = bucket.watch("api-2").await?;
        let mut meta =
            DeploymentServiceClient::new(fleetlog_tests::admin(api_1.fleetd.grpc_url()).await?);
        begin(&mut meta, "v1").await?;
        tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(update) = api_2_entries.next().await {
                let entry: ProcessEntry = serde_json::from_slice(&update?.value)?;
                if entry.paused_for.as_deref() == Some("v1") {
                    return Ok(());
                }
            }
            anyhow::bail!("the process bucket's watch ended")
        })
        .await??;
        api_2.fleetd.kill9();
        let killed_at = Instant::now();
        let last_word = bucket
            .get("api-2")
            .await?
            .map(|value| serde_json::from_slice::<ProcessEntry>(&value))
            .transpose()?;
        assert!(
            last_word
                .as_ref()
                .is_some_and(|e| e.version == "v1alpha2" && e.paused_for.as_deref() == Some("v1")),
            "api-2 died paused for v1, still on v1alpha2: {last_word:?}"
        );
        slow.cancel();
        slow_process.await??;

        let within = Duration::from_secs(30).saturating_sub(killed_at.elapsed());
        settled_on(&mut meta, "v1", within).await?;
        let took = killed_at.elapsed();
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.cancel();
        let mut acked = survivor.await??;
        let survivor_wrote = acked.len();
        let victim_acked = victim.await??;
        acked.extend(victim_acked.iter().cloned());
        println!(
            "api-2 killed mid-switch: upgrade completed {took:?} later; api-1 wrote {survivor_wrote} creates, none rejected; api-2 had {} acknowledged",
            victim_acked.len()
        );
        assert!(took < Duration::from_secs(15), "{took:?}");
        let events = common::every_event(&devices_log(&nats).await?).await?;
        assert_no_old_write_after_a_new_one(&versions_in_log_order(&events));
        assert_every_acked_create_is_logged_once(&events, &acked);
        let status = api_1.fleetd.shut_down().await?;
        assert!(status.success(), "{status}");
        Ok(())
    }
}
