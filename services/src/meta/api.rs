//! The gRPC services of Meta: the standard methods of regions, services
//! and deployments, and the Deployment actions that drive an upgrade
//! through the state machine of `fleetlog_model::meta::deployment`.

use fleetlog_model::ModelError;
use fleetlog_model::meta::deployment::{
    BEGIN_UPGRADE, NOTIFY_SHARDS, ROLLBACK_UPGRADE, SET_AVAILABLE_UPGRADE, begin_upgrade,
    notify_shards, rollback_upgrade, service_of, set_available_upgrade,
};
use fleetlog_model::meta::names::DeploymentName;
use fleetlog_proto::meta::v1::deployment_service_server::DeploymentService;
use fleetlog_proto::meta::v1::region_service_server::RegionService;
use fleetlog_proto::meta::v1::service_service_server::ServiceService;
use fleetlog_proto::meta::v1::*;

use crate::engine::Engine;
use crate::engine::access::Access;
use crate::error::ServiceError;

/// The gRPC `RegionService`.
pub struct RegionApi {
    engine: Engine<Region>,
}

impl RegionApi {
    pub fn new(engine: Engine<Region>) -> Self {
        RegionApi { engine }
    }
}

crate::standard_service! {
    impl RegionService for RegionApi {
        resource: Region,
        field: region,
        plural: regions,
        id_field: region_id,
        change: RegionChange,
        get: get_region(GetRegionRequest),
        batch_get: batch_get_regions(BatchGetRegionsRequest) -> BatchGetRegionsResponse,
        list: list_regions(ListRegionsRequest) -> ListRegionsResponse,
        watch_one: watch_region(WatchRegionRequest) -> WatchRegionResponse, stream WatchRegionStream,
        watch: watch_regions(WatchRegionsRequest) -> WatchRegionsResponse, stream WatchRegionsStream,
        create: create_region(CreateRegionRequest),
        update: update_region(UpdateRegionRequest),
        delete: delete_region(DeleteRegionRequest),
    }
}

/// The gRPC `ServiceService`.
pub struct ServiceApi {
    engine: Engine<Service>,
}

impl ServiceApi {
    pub fn new(engine: Engine<Service>) -> Self {
        ServiceApi { engine }
    }
}

crate::standard_service! {
    impl ServiceService for ServiceApi {
        resource: Service,
        field: service,
        plural: services,
        id_field: service_id,
        change: ServiceChange,
        get: get_service(GetServiceRequest),
        batch_get: batch_get_services(BatchGetServicesRequest) -> BatchGetServicesResponse,
        list: list_services(ListServicesRequest) -> ListServicesResponse,
        watch_one: watch_service(WatchServiceRequest) -> WatchServiceResponse, stream WatchServiceStream,
        watch: watch_services(WatchServicesRequest) -> WatchServicesResponse, stream WatchServicesStream,
        create: create_service(CreateServiceRequest),
        update: update_service(UpdateServiceRequest),
        delete: delete_service(DeleteServiceRequest),
    }
}

/// The gRPC `DeploymentService`.
pub struct DeploymentApi {
    engine: Engine<Deployment>,
}

impl DeploymentApi {
    pub fn new(engine: Engine<Deployment>) -> Self {
        DeploymentApi { engine }
    }

    /// Runs one Deployment action: the caller needs write access to Meta
    /// (the bootstrap admin's), `prepare` reads what the decision needs
    /// once, and `decide` (a pure function of `fleetlog_model::meta::deployment`) changes the deployment
    /// inside the engine's read → decide → append loop.
    async fn act<T: ActionRequest, P>(
        &self,
        request: tonic::Request<T>,
        action: &str,
        prepare: impl FnOnce(&Self, &T) -> Result<P, ServiceError>,
        decide: impl Fn(&mut Deployment, &T, &P) -> Result<(), ModelError>,
    ) -> Result<tonic::Response<Deployment>, tonic::Status> {
        let ctx = self.engine.context();
        let caller = ctx.caller(&request)?;
        let r = request.into_inner();
        ctx.authorize_name::<Deployment>(&caller, Access::Write, "name", r.name())?;
        let prepared = prepare(self, &r)?;
        let done = self
            .engine
            .act(r.name(), action, 0, r.request_id(), |d| {
                Ok(decide(d, &r, &prepared)?)
            })
            .await?;
        Ok(tonic::Response::new(done))
    }

