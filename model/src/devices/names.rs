//! Devices' resource names, in one module so the resource declarations,
//! the transforms and the flows share them without importing each other.
//! v1 names are regional; [`v1alpha2`] holds the older version's, which are
//! not.

use fleetlog_events::resource_name;

resource_name! {
    /// `projects/{project}/regions/{region}/devices/{device}`
    pub struct DeviceName {
        parent DeviceParent { projects: project, regions: region }
        devices: device
    }
}

resource_name! {
    /// `projects/{project}/regions/{region}/provisioningPolicies/{provisioning_policy}`
    pub struct ProvisioningPolicyName {
        parent ProvisioningPolicyParent { projects: project, regions: region }
        provisioningPolicies: provisioning_policy
    }
}

resource_name! {
    /// `…/provisioningPolicies/{provisioning_policy}/provisioningApprovalRequests/{provisioning_approval_request}`
    pub struct ApprovalRequestName {
        parent ApprovalRequestParent { projects: project, regions: region, provisioningPolicies: provisioning_policy }
        provisioningApprovalRequests: provisioning_approval_request
    }
}

impl ApprovalRequestName {
    pub fn policy(&self) -> ProvisioningPolicyName {
        ProvisioningPolicyName {
            project: self.project.clone(),
            region: self.region.clone(),
            provisioning_policy: self.provisioning_policy.clone(),
        }
    }
}

/// `fleetlog.devices.v1alpha2` names: the v1 ones without the region
/// segment (API.md, "Devices v1alpha2").
pub mod v1alpha2 {
    use fleetlog_events::resource_name;

    resource_name! {
        /// `projects/{project}/devices/{device}`
        pub struct DeviceName {
            parent DeviceParent { projects: project }
            devices: device
        }
    }

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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_are_regional() {
        let name: DeviceName = "projects/p0/regions/eu1/devices/d0".parse().expect("valid");
        assert_eq!(name.region.as_str(), "eu1");
        assert!("projects/p0/devices/d0".parse::<DeviceName>().is_err());
    }
}
