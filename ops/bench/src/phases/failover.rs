//! Failover (`--replicas 3` only): clients keep creating and updating
//! devices through fleetd (each update with the create's revision as
//! `expected_revision`) while the node leading the Devices stream is
//! SIGKILLed and, after a while, restarted. Reports how long writes
//! stopped, the longest call, every failed call by gRPC code (UNAVAILABLE,
//! retried with the same request, is the only acceptable one) and the write
//! rate before the kill, with one node down and after the restart.
//!
//! Every wait is bounded: the calls by their gRPC deadline, a write's
//! retries by [`GIVE_UP`], the restart by the harness's ready timeout, the
//! end by [`JOIN_TIMEOUT`].

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use fleetlog_proto::devices::v1::device_service_client::DeviceServiceClient;
use fleetlog_proto::devices::v1::{CreateDeviceRequest, Device, UpdateDeviceRequest};
use fleetlog_tests::Authed;
use fleetlog_tests::cluster::{
    stream_leader, wait_for_new_stream_leader, wait_for_replicas_current,
};
use tokio::sync::watch;
use tonic::Code;

use crate::cluster::{Cluster, devices_stream};
use crate::latency::Latencies;
use crate::report::{Goal, Row};
use crate::workload::{new_device, parent, site};

const PHASE: &str = "failover";
const PROJECT: &str = "failover";
/// The client's deadline per call (`grpc-timeout`): longer than fleetd's
/// own retry budget (`FLEETLOG_NATS_RETRY_MS`, 10 s), so a call fleetd
/// cannot complete is answered UNAVAILABLE by fleetd, not cut by the client.
const CALL_DEADLINE: Duration = Duration::from_secs(12);
/// A client's pause before it sends a call answered UNAVAILABLE again.
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// A write still unanswered (only UNAVAILABLE) this long after its first
/// send is given up: the phase must end.
const GIVE_UP: Duration = Duration::from_secs(30);
/// Longest the writers may take to finish their current write after the
/// phase tells them to stop (one give-up period and a call).
const JOIN_TIMEOUT: Duration = Duration::from_secs(45);
/// How long the new stream leader and the restarted replica are waited for.
const CLUSTER_WAIT: Duration = Duration::from_secs(30);
/// Issue 15's target: writes resume within this many seconds of a leader
/// kill.
const RESUME_TARGET_S: f64 = 10.0;

pub struct Settings {
    pub clients: usize,
    /// Writing before anything is measured: connections, first creates.
    pub warm_up: Duration,
    /// The window the write rate is measured over before the kill and after
    /// the restart.
    pub window: Duration,
    /// How long the killed node stays down.
    pub down: Duration,
}

/// One gRPC call a writer made.
struct Call {
    sent: Instant,
    ended: Instant,
    code: Code,
}

/// One write (a create or an update) that was acknowledged or given up,
/// over all the calls it took. A write refused with another code is in
/// the calls only.
struct Write {
    first_sent: Instant,
    /// `None`: given up after [`GIVE_UP`] of UNAVAILABLE.
    acked: Option<Instant>,
}

#[derive(Default)]
struct Writer {
    calls: Vec<Call>,
    writes: Vec<Write>,
}

