//! Watch: a JetStream consumer of its own per call to catch up, then the
//! shared live feed of its subject filter (`feeds.rs`).
//!
//! `resume_revision = 0` starts from the last event of every subject (a
//! compacted snapshot of the collection), ends it with `is_current`, then
//! follows live changes. `resume_revision = N` delivers every change after N.
//! The catch-up consumer is deleted once it has delivered what it had; the
//! task ends when the client goes away or the server shuts down.

use std::collections::HashSet;

use fleetlog_events::envelope::ChangeKind;
use fleetlog_events::log::StartAt;
use fleetlog_events::{Revision, StoredEvent};
use fleetlog_projections::ProjectionError;
use fleetlog_projections::query_lang::{FieldMask, Filter};
use futures::StreamExt;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::mpsc;

use super::feeds::Live;

use super::Engine;
use super::queries::finish;
use crate::error::ServiceError;
use fleetlog_model::Resource;
use fleetlog_model::parse_mask;
use fleetlog_proto::api::v1::ChangeType;

/// Most changes sent in one response message.
const MAX_CHANGES_PER_MESSAGE: usize = 256;

/// What to watch.
pub enum WatchTarget {
    One(String),
    Collection { parent: String, filter: String },
}

/// One change as the client sees it.
pub struct Change<R> {
    pub change_type: ChangeType,
    pub name: String,
    pub resource: Option<R>,
    pub revision: i64,
}

/// The response batches of one watch call; an error ends it.
pub type WatchBatches<R> = std::pin::Pin<
    Box<dyn futures::Stream<Item = Result<WatchBatch<R>, tonic::Status>> + Send + 'static>,
>;

type Sender<R> = mpsc::Sender<Result<WatchBatch<R>, tonic::Status>>;

/// One response message of a watch.
pub struct WatchBatch<R> {
    pub changes: Vec<Change<R>>,
    pub is_current: bool,
    pub revision: i64,
}

impl<R: Resource> Engine<R> {
    /// Validates the request, creates the consumer and returns the stream of
    /// response batches. Errors after the stream started end it with a status.
    pub async fn watch(
        &self,
        target: WatchTarget,
        field_mask: Option<prost_types::FieldMask>,
        resume_revision: i64,
    ) -> Result<WatchBatches<R>, ServiceError> {
        if resume_revision < 0 {
            return Err(ServiceError::invalid(
                "resume_revision",
                "must not be negative",
            ));
        }
        let mask = parse_mask::<R>(field_mask, "field_mask")?;
        let descriptor = R::default().descriptor();
        let stream = self.ctx.log.id().clone();
        let (subject, filter) = match target {
            WatchTarget::One(name) => {
                let name = self.parse_name("name", &name)?;
                (
                    stream.resource_subject(&R::storage_key(&name)),
                    Filter::parse("", &descriptor),
                )
            }
            WatchTarget::Collection { parent, filter } => {
                let parent = self.parse_parent(&parent)?;
                (
                    stream.collection_subject::<R::Name>(&parent),
                    Filter::parse(&filter, &descriptor),
                )
            }
        };
        let filter = filter.map_err(ProjectionError::from)?;
        let start = match resume_revision {
            0 => StartAt::LastPerSubject,
            n => StartAt::After(Revision::from_wire(n)),
        };
        // Subscribe to the live feed first: everything after `live.after`
        // comes through it, everything before is in the catch-up below.
        let live = self.ctx.feeds.subscribe(&subject).await?;
        let turn = self.ctx.feeds.catch_up_turn().await?;
        let span = tracing::debug_span!("watch", subject = %subject, resume_revision);
        let consumer_name = format!("watch-{}", uuid::Uuid::new_v4().simple());
        let catch_up = self.ctx.log.watch(subject, start, consumer_name).await?;
        let snapshot_revision = if start == StartAt::LastPerSubject {
            self.ctx.log.last_revision().await?
        } else {
            Revision::from_wire(resume_revision)
        };
        let (tx, rx) = mpsc::channel(16);
        let engine = self.clone();
        let shutdown = self.ctx.shutdown.clone();
        let log = self.ctx.log.clone();
        let consumer = catch_up.consumer_name.clone();
        let open = crate::telemetry::OpenWatch::new(&self.ctx.open_watches);
        let task = async move {
            let _open = open;
            let mut session = Session {
                engine,
                filter,
                mask,
                visible: HashSet::new(),
                seen: HashSet::new(),
                resumed: start != StartAt::LastPerSubject,
                initial: start == StartAt::LastPerSubject,
            };
            let caught_up = tokio::select! {
                _ = shutdown.cancelled() => None,
                _ = tx.closed() => None,
                last = session.catch_up(catch_up.events, catch_up.pending_at_start, snapshot_revision, &tx) => last,
            };
            log.delete_consumer(&consumer).await;
            drop(turn);
            let Some(last) = caught_up else { return };
            tokio::select! {
                _ = shutdown.cancelled() => {
                    let _ = tx.send(Err(tonic::Status::unavailable("the server is shutting down; resume from the last revision"))).await;
                }
                _ = tx.closed() => {}
                _ = session.follow(live, last, &tx) => {}
            }
        };
        self.ctx
            .tasks
            .spawn(tracing::Instrument::instrument(task, span));
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }
}

