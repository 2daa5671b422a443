//! Rough figures for a running fleetd on this machine (not a test): creates/s
//! through gRPC with N concurrent clients beside raw JetStream publishes of
//! the same size in the same run, and read-after-write lag (command ack →
//! visible to a `min_revision` query).
//!
//! `cargo run -p fleetlog-tests --example quick_numbers -- [CREATES] [CLIENTS]`

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{PARENT, Sandbox, create, device, revision};
use fleetlog_proto::devices::v1::ListDevicesRequest;
use prost::Message;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let creates: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(4000);
    let clients: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(16);
    let sandbox = Sandbox::start().await?;

    // Raw JetStream: pipelined publishes with per-subject expectations, same payload size.
    let payload = device(&[("site", "berlin")], 3).encode_to_vec();
    let js = async_nats::jetstream::new(sandbox.nats.connect().await?);
    js.get_or_create_stream(async_nats::jetstream::stream::Config {
        name: "RAW".into(),
        subjects: vec!["raw.>".into()],
        ..Default::default()
    })
    .await?;
    let started = Instant::now();
    let mut acks = Vec::with_capacity(creates);
    for i in 0..creates {
        let publish = async_nats::jetstream::message::PublishMessage::build()
            .payload(payload.clone().into())
            .expected_last_subject_sequence(0)
            .message_id(format!("m{i}"));
        acks.push(
            js.send_publish(format!("raw.s{}.d{i}", i % 16), publish)
                .await?,
        );
    }
    for ack in acks {
        ack.await?;
    }
    let raw_rate = creates as f64 / started.elapsed().as_secs_f64();

    let client = sandbox.client().await?;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..clients {
        let mut client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut lags = Vec::new();
            for i in (worker..creates).step_by(clients) {
                let created = create(
                    &mut client,
                    &format!("d{i}"),
                    device(&[("site", "berlin")], 3),
                )
                .await?;
                if i % 10 == 0 {
                    let acked = Instant::now();
                    client
                        .list_devices(ListDevicesRequest {
                            parent: PARENT.into(),
                            page_size: 1,
                            min_revision: revision(&created),
                            ..Default::default()
                        })
                        .await?;
                    lags.push(acked.elapsed());
                }
            }
            anyhow::Ok(lags)
        }));
    }
    let mut lags = Vec::new();
    for task in tasks {
        lags.extend(task.await??);
    }
    let rate = creates as f64 / started.elapsed().as_secs_f64();
    lags.sort();
    println!("| figure | value |");
    println!("| --- | --- |");
    println!("| creates/s via gRPC ({clients} clients, {creates} creates) | {rate:.0} |");
    println!("| raw JetStream publish/s (pipelined, same payload) | {raw_rate:.0} |");
    println!("| ratio | {:.1} % |", 100.0 * rate / raw_rate);
    println!(
        "| read-after-write lag p50 (ack → visible, incl. one List RPC) | {:?} |",
        percentile(&lags, 0.5)
    );
    println!(
        "| read-after-write lag p99 | {:?} |",
        percentile(&lags, 0.99)
    );
    sandbox.stop().await
}
