//! The Devices service: its resources' declarations, their API versions
//! and custom actions.

pub mod agent;
pub mod device;
pub mod logs;
pub mod provisioning;
pub mod v1alpha2;
pub mod v1alpha2_provisioning;

use std::sync::Arc;

use crate::engine::convert::VersionConverter;
use crate::engine::registry::Registry;
use crate::engine::versioned::Versioned;
use crate::engine::{Engine, ServiceContext};

/// The service token in stream names and subjects.
pub const SERVICE: &str = "devices";
/// The service's name in Meta.
pub const SERVICE_DOMAIN: &str = "devices.fleetlog.io";
pub const V1ALPHA2: &str = "v1alpha2";
pub const V1: &str = "v1";
/// Every API version, oldest first.
pub const VERSIONS: &[&str] = &[V1ALPHA2, V1];
/// The version a new region starts on.
pub const DEFAULT_VERSION: &str = V1;

/// Every Devices resource type: v1 is the storage version, v1alpha2 is
/// served by converting to and from it.
pub fn resources() -> Registry {
    use fleetlog_proto::devices::{v1, v1alpha2};
    Registry::new()
        .stored::<v1::Device>()
        .stored::<v1::ProvisioningPolicy>()
        .stored::<v1::ProvisioningApprovalRequest>()
        .older::<v1alpha2::Device>()
        .older::<v1alpha2::ProvisioningPolicy>()
        .older::<v1alpha2::ProvisioningApprovalRequest>()
}

/// What a projection of `version` holds: every Devices resource type,
/// converted from whatever version its events were written in.
pub fn converter(version: &str) -> VersionConverter {
    resources().converter(version)
}

/// Every gRPC service of Devices.
pub struct Apis {
    pub device_v1: device::DeviceApi,
    pub device_v1alpha2: v1alpha2::DeviceApi,
    pub policies: provisioning::ProvisioningPolicyApi,
    pub approval_requests: provisioning::ProvisioningApprovalRequestApi,
    pub policies_v1alpha2: v1alpha2_provisioning::ProvisioningPolicyApi,
    pub approval_requests_v1alpha2: v1alpha2_provisioning::ProvisioningApprovalRequestApi,
}

/// The gRPC services of every API version, sharing one context; `iam`
/// makes the agents' service accounts.
pub fn apis(
    ctx: &Arc<ServiceContext>,
    iam: &Arc<ServiceContext>,
    logs: logs::DeviceLogs,
    heartbeat_timeout: std::time::Duration,
) -> Apis {
    let region = ctx.region.clone();
    let v1 = Versioned::new(
        Engine::new(ctx.clone()),
        Engine::new(ctx.clone()),
        v1alpha2::Down,
        v1alpha2::Up::new(region.clone()),
        true,
    );
    let old = Versioned::new(
        Engine::new(ctx.clone()),
        Engine::new(ctx.clone()),
        v1alpha2::Up::new(region),
        v1alpha2::Down,
        false,
    );
    let flow = provisioning::Provisioning::new(ctx.clone(), iam.clone());
    let agent = agent::DeviceAgent::new(flow.clone(), logs, heartbeat_timeout);
    Apis {
        device_v1: device::DeviceApi::new(v1, agent.clone()),
        device_v1alpha2: v1alpha2::DeviceApi::new(old, agent),
        policies: provisioning::ProvisioningPolicyApi::new(flow.clone()),
        approval_requests: provisioning::ProvisioningApprovalRequestApi::new(flow.clone()),
        policies_v1alpha2: v1alpha2_provisioning::ProvisioningPolicyApi::new(ctx, flow.clone()),
        approval_requests_v1alpha2: v1alpha2_provisioning::ProvisioningApprovalRequestApi::new(
            ctx, flow,
        ),
    }
}
