//! `fleetlog.devices.v1alpha2` provisioning: the same policies and approval
//! requests without the region segment and with the device template's
//! logging config flat, served by transformation to v1 (where they are
//! stored: they exist in v1 form only, whichever version is current).

use fleetlog_events::{Id, resource_name};
use fleetlog_proto::devices::v1;
use fleetlog_proto::devices::v1alpha2::provisioning_approval_request_service_server::ProvisioningApprovalRequestService;
use fleetlog_proto::devices::v1alpha2::provisioning_policy_service_server::ProvisioningPolicyService;
use fleetlog_proto::devices::v1alpha2::*;

use super::provisioning::{
    ApprovalRequestName as V1RequestName, ApprovalRequestParent as V1RequestParent, Provisioned,
    Provisioning, ProvisioningPolicyName as V1PolicyName,
    ProvisioningPolicyParent as V1PolicyParent,
};
use super::v1alpha2::{Down as DeviceDown, Up as DeviceUp, key_down, same_shape};
use crate::engine::access::{Area, Caller};
use crate::engine::versioned::{Transform, Versioned};
use crate::engine::{Engine, Resource, ServiceContext};

resource_name! {
    /// `projects/{project}/provisioningPolicies/{provisioning_policy}`
    pub struct ProvisioningPolicyName {
        parent ProvisioningPolicyParent { projects: project }
        provisioningPolicies: provisioning_policy
    }
}

resource_name! {
    /// `projects/{project}/provisioningPolicies/{provisioning_policy}/provisioningApprovalRequests/{provisioning_approval_request}`
    pub struct ApprovalRequestName {
        parent ApprovalRequestParent { projects: project, provisioningPolicies: provisioning_policy }
        provisioningApprovalRequests: provisioning_approval_request
    }
}

impl Resource for ProvisioningPolicy {
    type Name = ProvisioningPolicyName;
    const FIELD: &'static str = "provisioning_policy";
    const ID_FIELD: &'static str = "provisioning_policy_id";
    const API_VERSION: &'static str = super::V1ALPHA2;
    const AREA: Area = Area::Devices;

    crate::resource_fields!();
}

impl Resource for ProvisioningApprovalRequest {
    type Name = ApprovalRequestName;
    const FIELD: &'static str = "provisioning_approval_request";
    const ID_FIELD: &'static str = "provisioning_approval_request_id";
    const API_VERSION: &'static str = super::V1ALPHA2;
    const AREA: Area = Area::Devices;

    crate::resource_fields!();
}

/// Where a device template's paths sit inside a policy.
const TEMPLATE: &str = "spec.template.";

/// v1alpha2 → v1 for policies and approval requests, in the deployment's
/// region.
#[derive(Clone, Debug)]
pub struct Up {
    region: Id,
    device: DeviceUp,
}

impl Up {
    pub fn new(region: Id) -> Self {
        Up {
            device: DeviceUp::new(region.clone()),
            region,
        }
    }

    fn device_paths(&self, path: &str) -> Vec<String> {
        self.device.paths(path)
    }
}

/// v1 → v1alpha2.
#[derive(Clone, Copy, Debug)]
pub struct Down;

/// A path of the policy: template paths move with the device's.
fn policy_paths(path: &str, device_paths: impl Fn(&str) -> Vec<String>) -> Vec<String> {
    match path.strip_prefix(TEMPLATE) {
        Some(inner) => device_paths(inner)
            .into_iter()
            .map(|p| format!("{TEMPLATE}{p}"))
            .collect(),
        None => vec![path.to_owned()],
    }
}

impl Transform for Up {
    type From = ProvisioningPolicy;
    type To = v1::ProvisioningPolicy;

    fn resource(&self, old: ProvisioningPolicy) -> v1::ProvisioningPolicy {
        let name = match old.name.parse::<ProvisioningPolicyName>() {
            Ok(name) => self.name(&name).to_string(),
            Err(_) => old.name.clone(),
        };
        v1::ProvisioningPolicy {
            name,
            display_name: old.display_name,
            description: old.description,
            metadata: old.metadata,
            spec: old.spec.map(|spec| v1::provisioning_policy::Spec {
                mode: spec.mode,
                service_account: spec.service_account,
                device_name_format: spec.device_name_format,
                identity_field_paths: spec
                    .identity_field_paths
                    .iter()
                    .flat_map(|p| self.device_paths(p))
                    .collect(),
                template: spec
                    .template
                    .map(|t| v1::provisioning_policy::spec::Template {
                        metadata: t.metadata,
                        spec: self
                            .device
                            .resource(Device {
                                spec: t.spec,
                                ..Default::default()
                            })
                            .spec,
                    }),
            }),
        }
    }

    fn name(&self, name: &ProvisioningPolicyName) -> V1PolicyName {
        V1PolicyName {
            project: name.project.clone(),
            region: self.region.clone(),
            provisioning_policy: name.provisioning_policy.clone(),
        }
    }

    fn parent(&self, parent: &ProvisioningPolicyParent) -> V1PolicyParent {
        V1PolicyParent {
            project: parent.project.clone(),
            region: self.region.clone(),
        }
    }