/// The gRPC response stream of a watch: each batch converted by `respond`.
pub fn response_stream<R: Resource, T: Send + 'static>(
    batches: WatchBatches<R>,
    respond: impl Fn(WatchBatch<R>) -> T + Send + 'static,
) -> std::pin::Pin<Box<dyn futures::Stream<Item = Result<T, tonic::Status>> + Send + 'static>> {
    Box::pin(batches.map(move |batch| batch.map(&respond)))
}

struct Session<R> {
    engine: Engine<R>,
    filter: Filter,
    mask: FieldMask,
    /// Names the client currently holds (matched the filter when last seen).
    visible: HashSet<String>,
    /// Names whose visibility is known.
    seen: HashSet<String>,
    /// Started from a revision rather than a snapshot.
    resumed: bool,
    /// Still sending the initial state.
    initial: bool,
}

impl<R: Resource> Session<R> {
    /// Sends what the watch's own consumer delivers (the initial state, or
    /// the changes after the resume revision) until it has delivered all it
    /// had; returns the revision it got to, or None when the call ended.
    async fn catch_up(
        &mut self,
        events: impl futures::Stream<
            Item = Result<fleetlog_events::Delivered, fleetlog_events::LogError>,
        > + Unpin,
        pending_at_start: u64,
        snapshot_revision: Revision,
        tx: &Sender<R>,
    ) -> Option<Revision> {
        if pending_at_start == 0 {
            if self.initial {
                self.initial = false;
                let batch = WatchBatch {
                    changes: Vec::new(),
                    is_current: true,
                    revision: snapshot_revision.to_wire(),
                };
                tx.send(Ok(batch)).await.ok()?;
            }
            return Some(snapshot_revision);
        }
        let mut chunks = events.ready_chunks(MAX_CHANGES_PER_MESSAGE);
        while let Some(chunk) = chunks.next().await {
            let mut changes = Vec::with_capacity(chunk.len());
            let mut last_revision = Revision::NONE;
            let mut done = false;
            for delivered in chunk {
                let delivered = match delivered {
                    Ok(d) => d,
                    Err(err) => {
                        let _ = tx.send(Err(ServiceError::from(err).into())).await;
                        return None;
                    }
                };
                last_revision = delivered.event.revision;
                match self.change_for(&delivered.event, |engine| engine.decode(&delivered.event)) {
                    Ok(Some(change)) => changes.push(change),
                    Ok(None) => {}
                    Err(err) => {
                        let _ = tx.send(Err(err.into())).await;
                        return None;
                    }
                }
                if delivered.pending == 0 {
                    done = true;
                    break;
                }
            }
            // The initial state goes out on its own, marked current.
            let is_current = done && std::mem::take(&mut self.initial);
            if !changes.is_empty() || is_current {
                let batch = WatchBatch {
                    changes,
                    is_current,
                    revision: last_revision.to_wire(),
                };
                tx.send(Ok(batch)).await.ok()?;
            }
            if done {
                return Some(last_revision);
            }
        }
        let _ = tx
            .send(Err(tonic::Status::unavailable(
                "the event log consumer ended; resume from the last revision",
            )))
            .await;
        None
    }

