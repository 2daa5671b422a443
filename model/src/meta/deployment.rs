//! `fleetlog.meta.v1.Deployment`: a service in a region,
//! `services/{service}/deployments/{region}`, carrying the region's current
//! API version and the state of its upgrade (DESIGN §5).
//!
//! The upgrade state machine lives here as pure functions over the
//! resource; the actions apply them through the engine's `act`, so every
//! transition is one event with optimistic concurrency.

use std::time::Duration;

use fleetlog_events::Id;
use fleetlog_projections::Projection;
use fleetlog_proto::meta::v1::deployment::{AvailableUpgrade, Stage, UpgradeState};
use fleetlog_proto::meta::v1::{Deployment, Service};
use prost_reflect::ReflectMessage;

use super::names::{DeploymentName, RegionName, ServiceName};
use crate::error::ModelError;
use crate::{FieldViolation, Resource, Surroundings};

/// The shard ring size upgrades report progress over (API.md).
pub const DEFAULT_TOTAL_SHARDS: i64 = 16;

/// Action names, as recorded in events.
pub const SET_AVAILABLE_UPGRADE: &str = "SetAvailableUpgrade";
pub const BEGIN_UPGRADE: &str = "BeginUpgrade";
pub const NOTIFY_SHARDS: &str = "NotifyShardsUpgradeReadiness";
pub const ROLLBACK_UPGRADE: &str = "RollbackUpgrade";
pub const COMPLETE_SWITCH: &str = "CompleteSwitch";

impl Resource for Deployment {
    type Name = DeploymentName;
    const FIELD: &'static str = "deployment";
    const ID_FIELD: &'static str = "deployment_id";
    const API_VERSION: &'static str = super::V1;
    const AREA: crate::Area = crate::Area::Meta;
    const CHECKS_OTHERS: bool = true;

    crate::resource_fields!();

    fn validate(&self) -> Result<(), FieldViolation> {
        if let Ok(name) = self.name.parse::<DeploymentName>() {
            let region = RegionName {
                region: name.deployment.clone(),
            }
            .to_string();
            if self.region != region {
                return Err(FieldViolation::new(
                    "region",
                    format!("must be {region}: a deployment's ID is its region's ID"),
                ));
            }
        }
        if self.current_version.is_empty() {
            return Err(FieldViolation::new("current_version", "is required"));
        }
        Ok(())
    }

    fn check_references(&self, around: &Surroundings<'_>) -> Result<(), ModelError> {
        let Ok(name) = self.name.parse::<DeploymentName>() else {
            return Ok(());
        };
        let service = service_of(around.projection, &name)?;
        if !service.all_versions.contains(&self.current_version) {
            return Err(ModelError::invalid(
                "deployment.current_version",
                format!(
                    "{} is not a version of {} (it has {})",
                    self.current_version,
                    service.name,
                    service.all_versions.join(", ")
                ),
            ));
        }
        Ok(())
    }

    /// A deployment is in use while fleetd runs it, or while a service
    /// deployed in its region imports its service.
    fn check_delete(&self, around: &Surroundings<'_>) -> Result<(), ModelError> {
        let Ok(name) = self.name.parse::<DeploymentName>() else {
            return Ok(());
        };
        if name.deployment == *around.region && around.runs.contains(&name.service.as_str()) {
            return Err(ModelError::FailedPrecondition(format!(
                "{name} is run by this fleetd (region {}); it cannot be deleted while it runs",
                around.region
            )));
        }
        let service = ServiceName {
            service: name.service.clone(),
        };
        let region = name.deployment.to_string();
        let mut importers = Vec::new();
        for importer in super::service::importers_of(around.projection, &service)? {
            let Ok(importer_name) = importer.parse::<ServiceName>() else {
                continue;
            };
            if super::service::deployment_regions(around.projection, &importer_name)?
                .contains(&region)
            {
                importers.push(importer);
            }
        }
        if !importers.is_empty() {
            return Err(ModelError::FailedPrecondition(format!(
                "{name} is needed by {}, which import {service} and are deployed in {region}; \
                 delete their deployments in {region} first",
                importers.join(", ")
            )));
        }
        Ok(())
    }
}

