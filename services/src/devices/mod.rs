//! The Devices service, in three layers whose dependencies point down
//! only: `api` (the tonic services of each API version) → `flows` (what
//! the custom actions do, on v1 types) → `model` (names, resource
//! declarations, transforms, pure decisions). This module wires them
//! together.

pub mod api;
pub mod flows;
pub mod model;

use std::sync::Arc;

use crate::engine::convert::VersionConverter;
use crate::engine::registry::Registry;
use crate::engine::versioned::Versioned;
use crate::engine::{Engine, ServiceContext};
use flows::agent::DeviceAgent;
use flows::logs::DeviceLogs;
use flows::provisioning::Provisioning;
use model::transforms::{DeviceToV1, DeviceToV1alpha2};

pub use model::{V1, V1ALPHA2};

/// The service token in stream names and subjects.
pub const SERVICE: &str = "devices";
/// The service's name in Meta.
pub const SERVICE_DOMAIN: &str = "devices.fleetlog.io";
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