    /// The API versions of the deployment's service, which an upgrade
    /// target or a rollback version must be one of.
    fn versions(&self, r: &impl ActionRequest) -> Result<Vec<String>, ServiceError> {
        let name: DeploymentName = r.name().parse().map_err(|e: fleetlog_events::NameError| {
            ServiceError::invalid("name", e.to_string())
        })?;
        Ok(service_of(&self.engine.projection(), &name)?.all_versions)
    }
}

crate::standard_service! {
    impl DeploymentService for DeploymentApi {
        resource: Deployment,
        field: deployment,
        plural: deployments,
        id_field: deployment_id,
        change: DeploymentChange,
        get: get_deployment(GetDeploymentRequest),
        batch_get: batch_get_deployments(BatchGetDeploymentsRequest) -> BatchGetDeploymentsResponse,
        list: list_deployments(ListDeploymentsRequest) -> ListDeploymentsResponse,
        watch_one: watch_deployment(WatchDeploymentRequest) -> WatchDeploymentResponse, stream WatchDeploymentStream,
        watch: watch_deployments(WatchDeploymentsRequest) -> WatchDeploymentsResponse, stream WatchDeploymentsStream,
        create: create_deployment(CreateDeploymentRequest),
        update: update_deployment(UpdateDeploymentRequest),
        delete: delete_deployment(DeleteDeploymentRequest),
    }

    async fn set_available_upgrade(
        &self,
        request: tonic::Request<SetAvailableUpgradeRequest>,
    ) -> Result<tonic::Response<Deployment>, tonic::Status> {
        self.act(request, SET_AVAILABLE_UPGRADE, Self::versions, |d, r, versions| {
            set_available_upgrade(d, versions, &r.target_api_version, r.total_shards_count)
        })
        .await
    }

    async fn begin_upgrade(
        &self,
        request: tonic::Request<BeginUpgradeRequest>,
    ) -> Result<tonic::Response<Deployment>, tonic::Status> {
        self.act(request, BEGIN_UPGRADE, |_, _| Ok(()), |d, _, _| begin_upgrade(d))
            .await
    }

    async fn notify_shards_upgrade_readiness(
        &self,
        request: tonic::Request<NotifyShardsUpgradeReadinessRequest>,
    ) -> Result<tonic::Response<Deployment>, tonic::Status> {
        self.act(request, NOTIFY_SHARDS, |_, _| Ok(()), |d, r, _| {
            notify_shards(d, r.shards_from, r.shards_to, r.ready)
        })
        .await
    }

    async fn rollback_upgrade(
        &self,
        request: tonic::Request<RollbackUpgradeRequest>,
    ) -> Result<tonic::Response<Deployment>, tonic::Status> {
        self.act(request, ROLLBACK_UPGRADE, Self::versions, |d, r, versions| {
            rollback_upgrade(d, versions, &r.to_version)
        })
        .await
    }
}

/// What every Deployment action request carries.
trait ActionRequest {
    fn name(&self) -> &str;
    fn request_id(&self) -> &str;
}

macro_rules! action_requests {
    ($($request:ty),*) => {
        $(impl ActionRequest for $request {
            fn name(&self) -> &str {
                &self.name
            }
            fn request_id(&self) -> &str {
                &self.request_id
            }
        })*
    };
}

action_requests!(
    SetAvailableUpgradeRequest,
    BeginUpgradeRequest,
    NotifyShardsUpgradeReadinessRequest,
    RollbackUpgradeRequest
);
