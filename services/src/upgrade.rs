//! The upgrade controller: every fleetd follows its service's Deployment in
//! Meta through a JetStream consumer and makes its projections match it
//! (DESIGN §5), without a restart.
//!
//! - READY: the current version's projection is fed and active; the
//!   previous version's stays fed when `keep_previous_version_in_sync`.
//! - INITIAL_SYNCING: the target version's projection is built (a compacted
//!   replay, then the tail); shards are reported ready as the projection
//!   passes the last event each shard had when syncing began.
//! - SWITCHING: writes pause (commands wait on the write gate), the target
//!   catches up to the stream's last sequence, the active pointer switches,
//!   writes resume in the new version, and the measured pause is recorded
//!   with `CompleteSwitch`.
//!
//! A fleetd restarted in any stage picks up from the Deployment's state:
//! projections resume from their checkpoints.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fleetlog_events::log::StartAt;
use fleetlog_events::{EventLog, Revision, ShardId, StorageKey};
use fleetlog_projections::active::ProjectionSet;
use fleetlog_proto::meta::v1::Deployment;
use fleetlog_proto::meta::v1::deployment::Stage;
use futures::StreamExt;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::engine::{Engine, ServiceContext};
use crate::error::ServiceError;
use crate::fence::Fence;
use fleetlog_model::Resource;
use fleetlog_model::meta::deployment::{
    self, COMPLETE_SWITCH, NOTIFY_SHARDS, keeps_previous_in_sync,
};
use fleetlog_model::meta::names::DeploymentName;

/// Longest a switch waits for the target projection to catch up while
/// writes are paused; past it writes resume and the switch is retried.
const SWITCH_CATCH_UP: Duration = Duration::from_secs(60);
/// How often shard readiness is checked while syncing.
const READINESS_POLL: Duration = Duration::from_millis(50);
/// Longest a switch waits, writes paused, for the region's other api
/// processes to pause theirs; past it writes resume and the switch is
/// retried. Longer than the fence's entry TTL, so a dead process (whose
/// entry lingers that long) never makes a switch give up.
const FENCE_WAIT: Duration = Duration::from_secs(15);

/// Follows one Deployment and drives one service's projections.
pub struct UpgradeController {
    pub deployments: Engine<Deployment>,
    pub meta_log: EventLog,
    pub name: DeploymentName,
    pub projections: Arc<ProjectionSet>,
    /// The service whose writes pause at a switch.
    pub service: Arc<ServiceContext>,
    /// Whether this process writes (api/all roles): it reports readiness
    /// and performs the switch; a projector-role process only follows.
    pub writes: bool,
    /// This process's entry among the region's api processes: a switch
    /// waits until every one of them has paused (`crate::fence`). None in
    /// the projector role.
    pub fence: Option<Arc<Fence>>,
    /// The write gate, closed from startup until the first reconcile when
    /// fleetd started during a switch: it must not write the old version
    /// before it has taken part in the fence.
    pub held_until_reconciled: Option<tokio::sync::OwnedRwLockWriteGuard<()>>,
}

