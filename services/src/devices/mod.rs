//! The Devices service, in three layers whose dependencies point down
//! only: `api` (the tonic services of each API version) → `flows` (what
//! the custom actions do, on v1 types) → the model (names, resource
//! declarations, transforms, pure decisions: `fleetlog_model::devices`,
//! its own crate). This module wires them together.

pub mod api;
pub mod flows;

use std::sync::Arc;

use crate::engine::versioned::Versioned;
use crate::engine::{Engine, ServiceContext};
use fleetlog_model::devices::transforms::{DeviceToV1, DeviceToV1alpha2};
use flows::agent::DeviceAgent;
use flows::logs::DeviceLogs;
use flows::provisioning::Provisioning;

pub use fleetlog_model::devices::{
    DEFAULT_VERSION, SERVICE, SERVICE_DOMAIN, V1, V1ALPHA2, VERSIONS, converter, resources,
};

/// Every gRPC service of Devices.
pub struct Apis {
    pub device_v1: api::v1::DeviceApi,
    pub device_v1alpha2: api::v1alpha2::DeviceApi,
    pub policies: api::v1::ProvisioningPolicyApi,
    pub approval_requests: api::v1::ProvisioningApprovalRequestApi,
    pub policies_v1alpha2: api::v1alpha2::ProvisioningPolicyApi,
    pub approval_requests_v1alpha2: api::v1alpha2::ProvisioningApprovalRequestApi,
}

/// The gRPC services of every API version, sharing one context; `iam`
/// makes the agents' service accounts.
pub fn apis(
    ctx: &Arc<ServiceContext>,
    iam: &Arc<ServiceContext>,
    logs: DeviceLogs,
    heartbeat_timeout: std::time::Duration,
) -> Apis {
    let region = ctx.region.clone();
    let v1 = Versioned::new(
        Engine::new(ctx.clone()),
        Engine::new(ctx.clone()),
        DeviceToV1alpha2,
        DeviceToV1::new(region.clone()),
        true,
    );
    let old = Versioned::new(
        Engine::new(ctx.clone()),
        Engine::new(ctx.clone()),
        DeviceToV1::new(region),
        DeviceToV1alpha2,
        false,
    );
    let flow = Provisioning::new(ctx.clone(), iam.clone());
    let agent = DeviceAgent::new(flow.clone(), logs, heartbeat_timeout);
    Apis {
        device_v1: api::v1::DeviceApi::new(v1, agent.clone()),
        device_v1alpha2: api::v1alpha2::DeviceApi::new(old, agent),
        policies: api::v1::ProvisioningPolicyApi::new(flow.clone()),
        approval_requests: api::v1::ProvisioningApprovalRequestApi::new(flow.clone()),
        policies_v1alpha2: api::v1alpha2::ProvisioningPolicyApi::new(ctx, flow.clone()),
        approval_requests_v1alpha2: api::v1alpha2::ProvisioningApprovalRequestApi::new(ctx, flow),
    }
}