    /// Follows the shared live feed from after `last`.
    async fn follow(&mut self, mut live: Live, mut last: Revision, tx: &Sender<R>) {
        loop {
            let mut events = match live.events.recv().await {
                Ok(event) => vec![event],
                Err(err) => return self.fell_off(err, last, tx).await,
            };
            while events.len() < MAX_CHANGES_PER_MESSAGE {
                match live.events.try_recv() {
                    Ok(event) => events.push(event),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Lagged(skipped)) => {
                        return self.fell_off(RecvError::Lagged(skipped), last, tx).await;
                    }
                    Err(TryRecvError::Closed) => break,
                }
            }
            let mut changes = Vec::with_capacity(events.len());
            for event in events {
                // The catch-up already sent it (or a later state).
                if event.event.revision <= last {
                    continue;
                }
                last = event.event.revision;
                match self.change_for(&event.event, |engine| event.decoded(|e| engine.decode(e))) {
                    Ok(Some(change)) => changes.push(change),
                    Ok(None) => {}
                    Err(err) => {
                        let _ = tx.send(Err(err.into())).await;
                        return;
                    }
                }
            }
            if !changes.is_empty() {
                let batch = WatchBatch {
                    changes,
                    is_current: false,
                    revision: last.to_wire(),
                };
                if tx.send(Ok(batch)).await.is_err() {
                    return;
                }
            }
        }
    }

    /// The feed ended, or this watch fell too far behind it: the client
    /// resumes from the last revision it got.
    async fn fell_off(&self, err: RecvError, last: Revision, tx: &Sender<R>) {
        let message = match err {
            RecvError::Lagged(skipped) => format!(
                "this watch fell {skipped} events behind; resume from revision {}",
                last.get()
            ),
            RecvError::Closed if self.engine.ctx.shutdown.is_cancelled() => format!(
                "this fleetd is shutting down; resume from revision {} (on another instance or after the restart)",
                last.get()
            ),
            RecvError::Closed => format!(
                "the event log consumer ended; resume from revision {}",
                last.get()
            ),
        };
        let _ = tx.send(Err(tonic::Status::unavailable(message))).await;
    }

    /// What the client should see for one event, if anything.
    fn change_for(
        &mut self,
        event: &StoredEvent,
        decode: impl FnOnce(&Engine<R>) -> Result<R, ServiceError>,
    ) -> Result<Option<Change<R>>, ServiceError> {
        let name = event.change.storage_key.clone();
        let revision = event.revision.to_wire();
        // Without a filter the client holds every resource it has not seen
        // deleted, so there is nothing to track per name.
        let tracked = !self.filter.is_match_all();
        // A resumed watch does not know what the client holds until it has
        // seen a name, so it assumes the client may hold it.
        let was_visible = if !tracked || (self.resumed && !self.seen.contains(&name)) {
            true
        } else {
            self.visible.contains(&name)
        };
        if tracked {
            self.seen.insert(name.clone());
        }
        let matching = if event.is_deletion() {
            None
        } else {
            let resource = decode(&self.engine)?;
            // Reflection only when a filter or mask needs it: with many
            // watchers every event is shaped once per watcher.
            if self.filter.is_match_all() && self.mask.is_empty() {
                Some(resource)
            } else {
                let message = resource.transcode_to_dynamic();
                if self.filter.matches(&message) {
                    Some(finish(&self.mask, &message)?)
                } else {
                    None
                }
            }
        };
        let Some(resource) = matching else {
            if tracked {
                self.visible.remove(&name);
            }
            // In the initial state an absent resource is simply not sent.
            return Ok((was_visible && !self.initial).then_some(Change {
                change_type: ChangeType::Removed,
                name,
                resource: None,
                revision,
            }));
        };
        let change_type = if self.initial || event.kind() == ChangeKind::Created || !was_visible {
            ChangeType::Added
        } else {
            ChangeType::Modified
        };
        if tracked {
            self.visible.insert(name.clone());
        }
        Ok(Some(Change {
            change_type,
            name,
            resource: Some(resource),
            revision,
        }))
    }
}
