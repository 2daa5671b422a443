//! `fleetlog.meta.v1.Service`: `services/{service}`, e.g.
//! `services/devices.fleetlog.io`.

use fleetlog_projections::Projection;
use fleetlog_proto::meta::v1::{Deployment, Service};

use super::names::ServiceName;
use super::names::{DeploymentName, DeploymentParent, ServiceParent};
use crate::error::ModelError;
use crate::stored::stored_under;
use crate::{FieldViolation, Resource, Surroundings};

impl Resource for Service {
    type Name = ServiceName;
    const FIELD: &'static str = "service";
    const ID_FIELD: &'static str = "service_id";
    const API_VERSION: &'static str = super::V1;
    const AREA: crate::Area = crate::Area::Meta;
    const CHECKS_OTHERS: bool = true;

    crate::resource_fields!();

    fn validate(&self) -> Result<(), FieldViolation> {
        for (i, imported) in self.imported_services.iter().enumerate() {
            if imported.parse::<ServiceName>().is_err() {
                return Err(FieldViolation::new(
                    format!("imported_services[{i}]"),
                    format!("{imported:?} is not a service name (services/{{service}})"),
                ));
            }
            if imported == &self.name {
                return Err(FieldViolation::new(
                    format!("imported_services[{i}]"),
                    "a service cannot import itself",
                ));
            }
        }
        Ok(())
    }

    /// A service may import another only where that one is deployed in all
    /// of its regions.
    fn check_references(&self, around: &Surroundings<'_>) -> Result<(), ModelError> {
        let Ok(name) = self.name.parse::<ServiceName>() else {
            return Ok(());
        };
        let regions = deployment_regions(around.projection, &name)?;
        for imported in &self.imported_services {
            let Ok(imported_name) = imported.parse::<ServiceName>() else {
                continue;
            };
            let theirs = deployment_regions(around.projection, &imported_name)?;
            let missing: Vec<String> = regions
                .iter()
                .filter(|r| !theirs.contains(r))
                .cloned()
                .collect();
            if !missing.is_empty() {
                return Err(ModelError::FailedPrecondition(format!(
                    "{name} cannot import {imported}: it is not deployed in {}; deploy it there first",
                    missing.join(", ")
                )));
            }
        }
        Ok(())
    }

    /// A service is in use while fleetd runs it, it has deployments, or
    /// another service imports it.
    fn check_delete(&self, around: &Surroundings<'_>) -> Result<(), ModelError> {
        let Ok(name) = self.name.parse::<ServiceName>() else {
            return Ok(());
        };
        if around.runs.contains(&name.service.as_str()) {
            return Err(ModelError::FailedPrecondition(format!(
                "{name} is run by this fleetd (region {}); it cannot be deleted while it runs",
                around.region
            )));
        }
        let deployments = deployments_of(around.projection, &name)?;
        if !deployments.is_empty() {
            let names: Vec<String> = deployments.into_iter().map(|d| d.name).collect();
            return Err(ModelError::FailedPrecondition(format!(
                "{name} has deployments ({}); delete them first",
                names.join(", ")
            )));
        }
        let importers = importers_of(around.projection, &name)?;
        if !importers.is_empty() {
            return Err(ModelError::FailedPrecondition(format!(
                "{name} is imported by {}; remove it from their imported_services first",
                importers.join(", ")
            )));
        }
        Ok(())
    }
}

/// The deployments of a service, per the Meta projection.
pub fn deployments_of(
    projection: &Projection,
    service: &ServiceName,
) -> Result<Vec<Deployment>, ModelError> {
    stored_under::<Deployment>(
        projection,
        &DeploymentParent {
            service: service.service.clone(),
        },
    )
}

/// The region IDs a service is deployed in, per the Meta projection.
pub fn deployment_regions(
    projection: &Projection,
    service: &ServiceName,
) -> Result<Vec<String>, ModelError> {
    Ok(deployments_of(projection, service)?
        .iter()
        .filter_map(|d| d.name.parse::<DeploymentName>().ok())
        .map(|n| n.deployment.to_string())
        .collect())
}

/// The services that import `service`, per the Meta projection.
pub fn importers_of(
    projection: &Projection,
    service: &ServiceName,
) -> Result<Vec<String>, ModelError> {
    let wanted = service.to_string();
    Ok(stored_under::<Service>(projection, &ServiceParent {})?
        .into_iter()
        .filter(|s| s.imported_services.contains(&wanted))
        .map(|s| s.name)
        .collect())
}
