//! The names of Meta's resources, apart from their modules: a service's
//! deployments are named under it, and a deployment names its service and
//! region, so the resource modules share these instead of importing each
//! other.

use fleetlog_events::resource_name;

resource_name! {
    /// `regions/{region}`
    pub struct RegionName {
        parent Root {}
        regions: region
    }
}

resource_name! {
    /// `services/{service}`
    pub struct ServiceName {
        parent ServiceParent {}
        services: service [domain]
    }
}

resource_name! {
    /// `services/{service}/deployments/{deployment}`; the deployment ID is
    /// the region ID.
    pub struct DeploymentName {
        parent DeploymentParent { services: service [domain] }
        deployments: deployment
    }
}
