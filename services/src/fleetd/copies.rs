//! The read copies this region keeps of the other regions' Devices logs
//! (docs/adr/0007): one for every region Meta has a Devices Deployment
//! of, opened as it appears, each with its projections in this region's
//! current version, so that a query for that region's names reads here.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use fleetlog_events::log::LogOptions;
use fleetlog_events::{EventLog, Id, StreamId};
use fleetlog_model::meta::names::{DeploymentName, DeploymentParent};
use fleetlog_projections::Projection;
use fleetlog_projections::active::ProjectionSet;
use fleetlog_proto::meta::v1::Deployment;
use tokio_util::sync::CancellationToken;

use super::Projections;
use crate::devices;
use crate::engine::ReadCopies;

/// How often Meta is looked at for regions that joined.
const DISCOVERY: Duration = Duration::from_secs(1);

pub(super) struct CopyKeeper {
    pub client: async_nats::Client,
    pub region: Id,
    pub options: LogOptions,
    /// Meta's active projection: which regions have a Devices Deployment.
    pub meta: Arc<ArcSwap<Projection>>,
    /// This region's Devices projection: the version copies are built in.
    pub devices: Arc<ArcSwap<Projection>>,
    pub projections: Projections,
    pub copies: ReadCopies,
}

impl CopyKeeper {
    /// Opens copies as regions appear, until `stop`; then stops their
    /// projectors.
    pub async fn run(self, stop: CancellationToken) {
        let mut sets: Vec<(Id, Arc<ProjectionSet>, EventLog)> = Vec::new();
        loop {
            match self.regions() {
                Ok(regions) => {
                    for region in regions {
                        if self.copies.contains(&region) {
                            continue;
                        }
                        match self.open(&region).await {
                            Ok((set, log)) => {
                                tracing::info!(%region, "reading region's devices from a read copy");
                                self.copies.insert(region.clone(), set.active().clone());
                                sets.push((region, set, log));
                            }
                            Err(err) => {
                                tracing::warn!(%region, error = %format!("{err:#}"), "opening a read copy failed; retrying")
                            }
                        }
                    }
                }
                Err(err) => tracing::warn!(error = %err, "reading the regions from Meta failed"),
            }
            for (region, set, log) in &sets {
                if let Err(err) = self.follow_version(set, log).await {
                    tracing::warn!(%region, error = %err, "switching a read copy's projection failed; retrying");
                }
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(DISCOVERY) => {}
            }
        }
        for (_, set, _) in sets {
            set.shutdown().await;
        }
    }

    /// After this region switched versions, builds the copy's projection
    /// in the new version (a compacted replay) and, once it has caught up,
    /// makes it active: every projection of a region, its copies' too, is
    /// in the region's version. Reads of the copy answer UNAVAILABLE in
    /// between.
    async fn follow_version(&self, set: &ProjectionSet, log: &EventLog) -> anyhow::Result<()> {
        let wanted = self.devices.load().api_version().to_owned();
        let active = set.active_version();
        if active == wanted {
            return Ok(());
        }
        let target = set.feed(&wanted, true)?;
        let last = log.copy_state().await?.map_or(target.applied(), |c| c.last);
        if target.applied() >= last {
            set.activate(&wanted)?;
            set.stop_feeding(&active).await;
            tracing::info!(version = %wanted, "read copy switched with this region");
        }
        Ok(())
    }

    /// The other regions Meta has a Devices Deployment for.
    fn regions(&self) -> Result<Vec<Id>, fleetlog_model::ModelError> {
        let service = DeploymentParent {
            service: Id::parse_domain(devices::SERVICE_DOMAIN)
                .map_err(|e| fleetlog_model::ModelError::Internal(e.to_string()))?,
        };
        let meta = self.meta.load_full();
        let deployments = fleetlog_model::stored::stored_under::<Deployment>(&meta, &service)?;
        Ok(deployments
            .iter()
            .filter_map(|d| d.name.parse::<DeploymentName>().ok())
            .map(|name| name.deployment)
            .filter(|region| *region != self.region)
            .collect())
    }

    async fn open(&self, region: &Id) -> anyhow::Result<(Arc<ProjectionSet>, EventLog)> {
        let stream = StreamId::new(Id::parse(devices::SERVICE)?, region.clone());
        let log = tokio::time::timeout(
            Duration::from_secs(10),
            EventLog::open_copy(self.client.clone(), stream, self.options),
        )
        .await??;
        let version = self.devices.load().api_version().to_owned();
        let set = self
            .projections
            .open(&log, devices::VERSIONS, devices::converter, &version)?;
        Ok((set, log))
    }
}