/// The Service record of a deployment, from the Meta projection.
pub fn service_of(projection: &Projection, name: &DeploymentName) -> Result<Service, ModelError> {
    let service = ServiceName {
        service: name.service.clone(),
    };
    let found = fleetlog_projections::query::get(
        projection,
        &Service::default().descriptor(),
        &service.to_string(),
    )?
    .ok_or_else(|| {
        ModelError::FailedPrecondition(format!("{service} is not registered in Meta"))
    })?;
    found
        .transcode_to::<Service>()
        .map_err(|e| ModelError::Internal(format!("a stored service does not decode: {e}")))
}

/// Whether the previous version's projection stays fed after a switch
/// (unset means yes).
pub fn keeps_previous_in_sync(deployment: &Deployment) -> bool {
    deployment.keep_previous_version_in_sync.unwrap_or(true)
}

/// The stage of a deployment's upgrade; `READY` when none runs.
pub fn stage(deployment: &Deployment) -> Stage {
    deployment
        .upgrade_state
        .as_ref()
        .map_or(Stage::Ready, |s| s.stage())
}

fn shards(total: i64) -> Vec<i64> {
    (0..total).collect()
}

fn require_ready(deployment: &Deployment, action: &str) -> Result<(), ModelError> {
    match stage(deployment) {
        Stage::Ready => Ok(()),
        other => Err(ModelError::FailedPrecondition(format!(
            "{action} needs the deployment in stage READY, but an upgrade to {} is in stage {}; wait for it or roll it back",
            deployment
                .upgrade_state
                .as_ref()
                .map_or("", |s| s.target_version.as_str()),
            other.as_str_name()
        ))),
    }
}

pub fn set_available_upgrade(
    deployment: &mut Deployment,
    all_versions: &[String],
    target: &str,
    total_shards: i64,
) -> Result<(), ModelError> {
    if target.is_empty() {
        return Err(ModelError::invalid("target_api_version", "is required"));
    }
    if !all_versions.iter().any(|v| v == target) {
        return Err(ModelError::invalid(
            "target_api_version",
            format!(
                "{target} is not one of the service's versions ({})",
                all_versions.join(", ")
            ),
        ));
    }
    if !(0..=1024).contains(&total_shards) {
        return Err(ModelError::invalid(
            "total_shards_count",
            "must be between 1 and 1024 (0 means 16)",
        ));
    }
    require_ready(deployment, SET_AVAILABLE_UPGRADE)?;
    if target == deployment.current_version {
        return Err(ModelError::FailedPrecondition(format!(
            "the deployment already serves {target}"
        )));
    }
    deployment.available_upgrade = Some(AvailableUpgrade {
        api_version: target.to_owned(),
        total_shards_count: if total_shards == 0 {
            DEFAULT_TOTAL_SHARDS
        } else {
            total_shards
        },
    });
    Ok(())
}

pub fn begin_upgrade(deployment: &mut Deployment) -> Result<(), ModelError> {
    require_ready(deployment, BEGIN_UPGRADE)?;
    let Some(available) = deployment.available_upgrade.clone() else {
        return Err(ModelError::FailedPrecondition(
            "no upgrade is available: call SetAvailableUpgrade first".into(),
        ));
    };
    deployment.upgrade_state = Some(UpgradeState {
        target_version: available.api_version,
        ready_shards: Vec::new(),
        pending_shards: shards(available.total_shards_count),
        stage: Stage::InitialSyncing as i32,
        switch_pause: deployment
            .upgrade_state
            .as_ref()
            .and_then(|s| s.switch_pause),
        previous_version: deployment.current_version.clone(),
    });
    Ok(())
}

