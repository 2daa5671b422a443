//! The gRPC services of `fleetlog.devices.v1alpha2`, the previous Devices
//! API. Standard methods go through `Versioned` (natively from the
//! v1alpha2 projection while the region is on v1alpha2, transformed to v1
//! otherwise); custom actions convert their request with the transforms,
//! call the same flow as v1 with the caller they authenticated, and
//! convert the result back.

use std::sync::Arc;

use fleetlog_proto::devices::v1;
use fleetlog_proto::devices::v1alpha2::device_service_server::DeviceService;
use fleetlog_proto::devices::v1alpha2::provisioning_approval_request_service_server::ProvisioningApprovalRequestService;
use fleetlog_proto::devices::v1alpha2::provisioning_policy_service_server::ProvisioningPolicyService;
use fleetlog_proto::devices::v1alpha2::*;
use futures::StreamExt;

use crate::devices::flows::agent::{Beat, DeviceAgent};
use crate::devices::flows::provisioning::{Provisioned, Provisioning};
use crate::engine::versioned::Versioned;
use crate::engine::{Engine, ServiceContext};
use fleetlog_model::devices::transforms::{
    ApprovalRequestToV1, ApprovalRequestToV1alpha2, DeviceToV1, DeviceToV1alpha2, PolicyToV1,
    PolicyToV1alpha2, key_to_v1alpha2, same_shape,
};
use fleetlog_model::transform::Transform;

/// The gRPC `fleetlog.devices.v1alpha2.DeviceService`: always served by
/// transformation to the storage version (v1) for commands and watches,
/// natively from the v1alpha2 projection while the region is on v1alpha2.
pub struct DeviceApi {
    engine: Versioned<DeviceToV1, DeviceToV1alpha2>,
    agent: DeviceAgent,
}

impl DeviceApi {
    pub fn new(engine: Versioned<DeviceToV1, DeviceToV1alpha2>, agent: DeviceAgent) -> Self {
        DeviceApi { engine, agent }
    }

    /// A v1alpha2 device name as v1 names it (a malformed one stays as sent:
    /// the v1 side reports it, naming the same field).
    fn v1_name(&self, name: &str) -> String {
        self.engine
            .forward_name("name", name)
            .unwrap_or_else(|_| name.to_owned())
    }
}

crate::standard_service! {
    impl DeviceService for DeviceApi {
        resource: Device,
        field: device,
        plural: devices,
        id_field: device_id,
        change: DeviceChange,
        get: get_device(GetDeviceRequest),
        batch_get: batch_get_devices(BatchGetDevicesRequest) -> BatchGetDevicesResponse,
        list: list_devices(ListDevicesRequest) -> ListDevicesResponse,
        watch_one: watch_device(WatchDeviceRequest) -> WatchDeviceResponse, stream WatchDeviceStream,
        watch: watch_devices(WatchDevicesRequest) -> WatchDevicesResponse, stream WatchDevicesStream,
        create: create_device(CreateDeviceRequest),
        update: update_device(UpdateDeviceRequest),
        delete: delete_device(DeleteDeviceRequest),
    }

    async fn provision_service_account_to_device(
        &self,
        request: tonic::Request<ProvisionServiceAccountToDeviceRequest>,
    ) -> Result<tonic::Response<ProvisionServiceAccountToDeviceResponse>, tonic::Status> {
        let caller = self.engine.context().caller(&request)?;
        let r = request.into_inner();
        let done = self
            .agent
            .provision_account(&caller, &self.v1_name(&r.name), &r.request_id)
            .await?;
        Ok(tonic::Response::new(ProvisionServiceAccountToDeviceResponse {
            device: Some(DeviceToV1alpha2.resource(done.device)),
            service_account_key: Some(key_to_v1alpha2(done.key)),
        }))
    }

    async fn remove_service_account_from_device(
        &self,
        request: tonic::Request<RemoveServiceAccountFromDeviceRequest>,
    ) -> Result<tonic::Response<Device>, tonic::Status> {
        let caller = self.engine.context().caller(&request)?;
        let r = request.into_inner();
        let device = self
            .agent
            .remove_account(&caller, &self.v1_name(&r.name), &r.request_id)
            .await?;
        Ok(tonic::Response::new(DeviceToV1alpha2.resource(device)))
    }

    async fn heartbeat(
        &self,
        request: tonic::Request<tonic::Streaming<HeartbeatRequest>>,
    ) -> Result<tonic::Response<HeartbeatResponse>, tonic::Status> {
        let caller = self.engine.context().caller(&request)?;
        let beats = request.into_inner().map(|beat| {
            beat.map(|b| Beat {
                name: self.v1_name(&b.name),
                info: b.status.and_then(|s| s.device_info).as_ref().map(same_shape),
            })
        });
        let revision = self.agent.heartbeats(&caller, beats).await?;
        Ok(tonic::Response::new(HeartbeatResponse { revision }))
    }

    async fn get_device_config(
        &self,
        request: tonic::Request<GetDeviceConfigRequest>,
    ) -> Result<tonic::Response<DeviceConfig>, tonic::Status> {
        let caller = self.engine.context().caller(&request)?;
        let r = request.into_inner();
        let config = self.agent.config(&caller, &self.v1_name(&r.name)).await?;
        let device = DeviceToV1alpha2.resource(v1::Device {
            name: config.name,
            spec: config.spec,
            ..Default::default()
        });
        Ok(tonic::Response::new(DeviceConfig {
            name: device.name,
            labels: config.labels,
            spec: device.spec,
            revision: config.revision,
        }))
    }

    async fn upload_device_logs(
        &self,
        request: tonic::Request<UploadDeviceLogsRequest>,
    ) -> Result<tonic::Response<UploadDeviceLogsResponse>, tonic::Status> {
        let caller = self.engine.context().caller(&request)?;
        let r = request.into_inner();
        let entries = r.entries.iter().map(same_shape).collect();
        let done = self.agent.upload(&caller, &self.v1_name(&r.name), entries).await?;
        Ok(tonic::Response::new(same_shape(&done)))
    }

    type QueryDeviceLogsStream = std::pin::Pin<Box<
        dyn futures::Stream<Item = Result<QueryDeviceLogsResponse, tonic::Status>> + Send + 'static,
    >>;

    async fn query_device_logs(
        &self,
        request: tonic::Request<QueryDeviceLogsRequest>,
    ) -> Result<tonic::Response<Self::QueryDeviceLogsStream>, tonic::Status> {
        let caller = self.engine.context().caller(&request)?;
        let r = request.into_inner();
        let query = v1::QueryDeviceLogsRequest {
            name: self.v1_name(&r.name),
            since: r.since,
            units: r.units,
            min_priority: r.min_priority,
        };
        let batches = self.agent.query(&caller, query).await?;
        Ok(tonic::Response::new(Box::pin(batches.map(|batch| {
            batch
                .map(|b| same_shape::<_, QueryDeviceLogsResponse>(&b))
                .map_err(tonic::Status::from)
        }))))
    }
}