struct Reporter {
    target: String,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl UpgradeController {
    /// The Deployment as the log has it now (`None` before bootstrap).
    pub async fn current(
        deployments: &Engine<Deployment>,
        name: &DeploymentName,
    ) -> Result<Option<Deployment>, ServiceError> {
        let log = &deployments.context().log;
        match log.last(&StorageKey::from_name(name)).await? {
            Some(event) if !event.is_deletion() => Ok(Some(deployments.decode(&event)?)),
            _ => Ok(None),
        }
    }

    /// Runs until `stop` fires.
    pub async fn run(mut self, stop: CancellationToken) {
        let mut held = self.held_until_reconciled.take();
        let mut reporter: Option<Reporter> = None;
        let key = StorageKey::from_name(&self.name);
        let subject = self.meta_log.id().resource_subject(&key);
        let mut latest: Option<Deployment> = None;
        let mut backoff = Duration::from_millis(100);
        'follow: loop {
            let consumer = format!("upgrade-{}", uuid::Uuid::new_v4().simple());
            let subscription = match self
                .meta_log
                .watch(subject.clone(), StartAt::LastPerSubject, consumer.clone())
                .await
            {
                Ok(s) => s,
                Err(err) => {
                    tracing::warn!(error = %err, "cannot follow the deployment; retrying");
                    tokio::select! {
                        _ = stop.cancelled() => break 'follow,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    continue;
                }
            };
            let mut events = subscription.events;
            let mut needs_retry = false;
            loop {
                let next = tokio::select! {
                    _ = stop.cancelled() => {
                        self.meta_log.delete_consumer(&consumer).await;
                        break 'follow;
                    }
                    next = events.next() => Some(next),
                    // Reconcile again after a failure even if nothing new arrives.
                    _ = tokio::time::sleep(backoff), if needs_retry => None,
                };
                match next {
                    Some(Some(Ok(delivered))) if !delivered.event.is_deletion() => {
                        match self.deployments.decode(&delivered.event) {
                            Ok(d) => latest = Some(d),
                            Err(err) => {
                                tracing::error!(error = %err, "a deployment event does not decode")
                            }
                        }
                    }
                    Some(Some(Ok(_))) => continue,
                    Some(Some(Err(err))) => {
                        tracing::warn!(error = %err, "the deployment consumer failed; resubscribing");
                        self.meta_log.delete_consumer(&consumer).await;
                        continue 'follow;
                    }
                    Some(None) => continue 'follow,
                    None => {}
                }
                let Some(deployment) = latest.clone() else {
                    continue;
                };
                match self.reconcile(&deployment, &mut reporter, &mut held).await {
                    Ok(()) => {
                        needs_retry = false;
                        backoff = Duration::from_millis(100);
                    }
                    Err(err) => {
                        needs_retry = true;
                        tracing::warn!(error = %err, "reconciling the deployment failed; retrying");
                        backoff =
                            (backoff * 2).clamp(Duration::from_millis(200), Duration::from_secs(2));
                    }
                }
            }
        }
        if let Some(r) = reporter.take() {
            r.stop.cancel();
            let _ = r.task.await;
        }
    }

    async fn reconcile(
        &self,
        deployment: &Deployment,
        reporter: &mut Option<Reporter>,
        held: &mut Option<tokio::sync::OwnedRwLockWriteGuard<()>>,
    ) -> Result<(), ServiceError> {
        let current = deployment.current_version.as_str();
        let state = deployment.upgrade_state.clone().unwrap_or_default();
        let stage = deployment::stage(deployment);
        let target = state.target_version.as_str();
        tracing::debug!(current, target, stage = stage.as_str_name(), "deployment");
        self.projections.feed(current, false)?;

        let reporting_elsewhere =
            stage != Stage::InitialSyncing || reporter.as_ref().is_some_and(|r| r.target != target);
        if reporting_elsewhere && let Some(r) = reporter.take() {
            r.stop.cancel();
            let _ = r.task.await;
        }

        match stage {
            Stage::Ready => {
                if self.projections.active_version() != current {
                    // Another process switched, or this one restarted.
                    self.catch_up_and_activate(current, false).await?;
                }
                self.announce_writing(current).await?;
                held.take();
                for version in self.service.versions {
                    let keep =
                        keeps_previous_in_sync(deployment) && *version == state.previous_version;
                    if *version != current && !keep {
                        self.projections.stop_feeding(version).await;
                    } else if keep {
                        self.projections.feed(version, false)?;
                    }
                }
            }
            Stage::InitialSyncing => {
                held.take();
                let projection = self.projections.feed(target, true)?;
                if self.writes && reporter.is_none() {
                    *reporter =
                        Some(self.start_reporter(target, projection, &state.pending_shards));
                }
            }
            Stage::Switching => {
                self.projections.feed(target, true)?;
                if self.writes {
                    // The startup hold, if any, is the switch's pause.
                    self.switch(deployment, target, held.take()).await?;
                }
            }
        }
        Ok(())
    }

    /// Says this process has paused for the switch to `target` and waits
    /// until every live api process has; returns when the first paused.
    async fn fenced(&self, target: &str) -> Result<Option<u64>, ServiceError> {
        let Some(fence) = &self.fence else {
            return Ok(None);
        };
        fence
            .update(|entry| {
                entry.paused_for = Some(target.to_owned());
                entry.paused_at_ms = Some(crate::fence::now_ms());
            })
            .await?;
        fence.wait_until_all_paused(target, FENCE_WAIT).await
    }

    /// Feeds `version` (building it compacted if new and `compacted`),
    /// waits until it has applied the stream's last event, and makes it
    /// active. Returns that last event's revision.
    async fn catch_up_and_activate(
        &self,
        version: &str,
        compacted: bool,
    ) -> Result<Revision, ServiceError> {
        let projection = self.projections.feed(version, compacted)?;
        let last = self.service.log.last_revision().await?;
        projection.wait_for(last, SWITCH_CATCH_UP).await?;
        self.projections.activate(version)?;
        Ok(last)
    }

    /// Tells the fence that this process writes `version` and is not
    /// paused (after a switch, or one another process completed).
    async fn announce_writing(&self, version: &str) -> Result<(), ServiceError> {
        let Some(fence) = &self.fence else {
            return Ok(());
        };
        fence
            .update(|entry| {
                entry.version = version.to_owned();
                entry.paused_for = None;
                entry.paused_at_ms = None;
            })
            .await
    }

    /// The switch: writes pause from the moment the gate is requested until
    /// the pointer has moved, and no process of the region resumes before
    /// every one has paused (`crate::fence`).
    async fn switch(
        &self,
        deployment: &Deployment,
        target: &str,
        held: Option<tokio::sync::OwnedRwLockWriteGuard<()>>,
    ) -> Result<(), ServiceError> {
        let started = Instant::now();
        let paused = match held {
            Some(held) => held,
            None => self.service.write_gate.clone().write_owned().await,
        };
        let switched = async {
            let first_paused_ms = self.fenced(target).await?;
            let last = self.catch_up_and_activate(target, true).await?;
            Ok::<_, ServiceError>((first_paused_ms, last))
        };
        let (first_paused_ms, last) = match switched.await {
            Ok(switched) => switched,
            Err(err) => {
                // Writes resume in the current version; the switch is
                // retried by the next reconcile.
                let _ = self
                    .announce_writing(&self.projections.active_version())
                    .await;
                return Err(err);
            }
        };
        if let Err(err) = self.announce_writing(target).await {
            // Others see this process as paused until its entry expires or
            // the next refresh: they wait, nothing is written wrongly.
            tracing::warn!(error = %err, "announcing the switch to the fence failed");
        }
        drop(paused);
        // From the first process's pause across the region (their clocks
        // agree to a few ms on one host; NTP-close on several) to now.
        let pause = first_paused_ms
            .map(|first| Duration::from_millis(crate::fence::now_ms().saturating_sub(first)))
            .map_or(started.elapsed(), |region| region.max(started.elapsed()));
        tracing::info!(
            target,
            pause_ms = pause.as_secs_f64() * 1000.0,
            applied = last.get(),
            "switched the active projection; writes resumed"
        );
        let revision = deployment.metadata().map_or(0, |m| m.revision);
        match self
            .deployments
            .act(&deployment.name, COMPLETE_SWITCH, revision, "", |d| {
                Ok(deployment::complete_switch(d, pause)?)
            })
            .await
        {
            // Another api process recorded the switch first.
            Ok(_) | Err(ServiceError::Aborted(_)) | Err(ServiceError::FailedPrecondition(_)) => {
                Ok(())
            }
            Err(err) => Err(err),
        }
    }

    /// Reports shards ready as the target projection passes, for each
    /// shard, the last event it had when syncing began.
    fn start_reporter(
        &self,
        target: &str,
        projection: Arc<fleetlog_projections::Projection>,
        pending: &[i64],
    ) -> Reporter {
        let stop = CancellationToken::new();
        let deployments = self.deployments.clone();
        let log = self.service.log.clone();
        let name = self.name.to_string();
        let mut pending: Vec<i64> = pending.to_vec();
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                let mut marks: Vec<(i64, Revision)> = Vec::new();
                for shard in ShardId::all() {
                    let index = i64::from(shard.index());
                    if !pending.contains(&index) {
                        continue;
                    }
                    let filter = log.id().shard_subjects(shard);
                    match log.last_revision_on(&filter).await {
                        Ok(mark) => marks.push((index, mark)),
                        Err(err) => {
                            tracing::warn!(error = %err, "reading shard marks failed");
                            return;
                        }
                    }
                }
                // Shards beyond the 16 the log knows (a larger ring) carry no
                // events: ready at once.
                for index in pending.iter().copied() {
                    if !marks.iter().any(|(s, _)| *s == index) {
                        marks.push((index, Revision::NONE));
                    }
                }
                while !pending.is_empty() {
                    let applied = projection.applied();
                    let mut ready: Vec<i64> = marks
                        .iter()
                        .filter(|(s, mark)| pending.contains(s) && applied >= *mark)
                        .map(|(s, _)| *s)
                        .collect();
                    ready.sort_unstable();
                    for (from, to) in ranges(&ready) {
                        if let Err(err) = deployments
                            .act(&name, NOTIFY_SHARDS, 0, "", |d| {
                                Ok(deployment::notify_shards(d, from, to, true)?)
                            })
                            .await
                        {
                            tracing::warn!(error = %err, from, to, "reporting shard readiness failed");
                            return;
                        }
                        tracing::info!(from, to, applied = applied.get(), "shards ready");
                    }
                    pending.retain(|s| !ready.contains(s));
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(READINESS_POLL) => {}
                    }
                }
            }
        });
        Reporter {
            target: target.to_owned(),
            stop,
            task,
        }
    }
}

/// Sorted shard numbers as inclusive ranges: [0,1,2,5] → [(0,2),(5,5)].
fn ranges(sorted: &[i64]) -> Vec<(i64, i64)> {
    let mut out: Vec<(i64, i64)> = Vec::new();
    for &s in sorted {
        match out.last_mut() {
            Some((_, end)) if *end + 1 == s => *end = s,
            _ => out.push((s, s)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::ranges;

    #[test]
    fn shard_ranges() {
        assert_eq!(ranges(&[]), vec![]);
        assert_eq!(ranges(&[0, 1, 2, 5, 7, 8]), vec![(0, 2), (5, 5), (7, 8)]);
    }
}
