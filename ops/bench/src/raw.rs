//! Raw building blocks measured beside Fleetlog in the same run: a
//! JetStream consumer's delivery lag and read rate, RocksDB batch writes,
//! point gets and prefix scans.

use std::path::Path;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use fleetlog_proto::events::v1::ResourceChange;
use futures::StreamExt;
use prost::Message;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::cluster::{Cluster, devices_stream};
use crate::latency::{Latencies, system_time};

/// A raw ordered consumer on the Devices stream measuring, for each event
/// from now on matching `filter`, the time from the event's own timestamp
/// (stamped by fleetd just before the append) to delivery here.
pub struct ConsumerLag {
    stop: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<Latencies>>,
}

impl ConsumerLag {
    pub async fn start(cluster: &Cluster, filter_subject: String) -> anyhow::Result<Self> {
        let js = async_nats::jetstream::new(cluster.nats().await?);
        let stream = js.get_stream(devices_stream()?.stream_name()).await?;
        let consumer = stream
            .create_consumer(pull::OrderedConfig {
                filter_subject,
                deliver_policy: DeliverPolicy::New,
                ..Default::default()
            })
            .await?;
        let mut messages = consumer.messages().await?;
        let (stop, mut stopped) = oneshot::channel();
        let task = tokio::spawn(async move {
            let mut lags = Latencies::default();
            loop {
                let message = tokio::select! {
                    _ = &mut stopped => break,
                    message = messages.next() => message,
                };
                let Some(message) = message else { break };
                let message = message?;
                let change = ResourceChange::decode(message.payload.as_ref())?;
                if let Some(time) = change.time.as_ref().and_then(system_time) {
                    lags.record_since(time);
                }
            }
            Ok(lags)
        });
        Ok(ConsumerLag { stop, task })
    }

    pub async fn finish(self) -> anyhow::Result<Latencies> {
        let _ = self.stop.send(());
        self.task.await?
    }
}

/// Reads the whole Devices stream with an ordered consumer, decoding
/// nothing: events/s.
pub async fn consumer_read_rate(
    cluster: &Cluster,
    last_sequence: u64,
) -> anyhow::Result<(u64, f64)> {
    let js = async_nats::jetstream::new(cluster.nats().await?);
    let stream = js.get_stream(devices_stream()?.stream_name()).await?;
    let started = Instant::now();
    let consumer = stream
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
        let info = message.info().map_err(|e| anyhow::anyhow!("{e}"))?;
        if info.stream_sequence >= last_sequence {
            break;
        }
    }
    Ok((read, read as f64 / started.elapsed().as_secs_f64()))
}

/// A bare RocksDB with the same keys and record sizes as a projection.
pub struct RawRocks {
    db: rocksdb::DB,
    written: u64,
    write_time: Duration,
}

impl RawRocks {
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        Ok(RawRocks {
            db: rocksdb::DB::open_default(path)?,
            written: 0,
            write_time: Duration::ZERO,
        })
    }

    /// Writes records in batches of the projector's size, timing only the
    /// writes.
    pub fn write(
        &mut self,
        records: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>,
    ) -> anyhow::Result<()> {
        let mut batch = rocksdb::WriteBatch::default();
        for (key, value) in records {
            batch.put(key, value);
            if batch.len() >= fleetlog_projections::projector::MAX_BATCH {
                self.flush(&mut batch)?;
            }
        }
        self.flush(&mut batch)
    }

    fn flush(&mut self, batch: &mut rocksdb::WriteBatch) -> anyhow::Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let count = batch.len() as u64;
        let started = Instant::now();
        self.db.write(std::mem::take(batch))?;
        self.write_time += started.elapsed();
        self.written += count;
        Ok(())
    }

    /// Records per second over every batch written so far.
    pub fn write_rate(&self) -> f64 {
        self.written as f64 / self.write_time.as_secs_f64().max(1e-9)
    }

    pub fn point_gets(&self, keys: impl IntoIterator<Item = Vec<u8>>) -> anyhow::Result<Latencies> {
        let mut latencies = Latencies::default();
        for key in keys {
            let started = Instant::now();
            let found = self.db.get_pinned(&key)?;
            latencies.record(started.elapsed());
            anyhow::ensure!(found.is_some(), "raw RocksDB lost a key");
        }
        Ok(latencies)
    }

    /// Reads `records` consecutive records from each start key, within
    /// `prefix`.
    pub fn prefix_scans(
        &self,
        prefix: &[u8],
        starts: impl IntoIterator<Item = Vec<u8>>,
        records: usize,
    ) -> anyhow::Result<Latencies> {
        let mut latencies = Latencies::default();
        for start in starts {
            let started = Instant::now();
            let mut read = 0;
            let mut iter = self.db.iterator(rocksdb::IteratorMode::From(
                &start,
                rocksdb::Direction::Forward,
            ));
            for entry in iter.by_ref() {
                let (key, _value) = entry?;
                if !key.starts_with(prefix) {
                    break;
                }
                read += 1;
                if read == records {
                    break;
                }
            }
            latencies.record(started.elapsed());
        }
        Ok(latencies)
    }
}