/// A provisioned device as v1alpha2 returns it.
fn provisioned_to_v1alpha2(done: Provisioned) -> ProvisionedDevice {
    ProvisionedDevice {
        device: Some(DeviceToV1alpha2.resource(done.device)),
        service_account_key: Some(key_to_v1alpha2(done.key)),
    }
}

/// The gRPC `fleetlog.devices.v1alpha2.ProvisioningPolicyService`.
pub struct ProvisioningPolicyApi {
    engine: Versioned<PolicyToV1, PolicyToV1alpha2>,
    flow: Provisioning,
}

impl ProvisioningPolicyApi {
    pub fn new(ctx: &Arc<ServiceContext>, flow: Provisioning) -> Self {
        ProvisioningPolicyApi {
            engine: Versioned::new(
                Engine::new(ctx.clone()),
                Engine::new(ctx.clone()),
                PolicyToV1::new(ctx.region.clone()),
                PolicyToV1alpha2,
                false,
            ),
            flow,
        }
    }

    /// A v1alpha2 policy name as v1 names it (a malformed one stays as
    /// sent: the flow reports it, naming the same field).
    fn v1_name(&self, name: &str) -> String {
        self.engine
            .forward_name("name", name)
            .unwrap_or_else(|_| name.to_owned())
    }
}