pub async fn run(
    cluster: &mut Cluster,
    settings: &Settings,
    rows: &mut Vec<Row>,
    notes: &mut Vec<String>,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        cluster.nats_cluster().is_some(),
        "the failover phase needs the benchmark's own cluster (--replicas 3, no --nats-url)"
    );
    let stream = devices_stream()?.stream_name();
    eprintln!(
        "bench: failover with {} writers: warm-up {:?}, {stream} leader killed, restarted after {:?}",
        settings.clients,
        settings.warm_up + settings.window,
        settings.down
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::with_capacity(settings.clients);
    for w in 0..settings.clients {
        let channel = cluster.channel().await?;
        tasks.push(tokio::spawn(write_until_stopped(
            w,
            channel,
            stop_rx.clone(),
        )));
    }
    tokio::time::sleep(settings.warm_up + settings.window).await;

    let leader = stream_leader(&cluster.nats().await?, &stream)
        .await?
        .with_context(|| format!("{stream} has no leader before the kill"))?;
    let nodes = cluster
        .nats_cluster()
        .context("the benchmark's cluster")?
        .len();
    let victim = cluster
        .nats_cluster()
        .and_then(|nats| nats.index_of(&leader))
        .with_context(|| format!("{leader} is not a node of the benchmark's cluster"))?;
    let fleetd_before = cluster.fleetd_node().await;
    // Polled through a node that stays up, so the poll itself does not wait
    // for a reconnect.
    let survivor = (0..nodes)
        .find(|&i| i != victim)
        .context("a cluster of one node has no survivor")?;
    let watcher = cluster.nats_on(survivor).await?;

    let killed_at = Instant::now();
    cluster
        .nats_cluster_mut()
        .context("the benchmark's cluster")?
        .kill9(victim)?;
    eprintln!("bench: killed {leader} (SIGKILL)");
    let elected = async {
        let new = wait_for_new_stream_leader(&watcher, &stream, &leader, CLUSTER_WAIT).await?;
        anyhow::Ok((new, killed_at.elapsed()))
    };
    let (elected, ()) = tokio::join!(elected, tokio::time::sleep(settings.down));
    let (new_leader, elected_after) = elected?;

    let restart_began = Instant::now();
    cluster
        .nats_cluster_mut()
        .context("the benchmark's cluster")?
        .restart(victim)
        .await?;
    let rejoined_after = restart_began.elapsed();
    wait_for_replicas_current(&watcher, &stream, CLUSTER_WAIT).await?;
    let current_at = Instant::now();
    eprintln!(
        "bench: restarted {leader}; {stream}'s replicas current after {:?}",
        current_at - restart_began
    );
    tokio::time::sleep(settings.window).await;
    let stopped_at = Instant::now();
    let _ = stop_tx.send(true);

    let mut calls = Vec::new();
    let mut writes = Vec::new();
    let joined = tokio::time::timeout(JOIN_TIMEOUT, async {
        for task in tasks {
            let writer = task.await??;
            calls.extend(writer.calls);
            writes.extend(writer.writes);
        }
        anyhow::Ok(())
    })
    .await;
    joined
        .context("the writers did not finish within 45 s of being stopped")?
        .context("a writer failed")?;
    let fleetd_after = cluster.fleetd_node().await;

    let oks: Vec<&Call> = calls.iter().filter(|c| c.code == Code::Ok).collect();
    let resumed_at = oks
        .iter()
        .filter(|c| c.sent > killed_at)
        .map(|c| c.ended)
        .min()
        .context("no write sent after the kill was acknowledged")?;
    let resumed = (resumed_at - killed_at).as_secs_f64();
    let rate = |from: Instant, to: Instant| {
        let acked = oks
            .iter()
            .filter(|c| c.ended >= from && c.ended < to)
            .count();
        acked as f64 / to.saturating_duration_since(from).as_secs_f64().max(1e-9)
    };
    let before = rate(killed_at - settings.window, killed_at);
    let degraded = rate(resumed_at, restart_began.max(resumed_at));
    let after = rate(current_at, stopped_at);
    let mut acked_times: Vec<Instant> = oks.iter().map(|c| c.ended).collect();
    acked_times.sort();
    let longest_gap = acked_times
        .windows(2)
        .map(|pair| pair[1] - pair[0])
        .max()
        .unwrap_or_default();
    let longest_call = calls
        .iter()
        .map(|c| c.ended - c.sent)
        .max()
        .unwrap_or_default();
    let longest_write = writes
        .iter()
        .filter_map(|w| Some(w.acked? - w.first_sent))
        .max()
        .unwrap_or_default();
    let unanswered = writes.iter().filter(|w| w.acked.is_none()).count();
    let mut failed: BTreeMap<String, usize> = BTreeMap::new();
    for call in calls.iter().filter(|c| c.code != Code::Ok) {
        *failed
            .entry(fleetlog_proto::status::code_name(call.code).to_owned())
            .or_default() += 1;
    }
    let unavailable = failed.get("UNAVAILABLE").copied().unwrap_or(0);
    let wrong: usize = failed
        .iter()
        .filter(|(code, _)| code.as_str() != "UNAVAILABLE")
        .map(|(_, n)| n)
        .sum();
    let mut latencies_before = Latencies::default();
    for call in oks
        .iter()
        .filter(|c| c.sent >= killed_at - settings.window && c.ended < killed_at)
    {
        latencies_before.record(call.ended - call.sent);
    }

    let clients = settings.clients;
    rows.push(
        Row::new(
            PHASE,
            format!(
                "{stream} leader SIGKILLed → first write acknowledged (sent after the kill), \
                 {clients} clients"
            ),
            resumed,
            "s",
        )
        .goal(Goal::AtMost(RESUME_TARGET_S)),
    );
    rows.push(Row::new(
        PHASE,
        "longest time without an acknowledged write (all clients)",
        longest_gap.as_secs_f64(),
        "s",
    ));
    rows.push(Row::new(
        PHASE,
        "new stream leader seen (polled every 0.1 s, 0.5 s per attempt)",
        elected_after.as_secs_f64(),
        "s",
    ));
    rows.push(
        Row::new(
            PHASE,
            "longest call",
            longest_call.as_secs_f64() * 1000.0,
            "ms",
        )
        .beside("write p99 before the kill", latencies_before.p99_ms()),
    );
    rows.push(Row::new(
        PHASE,
        "longest write, the client's retries of UNAVAILABLE included",
        longest_write.as_secs_f64() * 1000.0,
        "ms",
    ));
    rows.push(Row::new(
        PHASE,
        "calls answered UNAVAILABLE (each retried with the same request)",
        unavailable as f64,
        "calls",
    ));
    rows.push(
        Row::new(
            PHASE,
            "calls that failed with another code",
            wrong as f64,
            "calls",
        )
        .goal(Goal::AtMost(0.0)),
    );
    rows.push(
        Row::new(
            PHASE,
            "writes given up unanswered (30 s of UNAVAILABLE)",
            unanswered as f64,
            "writes",
        )
        .goal(Goal::AtMost(0.0)),
    );
    rows.push(Row::new(
        PHASE,
        format!("writes/s before the kill (last {:?})", settings.window),
        before,
        "/s",
    ));
    // With a short downtime (the smoke preset) the node may be back
    // before the election ends: then there is no such window.
    if resumed_at < restart_began {
        rows.push(
            Row::new(
                PHASE,
                "writes/s with the node down (first write after the kill → restart)",
                degraded,
                "/s",
            )
            .beside("writes/s before the kill", before),
        );
    } else {
        notes.push(format!(
            "failover: the node was restarted {:?} after the kill, before writes resumed: no \
             write ran with the node down",
            restart_began - killed_at
        ));
    }
    rows.push(
        Row::new(
            PHASE,
            format!(
                "writes/s after the restart ({:?} once the replicas are current)",
                settings.window
            ),
            after,
            "/s",
        )
        .beside("writes/s before the kill", before),
    );
    rows.push(Row::new(
        PHASE,
        "restart → the meta leader sees the node current",
        rejoined_after.as_secs_f64(),
        "s",
    ));
    rows.push(Row::new(
        PHASE,
        format!("restart → every {stream} replica current"),
        (current_at - restart_began).as_secs_f64(),
        "s",
    ));

    let node = |i: Option<usize>| {
        i.and_then(|i| cluster.nats_cluster().map(|n| n.server_name(i).to_owned()))
            .unwrap_or_else(|| "unknown".to_owned())
    };
    notes.push(format!(
        "failover: killed {leader} (leader of {stream}); new leader {new_leader}; fleetd's NATS \
         connection on {} before the kill ({}), on {} after; {} calls, {} writes acknowledged; \
         failed calls by code: {failed:?}",
        node(fleetd_before),
        if fleetd_before == Some(victim) {
            "it had to reconnect"
        } else {
            "it stayed connected"
        },
        node(fleetd_after),
        calls.len(),
        oks.len(),
    ));
    Ok(())
}