    fn paths(&self, path: &str) -> Vec<String> {
        policy_paths(path, |p| self.device_paths(p))
    }
}

impl Transform for Down {
    type From = v1::ProvisioningPolicy;
    type To = ProvisioningPolicy;

    fn resource(&self, new: v1::ProvisioningPolicy) -> ProvisioningPolicy {
        let name = match new.name.parse::<V1PolicyName>() {
            Ok(name) => self.name(&name).to_string(),
            Err(_) => new.name.clone(),
        };
        ProvisioningPolicy {
            name,
            display_name: new.display_name,
            description: new.description,
            metadata: new.metadata,
            spec: new.spec.map(|spec| provisioning_policy::Spec {
                mode: spec.mode,
                service_account: spec.service_account,
                device_name_format: spec.device_name_format,
                identity_field_paths: spec
                    .identity_field_paths
                    .iter()
                    .flat_map(|p| DeviceDown.paths(p))
                    .collect(),
                template: spec.template.map(|t| provisioning_policy::spec::Template {
                    metadata: t.metadata,
                    spec: DeviceDown
                        .resource(v1::Device {
                            spec: t.spec,
                            ..Default::default()
                        })
                        .spec,
                }),
            }),
        }
    }

    fn name(&self, name: &V1PolicyName) -> ProvisioningPolicyName {
        ProvisioningPolicyName {
            project: name.project.clone(),
            provisioning_policy: name.provisioning_policy.clone(),
        }
    }

    fn parent(&self, parent: &V1PolicyParent) -> ProvisioningPolicyParent {
        ProvisioningPolicyParent {
            project: parent.project.clone(),
        }
    }

    fn paths(&self, path: &str) -> Vec<String> {
        policy_paths(path, |p| DeviceDown.paths(p))
    }
}

/// v1alpha2 → v1 for approval requests.
#[derive(Clone, Debug)]
pub struct RequestUp {
    region: Id,
}

/// v1 → v1alpha2 for approval requests.
#[derive(Clone, Copy, Debug)]
pub struct RequestDown;

impl Transform for RequestUp {
    type From = ProvisioningApprovalRequest;
    type To = v1::ProvisioningApprovalRequest;

    fn resource(&self, old: ProvisioningApprovalRequest) -> v1::ProvisioningApprovalRequest {
        let mut new: v1::ProvisioningApprovalRequest = same_shape(&old);
        new.name = match old.name.parse::<ApprovalRequestName>() {
            Ok(name) => self.name(&name).to_string(),
            Err(_) => old.name,
        };
        new
    }

    fn name(&self, name: &ApprovalRequestName) -> V1RequestName {
        V1RequestName {
            project: name.project.clone(),
            region: self.region.clone(),
            provisioning_policy: name.provisioning_policy.clone(),
            provisioning_approval_request: name.provisioning_approval_request.clone(),
        }
    }

    fn parent(&self, parent: &ApprovalRequestParent) -> V1RequestParent {
        V1RequestParent {
            project: parent.project.clone(),
            region: self.region.clone(),
            provisioning_policy: parent.provisioning_policy.clone(),
        }
    }

    fn paths(&self, path: &str) -> Vec<String> {
        vec![path.to_owned()]
    }
}

impl Transform for RequestDown {
    type From = v1::ProvisioningApprovalRequest;
    type To = ProvisioningApprovalRequest;

    fn resource(&self, new: v1::ProvisioningApprovalRequest) -> ProvisioningApprovalRequest {
        let mut old: ProvisioningApprovalRequest = same_shape(&new);
        if let Ok(name) = new.name.parse::<V1RequestName>() {
            old.name = self.name(&name).to_string();
        }
        if let Some(status) = old.status.as_mut()
            && let Ok(device) = status.device.parse::<super::device::DeviceName>()
        {
            status.device = DeviceDown.name(&device).to_string();
        }
        old
    }

    fn name(&self, name: &V1RequestName) -> ApprovalRequestName {
        ApprovalRequestName {
            project: name.project.clone(),
            provisioning_policy: name.provisioning_policy.clone(),
            provisioning_approval_request: name.provisioning_approval_request.clone(),
        }
    }

    fn parent(&self, parent: &V1RequestParent) -> ApprovalRequestParent {
        ApprovalRequestParent {
            project: parent.project.clone(),
            provisioning_policy: parent.provisioning_policy.clone(),
        }
    }

    fn paths(&self, path: &str) -> Vec<String> {
        vec![path.to_owned()]
    }
}

/// A provisioned device as v1alpha2 returns it.
fn provisioned_down(done: Provisioned) -> ProvisionedDevice {
    ProvisionedDevice {
        device: Some(DeviceDown.resource(done.device)),
        service_account_key: Some(key_down(done.key)),
    }
}

/// The gRPC `fleetlog.devices.v1alpha2.ProvisioningPolicyService`.
pub struct ProvisioningPolicyApi {
    engine: Versioned<Up, Down>,
    v1: super::provisioning::ProvisioningPolicyApi,
}

