//! The projections of one service in one region, one per API version, and
//! the `ArcSwap` pointer to the active one (DESIGN §4, §5).
//!
//! Each version's projection lives in its own directory and is fed by its
//! own projector task. Switching versions is one atomic store of the
//! pointer: queries in flight finish on the projection they loaded.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;
use fleetlog_events::EventLog;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::error::ProjectionError;
use crate::projection::{Converter, Projection};
use crate::projector::Projector;

/// Makes the converter of one API version.
pub type ConverterFactory = Arc<dyn Fn(&str) -> Arc<dyn Converter> + Send + Sync>;

/// A running projector and how to stop it.
struct Feeding {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// Every API version's projection of one stream.
pub struct ProjectionSet {
    log: EventLog,
    /// `{data}/projections/{service}-{region}`; each version adds `-{version}`.
    dir_prefix: PathBuf,
    converters: ConverterFactory,
    reconnects: watch::Receiver<u64>,
    /// Fires when a projector hits an error it cannot retry.
    failed: CancellationToken,
    opened: Mutex<HashMap<String, Arc<Projection>>>,
    feeding: Mutex<HashMap<String, Feeding>>,
    active: Arc<ArcSwap<Projection>>,
}

impl ProjectionSet {
    /// Opens the projection of `active_version` and makes it active (not
    /// yet fed: call [`ProjectionSet::feed`]).
    pub fn open(
        log: EventLog,
        dir_prefix: PathBuf,
        converters: ConverterFactory,
        reconnects: watch::Receiver<u64>,
        failed: CancellationToken,
        active_version: &str,
    ) -> Result<Arc<Self>, ProjectionError> {
        let first = Projection::open(&version_dir(&dir_prefix, active_version), active_version)?;
        let set = ProjectionSet {
            log,
            dir_prefix,
            converters,
            reconnects,
            failed,
            opened: Mutex::new(HashMap::from([(active_version.to_owned(), first.clone())])),
            feeding: Mutex::new(HashMap::new()),
            active: Arc::new(ArcSwap::new(first)),
        };
        Ok(Arc::new(set))
    }

    /// The pointer queries read.
    pub fn active(&self) -> &Arc<ArcSwap<Projection>> {
        &self.active
    }

    pub fn active_version(&self) -> String {
        self.active.load().api_version().to_owned()
    }

    /// The projection of `version`, opened on first use.
    pub fn get(&self, version: &str) -> Result<Arc<Projection>, ProjectionError> {
        let mut opened = lock(&self.opened);
        if let Some(projection) = opened.get(version) {
            return Ok(projection.clone());
        }
        let projection = Projection::open(&version_dir(&self.dir_prefix, version), version)?;
        opened.insert(version.to_owned(), projection.clone());
        Ok(projection)
    }

    /// Starts feeding `version`'s projection from the log, if it is not fed
    /// already. With `compacted`, an empty projection is built from the
    /// last event of every subject (upgrade targets); otherwise from the
    /// whole history.
    pub fn feed(&self, version: &str, compacted: bool) -> Result<Arc<Projection>, ProjectionError> {
        let projection = self.get(version)?;
        let mut feeding = lock(&self.feeding);
        if let Some(running) = feeding.get(version)
            && !running.task.is_finished()
        {
            return Ok(projection);
        }
        let mut projector = Projector::new(
            self.log.clone(),
            projection.clone(),
            (self.converters)(version),
        )
        .restart_on(self.reconnects.clone());
        if compacted {
            projector = projector.compacted();
        }
        let stop = CancellationToken::new();
        let failed = self.failed.clone();
        let version_name = version.to_owned();
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                if let Err(err) = projector.run(stop).await {
                    tracing::error!(version = %version_name, error = %err, "a projector stopped");
                    failed.cancel();
                }
            }
        });
        tracing::info!(version, "feeding projection");
        feeding.insert(version.to_owned(), Feeding { stop, task });
        Ok(projection)
    }

    /// Whether `version`'s projection is being fed.
    pub fn is_fed(&self, version: &str) -> bool {
        lock(&self.feeding)
            .get(version)
            .is_some_and(|f| !f.task.is_finished())
    }

    /// Stops feeding `version` after its current batch; the projection
    /// stays consistent at its checkpoint and can be resumed later.
    pub async fn stop_feeding(&self, version: &str) {
        let running = lock(&self.feeding).remove(version);
        if let Some(running) = running {
            running.stop.cancel();
            let _ = running.task.await;
            tracing::info!(version, "stopped feeding projection");
        }
    }

    /// Makes `version` the projection queries read. One atomic store.
    pub fn activate(&self, version: &str) -> Result<(), ProjectionError> {
        let projection = self.get(version)?;
        self.active.store(projection);
        tracing::info!(version, "active projection switched");
        Ok(())
    }

    /// Stops every projector (shutdown).
    pub async fn shutdown(&self) {
        let all: Vec<Feeding> = lock(&self.feeding).drain().map(|(_, f)| f).collect();
        for running in &all {
            running.stop.cancel();
        }
        for running in all {
            let _ = running.task.await;
        }
    }
}

fn version_dir(prefix: &std::path::Path, version: &str) -> PathBuf {
    let mut name = prefix.as_os_str().to_owned();
    name.push("-");
    name.push(version);
    PathBuf::from(name)
}

/// The maps only change in single inserts and removals: a panic elsewhere
/// cannot leave them half-updated, so poisoning is ignored.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