pub fn notify_shards(
    deployment: &mut Deployment,
    from: i64,
    to: i64,
    ready: bool,
) -> Result<(), ModelError> {
    let Some(state) = deployment.upgrade_state.as_mut() else {
        return Err(ModelError::FailedPrecondition(
            "no upgrade is in progress".into(),
        ));
    };
    if state.stage() != Stage::InitialSyncing {
        return Err(ModelError::FailedPrecondition(format!(
            "shard readiness is reported while INITIAL_SYNCING, not in {}",
            state.stage().as_str_name()
        )));
    }
    let total = (state.ready_shards.len() + state.pending_shards.len()) as i64;
    if from < 0 || to < from || to >= total {
        return Err(ModelError::invalid(
            "shards_from",
            format!("[{from}, {to}] is not a range of shards 0 to {}", total - 1),
        ));
    }
    let (into, out_of) = if ready {
        (&mut state.ready_shards, &mut state.pending_shards)
    } else {
        (&mut state.pending_shards, &mut state.ready_shards)
    };
    out_of.retain(|s| !(from..=to).contains(s));
    for shard in from..=to {
        if !into.contains(&shard) {
            into.push(shard);
        }
    }
    into.sort_unstable();
    if state.pending_shards.is_empty() {
        state.stage = Stage::Switching as i32;
    }
    Ok(())
}

/// Switch back to `to_version`, or abandon an upgrade still syncing.
pub fn rollback_upgrade(
    deployment: &mut Deployment,
    all_versions: &[String],
    to_version: &str,
) -> Result<(), ModelError> {
    if !all_versions.iter().any(|v| v == to_version) {
        return Err(ModelError::invalid(
            "to_version",
            format!(
                "{to_version:?} is not one of the service's versions ({})",
                all_versions.join(", ")
            ),
        ));
    }
    match stage(deployment) {
        Stage::InitialSyncing if to_version == deployment.current_version => {
            // The target never became current: stop syncing it.
            if let Some(state) = deployment.upgrade_state.as_mut() {
                state.stage = Stage::Ready as i32;
                state.pending_shards.clear();
                state.ready_shards.clear();
                state.target_version.clear();
            }
            deployment.available_upgrade = None;
            Ok(())
        }
        Stage::Ready if to_version != deployment.current_version => {
            let total = deployment
                .available_upgrade
                .as_ref()
                .map_or(DEFAULT_TOTAL_SHARDS, |a| a.total_shards_count);
            let in_sync = keeps_previous_in_sync(deployment);
            deployment.upgrade_state = Some(UpgradeState {
                target_version: to_version.to_owned(),
                // A projection kept in sync switches at once; otherwise it
                // catches up by replay first, shard by shard.
                ready_shards: if in_sync { shards(total) } else { Vec::new() },
                pending_shards: if in_sync { Vec::new() } else { shards(total) },
                stage: if in_sync {
                    Stage::Switching
                } else {
                    Stage::InitialSyncing
                } as i32,
                switch_pause: deployment
                    .upgrade_state
                    .as_ref()
                    .and_then(|s| s.switch_pause),
                previous_version: deployment.current_version.clone(),
            });
            Ok(())
        }
        Stage::Ready => Err(ModelError::FailedPrecondition(format!(
            "the deployment already serves {to_version}"
        ))),
        other => Err(ModelError::FailedPrecondition(format!(
            "cannot roll back while the switch is {}; retry when it is READY",
            other.as_str_name()
        ))),
    }
}

