//! Watch: one JetStream consumer per call, filtered by subject.
//!
//! `resume_revision = 0` starts from the last event of every subject (a
//! compacted snapshot of the collection), ends it with `is_current`, then
//! follows live changes. `resume_revision = N` delivers every change after N.
//! The task ends, and deletes its consumer, when the client goes away or the
//! server shuts down.

use std::collections::HashSet;

use fleetlog_events::envelope::ChangeKind;
use fleetlog_events::log::StartAt;
use fleetlog_events::{Revision, StoredEvent};
use fleetlog_projections::ProjectionError;
use fleetlog_projections::query_lang::{FieldMask, Filter};
use futures::StreamExt;
use tokio::sync::mpsc;

use super::queries::{finish, parse_mask};
use super::{Engine, Resource};
use crate::error::ServiceError;
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
        let consumer_name = format!("watch-{}", uuid::Uuid::new_v4().simple());
        let subscription = self.ctx.log.watch(subject, start, consumer_name).await?;
        let snapshot_revision = if start == StartAt::LastPerSubject {
            self.ctx.log.last_revision().await?
        } else {
            Revision::from_wire(resume_revision)
        };

        let (tx, rx) = mpsc::channel(16);
        let engine = self.clone();
        let shutdown = self.ctx.shutdown.clone();
        let log = self.ctx.log.clone();
        let consumer = subscription.consumer_name.clone();
        self.ctx.tasks.spawn(async move {
            let session = Session {
                engine,
                filter,
                mask,
                visible: HashSet::new(),
                seen: HashSet::new(),
                resumed: start != StartAt::LastPerSubject,
                initial: start == StartAt::LastPerSubject,
            };
            tokio::select! {
                _ = shutdown.cancelled() => {
                    let _ = tx.send(Err(tonic::Status::unavailable("the server is shutting down; resume from the last revision"))).await;
                }
                _ = tx.closed() => {}
                _ = session.run(subscription.events, subscription.pending_at_start, snapshot_revision, &tx) => {}
            }
            log.delete_consumer(&consumer).await;
        });
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
    async fn run(
        mut self,
        events: impl futures::Stream<
            Item = Result<fleetlog_events::Delivered, fleetlog_events::LogError>,
        > + Unpin,
        pending_at_start: u64,
        snapshot_revision: Revision,
        tx: &mpsc::Sender<Result<WatchBatch<R>, tonic::Status>>,
    ) {
        if self.initial && pending_at_start == 0 {
            self.initial = false;
            let batch = WatchBatch {
                changes: Vec::new(),
                is_current: true,
                revision: snapshot_revision.to_wire(),
            };
            if tx.send(Ok(batch)).await.is_err() {
                return;
            }
        }
        let mut chunks = events.ready_chunks(MAX_CHANGES_PER_MESSAGE);
        while let Some(chunk) = chunks.next().await {
            let mut changes = Vec::with_capacity(chunk.len());
            let mut last_revision = Revision::NONE;
            for delivered in chunk {
                let delivered = match delivered {
                    Ok(d) => d,
                    Err(err) => {
                        let _ = tx.send(Err(ServiceError::from(err).into())).await;
                        return;
                    }
                };
                last_revision = delivered.event.revision;
                match self.change_for(&delivered.event) {
                    Ok(Some(change)) => changes.push(change),
                    Ok(None) => {}
                    Err(err) => {
                        let _ = tx.send(Err(err.into())).await;
                        return;
                    }
                }
                if self.initial && delivered.pending == 0 {
                    // The initial state is complete: send it on its own.
                    self.initial = false;
                    let batch = WatchBatch {
                        changes: std::mem::take(&mut changes),
                        is_current: true,
                        revision: last_revision.to_wire(),
                    };
                    if tx.send(Ok(batch)).await.is_err() {
                        return;
                    }
                }
            }
            if !changes.is_empty() {
                let batch = WatchBatch {
                    changes,
                    is_current: false,
                    revision: last_revision.to_wire(),
                };
                if tx.send(Ok(batch)).await.is_err() {
                    return;
                }
            }
        }
        let _ = tx
            .send(Err(tonic::Status::unavailable(
                "the event log consumer ended; resume from the last revision",
            )))
            .await;
    }

    /// What the client should see for one event, if anything.
    fn change_for(&mut self, event: &StoredEvent) -> Result<Option<Change<R>>, ServiceError> {
        let name = event.change.storage_key.clone();
        let revision = event.revision.to_wire();
        // A resumed watch does not know what the client holds until it has
        // seen a name, so it assumes the client may hold it.
        let was_visible = if self.resumed && !self.seen.contains(&name) {
            true
        } else {
            self.visible.contains(&name)
        };
        self.seen.insert(name.clone());
        let matching = if event.is_deletion() {
            None
        } else {
            let resource = self.engine.decode(event)?;
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
            self.visible.remove(&name);
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
        self.visible.insert(name.clone());
        Ok(Some(Change {
            change_type,
            name,
            resource: Some(resource),
            revision,
        }))
    }
}
