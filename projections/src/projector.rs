//! The projector loop: consume the log from the checkpoint, convert, apply in
//! batches, repeat; reconnect on failure; stop after the current batch when
//! cancelled.

use std::sync::Arc;
use std::time::Duration;

use fleetlog_events::{Delivered, EventLog, StartAt, StoredEvent};
use futures::StreamExt;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::error::ProjectionError;
use crate::projection::{Converter, Projection};
use crate::store::Checkpoint;

/// Most events applied in one RocksDB write.
pub const MAX_BATCH: usize = 1024;

/// Feeds one projection from one log.
pub struct Projector {
    log: EventLog,
    projection: Arc<Projection>,
    converter: Arc<dyn Converter>,
    reconnects: Option<watch::Receiver<u64>>,
    compacted: bool,
}

impl Projector {
    pub fn new(log: EventLog, projection: Arc<Projection>, converter: Arc<dyn Converter>) -> Self {
        Projector {
            log,
            projection,
            converter,
            reconnects: None,
            compacted: false,
        }
    }

    /// Build an empty projection from the last event of every subject
    /// (`DeliverPolicy::LastPerSubject`) instead of the whole history, then
    /// follow the tail. Events carry full post-state, so the result is the
    /// same; superseded events are simply never read.
    pub fn compacted(mut self) -> Self {
        self.compacted = true;
        self
    }

    /// Restart consuming whenever this counter changes (the NATS connection
    /// was re-established): a restarted server has lost the in-memory
    /// consumer, and waiting for missed heartbeats would stall the
    /// projection for seconds.
    pub fn restart_on(mut self, reconnects: watch::Receiver<u64>) -> Self {
        self.reconnects = Some(reconnects);
        self
    }

