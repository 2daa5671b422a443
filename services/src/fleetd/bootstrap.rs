//! First start: registers this region, the Devices service and its
//! deployment here in Meta. Idempotent: fixed request ids make a repeated
//! bootstrap (every start, or two processes at once) a no-op.

use std::sync::Arc;

use fleetlog_events::Id;
use fleetlog_proto::meta::v1::{Deployment, Region, Service};

use crate::devices;
use crate::engine::{CreateRequest, Engine, ServiceContext};
use crate::error::ServiceError;
use crate::meta::region::RegionName;

/// Creates what is missing; existing records are left as they are.
pub async fn register(
    meta: &Arc<ServiceContext>,
    region: &Id,
    initial_version: &str,
) -> Result<(), ServiceError> {
    let region_name = RegionName {
        region: region.clone(),
    };
    created(
        Engine::<Region>::new(meta.clone())
            .create(CreateRequest {
                parent: String::new(),
                id: region.to_string(),
                resource: Some(Region {
                    title: region.to_string(),
                    ..Default::default()
                }),
                request_id: format!("bootstrap-region-{region}"),
            })
            .await,
    )?;
    created(
        Engine::<Service>::new(meta.clone())
            .create(CreateRequest {
                parent: String::new(),
                id: devices::SERVICE_DOMAIN.to_owned(),
                resource: Some(Service {
                    display_name: "Devices".into(),
                    global_domain: devices::SERVICE_DOMAIN.into(),
                    all_versions: devices::VERSIONS.iter().map(|v| (*v).to_owned()).collect(),
                    leading_region: region_name.to_string(),
                    ..Default::default()
                }),
                request_id: "bootstrap-service-devices".into(),
            })
            .await,
    )?;
    // The deployment is checked against the service in the projection.
    let written = meta.log.last_revision().await?;
    meta.active
        .load_full()
        .wait_for(written, std::time::Duration::from_secs(30))
        .await?;
    created(
        Engine::<Deployment>::new(meta.clone())
            .create(CreateRequest {
                parent: format!("services/{}", devices::SERVICE_DOMAIN),
                id: region.to_string(),
                resource: Some(Deployment {
                    region: region_name.to_string(),
                    regional_domain: format!("{region}.{}", devices::SERVICE_DOMAIN),
                    current_version: initial_version.to_owned(),
                    ..Default::default()
                }),
                request_id: format!("bootstrap-deployment-devices-{region}"),
            })
            .await,
    )?;
    Ok(())
}

fn created<T>(result: Result<T, ServiceError>) -> Result<(), ServiceError> {
    match result {
        Ok(_) | Err(ServiceError::AlreadyExists(_)) => Ok(()),
        Err(err) => Err(err),
    }
}

/// Makes the bootstrap admin's key on the first start of a cluster that
/// was given none; returns its text, which exists nowhere else (shown once).
/// Later starts find the key and return None.
pub async fn admin_key(iam: &Arc<ServiceContext>) -> Result<Option<String>, ServiceError> {
    use crate::auth::{BOOTSTRAP_ACCOUNT, SYSTEM_PROJECT, ServiceAccountName};

    let invalid = |e: fleetlog_events::NameError| ServiceError::Internal(e.to_string());
    let account = ServiceAccountName {
        project: Id::parse(SYSTEM_PROJECT).map_err(invalid)?,
        service_account: Id::parse(BOOTSTRAP_ACCOUNT).map_err(invalid)?,
    };
    let accounts = crate::iam::Accounts::new(iam.clone());
    accounts
        .ensure_account(&account, "bootstrap admin".into())
        .await?;
    match accounts
        .issue_key_with_id(&account, Id::parse("bootstrap").map_err(invalid)?)
        .await
    {
        Ok(key) => Ok(Some(key.text)),
        Err(ServiceError::AlreadyExists(_)) => Ok(None),
        Err(other) => Err(other),
    }
}
