//! IAM's resource names and fleetd's own identities.

use fleetlog_events::resource_name;

resource_name! {
    /// `projects/{project}/serviceAccounts/{service_account}`
    pub struct ServiceAccountName {
        parent ServiceAccountParent { projects: project }
        serviceAccounts: service_account
    }
}

resource_name! {
    /// `projects/{project}/serviceAccounts/{service_account}/keys/{key}`
    pub struct ServiceAccountKeyName {
        parent ServiceAccountKeyParent { projects: project, serviceAccounts: service_account }
        keys: key
    }
}

impl ServiceAccountKeyName {
    pub fn service_account(&self) -> ServiceAccountName {
        ServiceAccountName {
            project: self.project.clone(),
            service_account: self.service_account.clone(),
        }
    }
}

resource_name! {
    /// `projects/{project}/roleBindings/{role_binding}`
    pub struct RoleBindingName {
        parent RoleBindingParent { projects: project }
        roleBindings: role_binding
    }
}

/// The project of fleetd's own identities.
pub const SYSTEM_PROJECT: &str = "fleetlog-system";
/// The service account of the bootstrap admin key fleetd makes on first start.
pub const BOOTSTRAP_ACCOUNT: &str = "bootstrap-admin";