/// The switch happened: the target is current, writes resumed after `pause`.
pub fn complete_switch(deployment: &mut Deployment, pause: Duration) -> Result<(), ModelError> {
    let Some(state) = deployment.upgrade_state.as_mut() else {
        return Err(ModelError::FailedPrecondition(
            "no switch is in progress".into(),
        ));
    };
    if state.stage() != Stage::Switching {
        return Err(ModelError::FailedPrecondition(format!(
            "the deployment is in stage {}, not SWITCHING",
            state.stage().as_str_name()
        )));
    }
    let previous = std::mem::replace(
        &mut deployment.current_version,
        std::mem::take(&mut state.target_version),
    );
    state.previous_version = previous;
    state.stage = Stage::Ready as i32;
    state.ready_shards.clear();
    state.pending_shards.clear();
    state.switch_pause = prost_types::Duration::try_from(pause).ok();
    deployment.available_upgrade = None;
    Ok(())
}

/// The name of `service`'s deployment in `region`.
pub fn deployment_name(service: &str, region: &Id) -> Result<DeploymentName, ModelError> {
    Ok(DeploymentName {
        service: Id::parse_domain(service)
            .map_err(|e| ModelError::Internal(format!("service {service}: {e}")))?,
        deployment: region.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn versions() -> Vec<String> {
        vec!["v1alpha2".into(), "v1".into()]
    }

    fn deployment() -> Deployment {
        Deployment {
            name: "services/devices.fleetlog.io/deployments/eu1".into(),
            region: "regions/eu1".into(),
            current_version: "v1alpha2".into(),
            ..Default::default()
        }
    }

    #[test]
    fn upgrade_walks_the_stages() {
        let mut d = deployment();
        assert!(begin_upgrade(&mut d).is_err(), "nothing available yet");
        set_available_upgrade(&mut d, &versions(), "v1", 0).expect("available");
        begin_upgrade(&mut d).expect("begins");
        assert_eq!(stage(&d), Stage::InitialSyncing);
        let state = d.upgrade_state.clone().expect("state");
        assert_eq!(state.pending_shards, (0..16).collect::<Vec<_>>());
        assert!(set_available_upgrade(&mut d, &versions(), "v1", 0).is_err());
        notify_shards(&mut d, 0, 7, true).expect("first half");
        assert_eq!(stage(&d), Stage::InitialSyncing);
        assert!(notify_shards(&mut d, 8, 16, true).is_err(), "out of range");
        notify_shards(&mut d, 8, 15, true).expect("second half");
        assert_eq!(stage(&d), Stage::Switching);
        complete_switch(&mut d, Duration::from_millis(12)).expect("switch");
        assert_eq!(d.current_version, "v1");
        assert_eq!(stage(&d), Stage::Ready);
        let state = d.upgrade_state.clone().expect("state");
        assert_eq!(state.previous_version, "v1alpha2");
        assert_eq!(
            state.switch_pause,
            Some(prost_types::Duration {
                seconds: 0,
                nanos: 12_000_000
            })
        );
    }

    #[test]
    fn rollback_is_instant_only_when_kept_in_sync() {
        let mut d = deployment();
        d.current_version = "v1".into();
        rollback_upgrade(&mut d, &versions(), "v1alpha2").expect("rollback");
        assert_eq!(stage(&d), Stage::Switching);
        let mut d = deployment();
        d.current_version = "v1".into();
        d.keep_previous_version_in_sync = Some(false);
        rollback_upgrade(&mut d, &versions(), "v1alpha2").expect("rollback");
        assert_eq!(stage(&d), Stage::InitialSyncing);
        assert!(rollback_upgrade(&mut deployment(), &versions(), "v1alpha2").is_err());
        assert!(rollback_upgrade(&mut deployment(), &versions(), "v9").is_err());
    }

    #[test]
    fn a_syncing_upgrade_can_be_abandoned() {
        let mut d = deployment();
        set_available_upgrade(&mut d, &versions(), "v1", 16).expect("available");
        begin_upgrade(&mut d).expect("begins");
        rollback_upgrade(&mut d, &versions(), "v1alpha2").expect("abandon");
        assert_eq!(stage(&d), Stage::Ready);
        assert_eq!(d.current_version, "v1alpha2");
    }
}