impl ProvisioningPolicyApi {
    pub fn new(ctx: &std::sync::Arc<ServiceContext>, flow: Provisioning) -> Self {
        ProvisioningPolicyApi {
            engine: Versioned::new(
                Engine::new(ctx.clone()),
                Engine::new(ctx.clone()),
                Up::new(ctx.region.clone()),
                Down,
                false,
            ),
            v1: super::provisioning::ProvisioningPolicyApi::new(flow),
        }
    }

    /// A v1alpha2 policy name as v1 names it (a malformed one stays as
    /// sent: the v1 service reports it after authenticating the caller).
    fn v1_name(&self, name: &str) -> String {
        self.engine
            .forward_name("name", name)
            .unwrap_or_else(|_| name.to_owned())
    }
}

/// Calls the v1 service in process with `message`, as the same caller: the
/// metadata and the [`Caller`] the authentication layer put in the request
/// (the in-process call does not pass that layer again).
fn v1_request<T, U>(request: &tonic::Request<T>, message: U) -> tonic::Request<U> {
    let mut forwarded = tonic::Request::new(message);
    *forwarded.metadata_mut() = request.metadata().clone();
    if let Some(caller) = request.extensions().get::<Caller>() {
        forwarded.extensions_mut().insert(caller.clone());
    }
    forwarded
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
        use fleetlog_proto::devices::v1::provisioning_policy_service_server::ProvisioningPolicyService as V1;
        let message = v1::ProvisionServiceAccountToProvisioningPolicyRequest {
            name: self.v1_name(&request.get_ref().name),
            request_id: request.get_ref().request_id.clone(),
        };
        let done = V1::provision_service_account_to_provisioning_policy(&self.v1, v1_request(&request, message))
            .await?
            .into_inner();
        Ok(tonic::Response::new(ProvisionServiceAccountToProvisioningPolicyResponse {
            provisioning_policy: done.provisioning_policy.map(|p| Down.resource(p)),
            service_account_key: done.service_account_key.map(key_down),
        }))
    }

    async fn remove_service_account_from_provisioning_policy(
        &self,
        request: tonic::Request<RemoveServiceAccountFromProvisioningPolicyRequest>,
    ) -> Result<tonic::Response<ProvisioningPolicy>, tonic::Status> {
        use fleetlog_proto::devices::v1::provisioning_policy_service_server::ProvisioningPolicyService as V1;
        let message = v1::RemoveServiceAccountFromProvisioningPolicyRequest {
            name: self.v1_name(&request.get_ref().name),
            request_id: request.get_ref().request_id.clone(),
        };
        let done = V1::remove_service_account_from_provisioning_policy(&self.v1, v1_request(&request, message))
            .await?
            .into_inner();
        Ok(tonic::Response::new(Down.resource(done)))
    }

    async fn provision_device_via_policy(
        &self,
        request: tonic::Request<ProvisionDeviceViaPolicyRequest>,
    ) -> Result<tonic::Response<ProvisionedDevice>, tonic::Status> {
        use fleetlog_proto::devices::v1::provisioning_policy_service_server::ProvisioningPolicyService as V1;
        let r = request.get_ref();
        let message = v1::ProvisionDeviceViaPolicyRequest {
            name: self.v1_name(&r.name),
            device_status: r.device_status.as_ref().map(same_shape),
            request_id: r.request_id.clone(),
        };
        let done = V1::provision_device_via_policy(&self.v1, v1_request(&request, message))
            .await?
            .into_inner();
        Ok(tonic::Response::new(ProvisionedDevice {
            device: done.device.map(|d| DeviceDown.resource(d)),
            service_account_key: done.service_account_key.map(key_down),
        }))
    }

    async fn request_provisioning_approval(
        &self,
        request: tonic::Request<RequestProvisioningApprovalRequest>,
    ) -> Result<tonic::Response<ProvisioningApprovalRequest>, tonic::Status> {
        use fleetlog_proto::devices::v1::provisioning_policy_service_server::ProvisioningPolicyService as V1;
        let r = request.get_ref();
        let message = v1::RequestProvisioningApprovalRequest {
            name: self.v1_name(&r.name),
            device_status: r.device_status.as_ref().map(same_shape),
            request_id: r.request_id.clone(),
        };
        let filed = V1::request_provisioning_approval(&self.v1, v1_request(&request, message))
            .await?
            .into_inner();
        Ok(tonic::Response::new(RequestDown.resource(filed)))
    }
}

/// The gRPC `fleetlog.devices.v1alpha2.ProvisioningApprovalRequestService`.
pub struct ProvisioningApprovalRequestApi {
    engine: Versioned<RequestUp, RequestDown>,
    flow: Provisioning,
}

impl ProvisioningApprovalRequestApi {
    pub fn new(ctx: &std::sync::Arc<ServiceContext>, flow: Provisioning) -> Self {
        ProvisioningApprovalRequestApi {
            engine: Versioned::new(
                Engine::new(ctx.clone()),
                Engine::new(ctx.clone()),
                RequestUp {
                    region: ctx.region.clone(),
                },
                RequestDown,
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
        let done = self.flow.collect(&caller, &name, &r.request_id)
            .await?;
        Ok(tonic::Response::new(provisioned_down(done)))
    }
}
