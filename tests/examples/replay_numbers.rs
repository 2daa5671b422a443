//! Replay rate of an upgrade target projection beside the raw JetStream
//! consumer rate, measured in the same run on the same stream (not a test).
//!
//! Writes DEVICES devices as v1alpha2 events plus one update for every
//! second one, then measures: a raw ordered consumer reading every message;
//! a full replay into a v1 projection (converting each v1alpha2 event); and
//! a compacted (LastPerSubject) replay.
//!
//! `cargo run --release -p fleetlog-tests --example replay_numbers -- [DEVICES]`

use std::time::Instant;

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use fleetlog_events::{EventLog, Id, StorageKey, StreamId};
use fleetlog_projections::{Projection, ReplayOptions, projector};
use fleetlog_proto::devices::v1alpha2::{Device, device};
use fleetlog_proto::events::v1::ResourceChange;
use fleetlog_proto::events::v1::resource_change::Kind;
use fleetlog_services::devices::device::DeviceName;
use fleetlog_tests::NatsServer;
use futures::StreamExt;
use prost::Message;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let devices: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(100_000);
    let nats = NatsServer::start()?;
    let stream = StreamId::new(Id::parse("devices")?, Id::parse("eu1")?);
    let log = EventLog::open(nats.connect().await?, stream.clone()).await?;
    let js = async_nats::jetstream::new(nats.connect().await?);

    let started = Instant::now();
    let mut acks = Vec::new();
    let mut events = 0u64;
    for round in 0..2 {
        for i in 0..devices {
            if round == 1 && i % 2 == 1 {
                continue;
            }
            let name: DeviceName = format!("projects/p0/regions/eu1/devices/d{i}").parse()?;
            let key = StorageKey::from_name(&name);
            let resource = Device {
                name: format!("projects/p0/devices/d{i}"),
                display_name: format!("device {i} round {round}"),
                spec: Some(device::Spec {
                    journal_export_enabled: true,
                    log_priority: (i % 8) as i32,
                    log_units: vec!["sshd.service".into()],
                    ..Default::default()
                }),
                ..Default::default()
            };
            let change = ResourceChange {
                kind: if round == 0 {
                    Kind::Created
                } else {
                    Kind::Updated
                } as i32,
                storage_key: key.to_string(),
                resource: Some(prost_types::Any {
                    type_url: "type.googleapis.com/fleetlog.devices.v1alpha2.Device".into(),
                    value: resource.encode_to_vec(),
                }),
                api_version: "v1alpha2".into(),
                command_id: format!("c{round}-{i}"),
                ..Default::default()
            };
            acks.push(
                js.publish(stream.resource_subject(&key), change.encode_to_vec().into())
                    .await?,
            );
            events += 1;
            if acks.len() >= 4096 {
                for ack in acks.drain(..) {
                    ack.await?;
                }
            }
        }
    }
    for ack in acks.drain(..) {
        ack.await?;
    }
    println!(
        "wrote {events} events for {devices} devices in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let last = log.last_revision().await?;

    // Raw: an ordered consumer reading every message, nothing decoded.
    let raw_stream = js.get_stream(stream.stream_name()).await?;
    let started = Instant::now();
    let consumer = raw_stream
        .create_consumer(pull::OrderedConfig {
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await?;
    let mut messages = consumer.messages().await?;
    let mut read = 0u64;
    while let Some(message) = messages.next().await {
        let message = message?;
        read += 1;
        if message
            .info()
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .stream_sequence
            >= last.get()
        {
            break;
        }
    }
    let raw_rate = read as f64 / started.elapsed().as_secs_f64();

    let converter = fleetlog_services::devices::converter("v1");
    let full_dir = tempfile::tempdir()?;
    let full = Projection::open(full_dir.path(), "v1")?;
    let started = Instant::now();
    projector::replay(&log, &full, &converter, ReplayOptions::default(), |_, _| {}).await?;
    let full_secs = started.elapsed().as_secs_f64();
    let full_rate = full.checkpoint().events_applied as f64 / full_secs;

    let compact_dir = tempfile::tempdir()?;
    let compact = Projection::open(compact_dir.path(), "v1")?;
    let started = Instant::now();
    let options = ReplayOptions {
        compacted: true,
        until: None,
    };
    projector::replay(&log, &compact, &converter, options, |_, _| {}).await?;
    let compact_secs = started.elapsed().as_secs_f64();
    let compact_rate = compact.checkpoint().events_applied as f64 / compact_secs;
    anyhow::ensure!(
        full.store().dump()? == compact.store().dump()?,
        "compacted and full replays agree"
    );

    println!("| what | events | seconds | events/s | vs raw consumer |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    println!(
        "| raw JetStream ordered consumer | {read} | {:.2} | {raw_rate:.0} | 1.00 |",
        read as f64 / raw_rate
    );
    println!(
        "| full replay v1alpha2 → v1 projection | {} | {full_secs:.2} | {full_rate:.0} | {:.2} |",
        full.checkpoint().events_applied,
        full_rate / raw_rate
    );
    println!(
        "| compacted replay (LastPerSubject) | {} | {compact_secs:.2} | {compact_rate:.0} | {:.2} |",
        compact.checkpoint().events_applied,
        compact_rate / raw_rate
    );
    println!(
        "{{\"devices\":{devices},\"events\":{events},\"raw_consumer_per_s\":{raw_rate:.0},\"full_replay_per_s\":{full_rate:.0},\"compacted_replay_per_s\":{compact_rate:.0},\"compacted_seconds\":{compact_secs:.3},\"full_seconds\":{full_secs:.3}}}"
    );
    Ok(())
}
