//! A projection: one RocksDB store for (service, region, API version) plus
//! the in-memory signal of how far it has applied the log, which is what
//! read-your-writes waits on.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use fleetlog_events::{Revision, StoredEvent};
use tokio::sync::watch;

use crate::error::ProjectionError;
use crate::store::{Checkpoint, Op, Store};

/// Turns an event of the log into what it does to one projection. The
/// projection's API version decides: events written in another version are
/// converted here.
pub trait Converter: Send + Sync + 'static {
    fn convert(&self, event: &StoredEvent) -> Result<Op, ProjectionError>;
}

/// Stores each resource exactly as its event carries it: the projection of
/// the API version the events were written in.
#[derive(Clone, Copy, Debug, Default)]
pub struct AsWritten;

/// `type.googleapis.com/fleetlog.devices.v1.Device` → `fleetlog.devices.v1.Device`.
pub fn type_name_of(type_url: &str) -> &str {
    type_url.rsplit('/').next().unwrap_or(type_url)
}

impl Converter for AsWritten {
    fn convert(&self, event: &StoredEvent) -> Result<Op, ProjectionError> {
        let Some(resource) = &event.change.resource else {
            return Err(ProjectionError::Conversion {
                revision: event.revision.get(),
                reason: "the event carries no resource".into(),
            });
        };
        Ok(Op::for_event(
            event,
            type_name_of(&resource.type_url).to_owned(),
            event.change.storage_key.clone(),
            resource.value.clone(),
        ))
    }
}

/// A projection and how far it has applied the log.
pub struct Projection {
    store: Store,
    api_version: String,
    checkpoint: Mutex<Checkpoint>,
    applied: watch::Sender<Revision>,
}

impl Projection {
    pub fn open(path: &Path, api_version: &str) -> Result<Arc<Self>, ProjectionError> {
        let store = Store::open(path, api_version)?;
        let checkpoint = store.checkpoint()?;
        let (applied, _) = watch::channel(checkpoint.revision);
        Ok(Arc::new(Projection {
            store,
            api_version: api_version.to_owned(),
            checkpoint: Mutex::new(checkpoint),
            applied,
        }))
    }

    pub fn api_version(&self) -> &str {
        &self.api_version
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn checkpoint(&self) -> Checkpoint {
        *self.lock_checkpoint()
    }

    /// The checkpoint only changes together with a completed store write, so
    /// a panic elsewhere cannot leave it half-updated: poisoning is ignored.
    fn lock_checkpoint(&self) -> MutexGuard<'_, Checkpoint> {
        self.checkpoint
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The last revision applied.
    pub fn applied(&self) -> Revision {
        *self.applied.borrow()
    }

    /// Applies consecutive events in one atomic write. Events at or below
    /// the checkpoint were applied before and are ignored, so redelivery
    /// after a reconnect is harmless.
    pub fn apply(
        &self,
        events: &[StoredEvent],
        converter: &dyn Converter,
    ) -> Result<Checkpoint, ProjectionError> {
        let mut checkpoint = self.lock_checkpoint();
        let fresh: Vec<&StoredEvent> = events
            .iter()
            .filter(|e| e.revision > checkpoint.revision)
            .collect();
        let Some(last) = fresh.last().map(|e| e.revision) else {
            return Ok(*checkpoint);
        };
        let ops = fresh
            .iter()
            .map(|event| converter.convert(event))
            .collect::<Result<Vec<_>, _>>()?;
        let after = self
            .store
            .apply(&ops, fresh.len() as u64, last, *checkpoint)?;
        *checkpoint = after;
        self.applied.send_replace(last);
        Ok(after)
    }

    /// Waits until `revision` is applied, at most `timeout`.
    pub async fn wait_for(
        &self,
        revision: Revision,
        timeout: Duration,
    ) -> Result<(), ProjectionError> {
        if self.applied() >= revision {
            return Ok(());
        }
        let mut applied = self.applied.subscribe();
        match tokio::time::timeout(timeout, applied.wait_for(|a| *a >= revision)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(ProjectionError::Closed),
            Err(_) => Err(ProjectionError::NotCaughtUp {
                wanted: revision.get(),
                applied: self.applied().get(),
            }),
        }
    }
}
