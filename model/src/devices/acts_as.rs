//! Which service account acts as a resource: a device's agent, a policy's
//! registering agents.

use fleetlog_proto::devices::v1::{Device, ProvisioningPolicy};

use crate::Resource;

/// A resource a service account acts for (a device's agent, a policy's
/// registering agents): `spec.service_account` names it.
pub trait ActsAs: Resource {
    fn bound_account(&self) -> &str;
    fn bound_account_mut(&mut self) -> &mut String;
}

impl ActsAs for Device {
    fn bound_account(&self) -> &str {
        self.spec
            .as_ref()
            .map_or("", |s| s.service_account.as_str())
    }

    fn bound_account_mut(&mut self) -> &mut String {
        &mut self
            .spec
            .get_or_insert_with(Default::default)
            .service_account
    }
}

impl ActsAs for ProvisioningPolicy {
    fn bound_account(&self) -> &str {
        self.spec
            .as_ref()
            .map_or("", |s| s.service_account.as_str())
    }

    fn bound_account_mut(&mut self) -> &mut String {
        &mut self
            .spec
            .get_or_insert_with(Default::default)
            .service_account
    }
}

/// Only the provisioning actions bind a service account: Create and Update
/// keep the one `current` has (none on create).
pub fn keep_bound_account<R: ActsAs>(resource: &mut R, current: Option<&R>) {
    let kept = current
        .map(|c| c.bound_account().to_owned())
        .unwrap_or_default();
    if kept != resource.bound_account() {
        *resource.bound_account_mut() = kept;
    }
}