/// Creates a device, then updates it expecting the create's revision, and
/// again with the next device, until `stop`; a call answered UNAVAILABLE
/// is sent again unchanged (same `request_id`, same expected revision), as
/// API.md tells clients to.
async fn write_until_stopped(
    w: usize,
    channel: Authed,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<Writer> {
    let client = DeviceServiceClient::new(channel);
    let mut writer = Writer::default();
    let mut n = 0u64;
    while !*stop.borrow() {
        let create = CreateDeviceRequest {
            parent: parent(PROJECT),
            device_id: format!("f{w}-{n}"),
            device: Some(new_device(site(n))),
            request_id: request_id(),
        };
        n += 1;
        let created = until_answered(&mut writer, || {
            let mut client = client.clone();
            let request = with_deadline(create.clone());
            async move { client.create_device(request).await }
        })
        .await;
        // A failed create (recorded) leaves nothing to update.
        let Some(Ok(device)) = created else { continue };
        let update = UpdateDeviceRequest {
            device: Some(Device {
                name: device.name.clone(),
                display_name: format!("updated by writer {w}"),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["display_name".into()],
            }),
            expected_revision: device.metadata.as_ref().map_or(0, |m| m.revision),
            request_id: request_id(),
            ..Default::default()
        };
        until_answered(&mut writer, || {
            let mut client = client.clone();
            let request = with_deadline(update.clone());
            async move { client.update_device(request).await }
        })
        .await;
    }
    Ok(writer)
}

/// Sends `send()` until it is answered with something other than
/// UNAVAILABLE or [`GIVE_UP`] passes, recording every call and the write.
async fn until_answered<F>(
    writer: &mut Writer,
    mut send: impl FnMut() -> F,
) -> Option<Result<Device, tonic::Status>>
where
    F: std::future::Future<Output = Result<tonic::Response<Device>, tonic::Status>>,
{
    let first_sent = Instant::now();
    loop {
        let sent = Instant::now();
        let answer = send().await.map(tonic::Response::into_inner);
        let ended = Instant::now();
        let code = answer.as_ref().err().map_or(Code::Ok, tonic::Status::code);
        writer.calls.push(Call { sent, ended, code });
        if code != Code::Unavailable {
            if code == Code::Ok {
                writer.writes.push(Write {
                    first_sent,
                    acked: Some(ended),
                });
            }
            return Some(answer);
        }
        if first_sent.elapsed() > GIVE_UP {
            writer.writes.push(Write {
                first_sent,
                acked: None,
            });
            return None;
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

fn with_deadline<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(CALL_DEADLINE);
    request
}

/// A fresh idempotency key: a retried call sends the same one, so a write
/// whose answer was lost is answered, not written twice.
fn request_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}
