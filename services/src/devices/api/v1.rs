//! The gRPC services of `fleetlog.devices.v1`, the storage version: each
//! authenticates the call, hands the flow its caller and returns what the
//! flow did.

use fleetlog_proto::devices::v1::device_service_server::DeviceService;
use fleetlog_proto::devices::v1::provisioning_approval_request_service_server::ProvisioningApprovalRequestService;
use fleetlog_proto::devices::v1::provisioning_policy_service_server::ProvisioningPolicyService;
use fleetlog_proto::devices::v1::*;
use futures::StreamExt;

use crate::devices::flows::agent::{Beat, DeviceAgent};
use crate::devices::flows::provisioning::Provisioning;
use crate::engine::Engine;
use crate::engine::versioned::Versioned;
use fleetlog_model::devices::transforms::{DeviceToV1, DeviceToV1alpha2};

/// The gRPC `fleetlog.devices.v1.DeviceService`, on whatever version the
/// region is on (v1 is read-only until the region switches to it), with
/// the agent's custom actions.
pub struct DeviceApi {
    engine: Versioned<DeviceToV1alpha2, DeviceToV1>,
    agent: DeviceAgent,
}

impl DeviceApi {
    pub fn new(engine: Versioned<DeviceToV1alpha2, DeviceToV1>, agent: DeviceAgent) -> Self {
        DeviceApi { engine, agent }
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
        let done = self.agent.provision_account(&caller, &r.name, &r.request_id).await?;
        Ok(tonic::Response::new(ProvisionServiceAccountToDeviceResponse {
            device: Some(done.device),
            service_account_key: Some(done.key),
        }))
    }

    async fn remove_service_account_from_device(
        &self,
        request: tonic::Request<RemoveServiceAccountFromDeviceRequest>,
    ) -> Result<tonic::Response<Device>, tonic::Status> {
        let caller = self.engine.context().caller(&request)?;
        let r = request.into_inner();
        let device = self.agent.remove_account(&caller, &r.name, &r.request_id).await?;
        Ok(tonic::Response::new(device))
    }

    async fn heartbeat(
        &self,
        request: tonic::Request<tonic::Streaming<HeartbeatRequest>>,
    ) -> Result<tonic::Response<HeartbeatResponse>, tonic::Status> {
        let caller = self.engine.context().caller(&request)?;
        let beats = request
            .into_inner()
            .map(|beat| beat.map(|b| Beat { name: b.name, info: b.status.and_then(|s| s.device_info) }));
        let revision = self.agent.heartbeats(&caller, beats).await?;
        Ok(tonic::Response::new(HeartbeatResponse { revision }))
    }

    async fn get_device_config(
        &self,
        request: tonic::Request<GetDeviceConfigRequest>,
    ) -> Result<tonic::Response<DeviceConfig>, tonic::Status> {
        let caller = self.engine.context().caller(&request)?;
        let r = request.into_inner();
        Ok(tonic::Response::new(self.agent.config(&caller, &r.name).await?))
    }

    async fn upload_device_logs(
        &self,
        request: tonic::Request<UploadDeviceLogsRequest>,
    ) -> Result<tonic::Response<UploadDeviceLogsResponse>, tonic::Status> {
        let caller = self.engine.context().caller(&request)?;
        let r = request.into_inner();
        Ok(tonic::Response::new(self.agent.upload(&caller, &r.name, r.entries).await?))
    }

    type QueryDeviceLogsStream = std::pin::Pin<Box<
        dyn futures::Stream<Item = Result<QueryDeviceLogsResponse, tonic::Status>> + Send + 'static,
    >>;

    async fn query_device_logs(
        &self,
        request: tonic::Request<QueryDeviceLogsRequest>,
    ) -> Result<tonic::Response<Self::QueryDeviceLogsStream>, tonic::Status> {
        let caller = self.engine.context().caller(&request)?;
        let batches = self.agent.query(&caller, request.into_inner()).await?;
        Ok(tonic::Response::new(Box::pin(
            batches.map(|batch| batch.map_err(tonic::Status::from)),
        )))
    }
}

/// The gRPC `fleetlog.devices.v1.ProvisioningPolicyService`.
pub struct ProvisioningPolicyApi {
    engine: Engine<ProvisioningPolicy>,
    flow: Provisioning,
}

impl ProvisioningPolicyApi {
    pub fn new(flow: Provisioning) -> Self {
        ProvisioningPolicyApi {
            engine: flow.policies.clone(),
            flow,
        }
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
            .provision_policy_account(&caller, &r.name, &r.request_id)
            .await?;
        Ok(tonic::Response::new(ProvisionServiceAccountToProvisioningPolicyResponse {
            provisioning_policy: Some(policy),
            service_account_key: Some(key),
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
            .remove_policy_account(&caller, &r.name, &r.request_id)
            .await?;
        Ok(tonic::Response::new(policy))
    }

    async fn provision_device_via_policy(
        &self,
        request: tonic::Request<ProvisionDeviceViaPolicyRequest>,
    ) -> Result<tonic::Response<ProvisionedDevice>, tonic::Status> {
        let caller = self.engine.context().caller(&request)?;
        let r = request.into_inner();
        let done = self
            .flow
            .provision_via_policy(&caller, &r.name, r.device_status, &r.request_id)
            .await?;
        Ok(tonic::Response::new(ProvisionedDevice {
            device: Some(done.device),
            service_account_key: Some(done.key),
        }))
    }

    async fn request_provisioning_approval(
        &self,
        request: tonic::Request<RequestProvisioningApprovalRequest>,
    ) -> Result<tonic::Response<ProvisioningApprovalRequest>, tonic::Status> {
        let caller = self.engine.context().caller(&request)?;
        let r = request.into_inner();
        let filed = self
            .flow
            .request_approval(&caller, &r.name, r.device_status)
            .await?;
        Ok(tonic::Response::new(filed))
    }
}

/// The gRPC `fleetlog.devices.v1.ProvisioningApprovalRequestService`.
pub struct ProvisioningApprovalRequestApi {
    engine: Engine<ProvisioningApprovalRequest>,
    flow: Provisioning,
}

impl ProvisioningApprovalRequestApi {
    pub fn new(flow: Provisioning) -> Self {
        ProvisioningApprovalRequestApi {
            engine: flow.requests.clone(),
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
        let done = self.flow.collect(&caller, &r.name, &r.request_id).await?;
        Ok(tonic::Response::new(ProvisionedDevice {
            device: Some(done.device),
            service_account_key: Some(done.key),
        }))
    }
}
