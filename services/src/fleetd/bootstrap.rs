//! Every start: registers this region, the Devices service and its
//! deployment here in Meta, creating whichever the log does not hold.
//!
//! What exists is read from the log (the stream leader), never inferred
//! from JetStream's duplicate window: a fixed request id would make a
//! re-create within two minutes of a deletion "succeed" as a retry of the
//! first create without writing anything. Each create has a fresh command
//! id; two processes bootstrapping at once both try, one writes, the other
//! finds it (ALREADY_EXISTS).

use std::sync::Arc;

use fleetlog_events::{Id, ResourceName};
use fleetlog_proto::meta::v1::{Deployment, Region, Service};

use crate::devices;
use crate::engine::{CreateRequest, Engine, ServiceContext};
use crate::error::ServiceError;
use fleetlog_model::Resource;
use fleetlog_model::meta::deployment::deployment_name;
use fleetlog_model::meta::names::RegionName;
use fleetlog_model::meta::names::ServiceName;

/// Creates what the log does not hold; existing records are left as they are.
pub async fn register(
    meta: &Arc<ServiceContext>,
    region: &Id,
    initial_version: &str,
    regional_domain: String,
) -> Result<(), ServiceError> {
    let region_name = RegionName {
        region: region.clone(),
    };
    ensure(
        meta,
        &region_name,
        Region {
            title: region.to_string(),
            ..Default::default()
        },
    )
    .await?;
    let service_name = ServiceName {
        service: Id::parse_domain(devices::SERVICE_DOMAIN)
            .map_err(|e| ServiceError::Internal(e.to_string()))?,
    };
    ensure(
        meta,
        &service_name,
        Service {
            display_name: "Devices".into(),
            global_domain: devices::SERVICE_DOMAIN.into(),
            all_versions: devices::VERSIONS.iter().map(|v| (*v).to_owned()).collect(),
            leading_region: region_name.to_string(),
            ..Default::default()
        },
    )
    .await?;
    // Meta writes settle before they answer, so the deployment's check
    // against the service in the projection sees it.
    ensure(
        meta,
        &deployment_name(devices::SERVICE_DOMAIN, region)?,
        Deployment {
            region: region_name.to_string(),
            regional_domain,
            current_version: initial_version.to_owned(),
            ..Default::default()
        },
    )
    .await
}

/// Creates `resource` as `name` unless the log holds a live resource of
/// that name.
async fn ensure<R: Resource>(
    meta: &Arc<ServiceContext>,
    name: &R::Name,
    resource: R,
) -> Result<(), ServiceError> {
    let engine = Engine::<R>::new(meta.clone());
    if engine.current(name).await?.is_some() {
        return Ok(());
    }
    tracing::info!(resource = %name, "registering in Meta");
    let created = engine
        .create(CreateRequest {
            parent: name.parent().to_string(),
            id: name.id().to_string(),
            resource: Some(resource),
            request_id: String::new(),
        })
        .await;
    match created {
        Ok(_) | Err(ServiceError::AlreadyExists(_)) => Ok(()),
        Err(err) => Err(err),
    }
}

/// Makes the bootstrap admin's key on the first start of a cluster that
/// was given none; returns its text, which exists nowhere else (shown once).
/// Later starts find the key and return None.
pub async fn admin_key(iam: &Arc<ServiceContext>) -> Result<Option<String>, ServiceError> {
    use fleetlog_model::iam::names::{BOOTSTRAP_ACCOUNT, SYSTEM_PROJECT, ServiceAccountName};

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