crate::standard_service! {
    impl ProvisioningPolicyService for ProvisioningPolicyApi {
        resource: ProvisioningPolicy,
        field: provisioning_policy,
        plural: provisioning_policies,
        id_field: provisioning_policy_id,
        change: ProvisioningPolicyChange,
        get: get_provisioning_policy(GetProvisioningPolicyRequest),
        batch_get: batch_get_provisioning_policies(BatchGetProvisioningPoliciesRequest) -> BatchGetProvisioningPoliciesResponse,
        list: list_provisioning_policies(ListProvisioningPoliciesRequest) -> ListProvisioningPoliciesResponse,
        watch_one: watch_provisioning_policy(WatchProvisioningPolicyRequest) -> WatchProvisioningPolicyResponse, stream WatchProvisioningPolicyStream,
        watch: watch_provisioning_policies(WatchProvisioningPoliciesRequest) -> WatchProvisioningPoliciesResponse, stream WatchProvisioningPoliciesStream,
        create: create_provisioning_policy(CreateProvisioningPolicyRequest),
        update: update_provisioning_policy(UpdateProvisioningPolicyRequest),
        delete: delete_provisioning_policy(DeleteProvisioningPolicyRequest),
    }

    async fn provision_service_account_to_provisioning_policy(
        &self,
        request: tonic::Request<ProvisionServiceAccountToProvisioningPolicyRequest>,
    ) -> Result<tonic::Response<ProvisionServiceAccountToProvisioningPolicyResponse>, tonic::Status> {
        let caller = self.engine.context().caller(&request)?;
        let r = request.into_inner();
        let (policy, key) = self
            .flow
            .provision_policy_account(&caller, &self.v1_name(&r.name), &r.request_id)
            .await?;
        Ok(tonic::Response::new(ProvisionServiceAccountToProvisioningPolicyResponse {
            provisioning_policy: Some(PolicyToV1alpha2.resource(policy)),
            service_account_key: Some(key_to_v1alpha2(key)),
        }))
    }

    async fn remove_service_account_from_provisioning_policy(
        &self,
        request: tonic::Request<RemoveServiceAccountFromProvisioningPolicyRequest>,
    ) -> Result<tonic::Response<ProvisioningPolicy>, tonic::Status> {
        let caller = self.engine.context().caller(&request)?;
        let r = request.into_inner();
        let policy = self
            .flow
            .remove_policy_account(&caller, &self.v1_name(&r.name), &r.request_id)
            .await?;
        Ok(tonic::Response::new(PolicyToV1alpha2.resource(policy)))
    }

    async fn provision_device_via_policy(
        &self,
        request: tonic::Request<ProvisionDeviceViaPolicyRequest>,
    ) -> Result<tonic::Response<ProvisionedDevice>, tonic::Status> {
        let caller = self.engine.context().caller(&request)?;
        let r = request.into_inner();
        let status = r.device_status.as_ref().map(same_shape);
        let done = self
            .flow
            .provision_via_policy(&caller, &self.v1_name(&r.name), status, &r.request_id)
            .await?;
        Ok(tonic::Response::new(provisioned_to_v1alpha2(done)))
    }

    async fn request_provisioning_approval(
        &self,
        request: tonic::Request<RequestProvisioningApprovalRequest>,
    ) -> Result<tonic::Response<ProvisioningApprovalRequest>, tonic::Status> {
        let caller = self.engine.context().caller(&request)?;
        let r = request.into_inner();
        let status = r.device_status.as_ref().map(same_shape);
        let filed = self
            .flow
            .request_approval(&caller, &self.v1_name(&r.name), status)
            .await?;
        Ok(tonic::Response::new(ApprovalRequestToV1alpha2.resource(filed)))
    }
}

/// The gRPC `fleetlog.devices.v1alpha2.ProvisioningApprovalRequestService`.
pub struct ProvisioningApprovalRequestApi {
    engine: Versioned<ApprovalRequestToV1, ApprovalRequestToV1alpha2>,
    flow: Provisioning,
}

impl ProvisioningApprovalRequestApi {
    pub fn new(ctx: &Arc<ServiceContext>, flow: Provisioning) -> Self {
        ProvisioningApprovalRequestApi {
            engine: Versioned::new(
                Engine::new(ctx.clone()),
                Engine::new(ctx.clone()),
                ApprovalRequestToV1::new(ctx.region.clone()),
                ApprovalRequestToV1alpha2,
                false,
            ),
            flow,
        }
    }
}

crate::standard_service! {
    impl ProvisioningApprovalRequestService for ProvisioningApprovalRequestApi {
        resource: ProvisioningApprovalRequest,
        field: provisioning_approval_request,
        plural: provisioning_approval_requests,
        id_field: provisioning_approval_request_id,
        change: ProvisioningApprovalRequestChange,
        get: get_provisioning_approval_request(GetProvisioningApprovalRequestRequest),
        batch_get: batch_get_provisioning_approval_requests(BatchGetProvisioningApprovalRequestsRequest) -> BatchGetProvisioningApprovalRequestsResponse,
        list: list_provisioning_approval_requests(ListProvisioningApprovalRequestsRequest) -> ListProvisioningApprovalRequestsResponse,
        watch_one: watch_provisioning_approval_request(WatchProvisioningApprovalRequestRequest) -> WatchProvisioningApprovalRequestResponse, stream WatchProvisioningApprovalRequestStream,
        watch: watch_provisioning_approval_requests(WatchProvisioningApprovalRequestsRequest) -> WatchProvisioningApprovalRequestsResponse, stream WatchProvisioningApprovalRequestsStream,
        create: create_provisioning_approval_request(CreateProvisioningApprovalRequestRequest),
        update: update_provisioning_approval_request(UpdateProvisioningApprovalRequestRequest),
        delete: delete_provisioning_approval_request(DeleteProvisioningApprovalRequestRequest),
    }

    async fn provision_device_for_approved_request(
        &self,
        request: tonic::Request<ProvisionDeviceForApprovedRequestRequest>,
    ) -> Result<tonic::Response<ProvisionedDevice>, tonic::Status> {
        let caller = self.engine.context().caller(&request)?;
        let r = request.into_inner();
        let name = self.engine.forward_name("name", &r.name)?;
        let done = self.flow.collect(&caller, &name, &r.request_id).await?;
        Ok(tonic::Response::new(provisioned_to_v1alpha2(done)))
    }
}
