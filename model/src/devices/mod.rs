//! What Devices' resources are: their names, their declarations for the
//! engine (`impl Resource`, validation), which service account acts as
//! them, the v1 ⇄ v1alpha2 transforms and the pure decisions of
//! provisioning. The service's flows and API (in `fleetlog-services`)
//! build on this.

pub mod acts_as;
pub mod device;
pub mod names;
pub mod provisioning;
pub mod transforms;

use crate::convert::VersionConverter;
use crate::registry::Registry;

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