    /// Runs until `cancel` fires. Log errors are retried with backoff; a
    /// storage or conversion error stops the projector (the projection would
    /// otherwise silently diverge from the log).
    pub async fn run(mut self, cancel: CancellationToken) -> Result<(), ProjectionError> {
        let mut backoff = Duration::from_millis(50);
        loop {
            match self.follow(&cancel).await {
                Ok(()) => return Ok(()),
                Err(ProjectionError::Log(err)) => {
                    tracing::warn!(error = %err, "projector lost the log; reconnecting");
                    tokio::select! {
                        _ = cancel.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
                Err(err) => return Err(err),
            }
        }
    }

    async fn follow(&mut self, cancel: &CancellationToken) -> Result<(), ProjectionError> {
        if let Some(reconnects) = &mut self.reconnects {
            reconnects.mark_unchanged();
        }
        let start = self.projection.applied();
        let subscription = self.log.follow(start_at(self.compacted, start)).await?;
        tracing::info!(from = start.get() + 1, "projector following the log");
        let mut batches = subscription.events.ready_chunks(MAX_BATCH);
        loop {
            let batch = tokio::select! {
                // A batch in progress is applied before cancellation is seen:
                // the select only picks between whole batches.
                _ = cancel.cancelled() => return Ok(()),
                _ = reconnected(&mut self.reconnects) => {
                    return Err(ProjectionError::Log(fleetlog_events::LogError::Unavailable(
                        "the NATS connection was re-established".into(),
                    )));
                }
                batch = batches.next() => batch,
            };
            let Some(batch) = batch else {
                return Err(ProjectionError::Log(
                    fleetlog_events::LogError::Unavailable("the consumer ended".into()),
                ));
            };
            let events = events_of(batch)?;
            let events_len = events.len();
            // RocksDB's write (and its WAL sync) blocks: on a blocking
            // thread it cannot stall the runtime's workers, which serve the
            // API in the same process. Awaited here, outside the select, so
            // a started batch is still applied before cancellation is seen.
            let (projection, converter) = (self.projection.clone(), self.converter.clone());
            let checkpoint = applied(tokio::task::spawn_blocking(move || {
                projection.apply(&events, converter.as_ref())
            }))
            .await?;
            tracing::trace!(
                applied = checkpoint.revision.get(),
                events = events_len,
                "batch applied"
            );
        }
    }
}

/// Where a projection at checkpoint `applied` continues: an empty one built
/// compacted starts from the last event of every subject. Deliveries arrive
/// in sequence order either way, so a compacted build interrupted at
/// checkpoint N resumes correctly from N + 1.
fn start_at(compacted: bool, applied: fleetlog_events::Revision) -> StartAt {
    if compacted && applied == fleetlog_events::Revision::NONE {
        StartAt::LastPerSubject
    } else {
        StartAt::After(applied)
    }
}

/// The events of one delivered batch; the first consumer error ends it.
fn events_of(
    batch: Vec<Result<Delivered, fleetlog_events::LogError>>,
) -> Result<Vec<StoredEvent>, ProjectionError> {
    Ok(batch
        .into_iter()
        .map(|d| d.map(|d| d.event))
        .collect::<Result<_, _>>()?)
}

/// Resolves when the reconnect counter changes; never without one.
async fn reconnected(reconnects: &mut Option<watch::Receiver<u64>>) {
    if let Some(receiver) = reconnects
        && receiver.changed().await.is_ok()
    {
        return;
    }
    std::future::pending().await
}

/// How a replay reads the log.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReplayOptions {
    /// Read only the last event of every subject (`LastPerSubject`) when
    /// the projection is empty.
    pub compacted: bool,
    /// Stop at this revision instead of the stream's last at the start.
    pub until: Option<fleetlog_events::Revision>,
}

/// Replays the log into `projection` until it has applied everything the
/// stream held when the replay started (or `options.until`). `progress` is
/// called after every batch with (applied, target).
///
/// Each batch is converted and written on a blocking thread while the next
/// one is received, one batch at a time, in order.
pub async fn replay(
    log: &EventLog,
    projection: &Arc<Projection>,
    converter: Arc<dyn Converter>,
    options: ReplayOptions,
    mut progress: impl FnMut(u64, u64),
) -> Result<(), ProjectionError> {
    let target = match options.until {
        Some(until) => until,
        None => log.last_revision().await?,
    };
    if projection.applied() >= target {
        progress(projection.applied().get(), target.get());
        return Ok(());
    }
    let subscription = log
        .follow(start_at(options.compacted, projection.applied()))
        .await?;
    let mut batches = subscription.events.ready_chunks(MAX_BATCH);
    let mut in_flight: Option<tokio::task::JoinHandle<Result<Checkpoint, ProjectionError>>> = None;
    while let Some(batch) = batches.next().await {
        let events: Vec<StoredEvent> = events_of(batch)?
            .into_iter()
            .filter(|e| e.revision <= target)
            .collect();
        let reaches_target = events.last().is_some_and(|e| e.revision >= target);
        if let Some(previous) = in_flight.take() {
            progress(applied(previous).await?.revision.get(), target.get());
        }
        let (projection, converter) = (projection.clone(), converter.clone());
        in_flight = Some(tokio::task::spawn_blocking(move || {
            projection.apply(&events, converter.as_ref())
        }));
        if reaches_target {
            break;
        }
    }
    if let Some(last) = in_flight {
        let checkpoint = applied(last).await?;
        progress(checkpoint.revision.get(), target.get());
        if checkpoint.revision >= target {
            return Ok(());
        }
    }
    Err(ProjectionError::Log(
        fleetlog_events::LogError::Unavailable(
            "the consumer ended before the replay completed".into(),
        ),
    ))
}

/// The checkpoint after a batch applied on a blocking thread.
async fn applied(
    task: tokio::task::JoinHandle<Result<Checkpoint, ProjectionError>>,
) -> Result<Checkpoint, ProjectionError> {
    task.await
        .map_err(|e| ProjectionError::Storage(format!("applying a batch stopped: {e}")))?
}
