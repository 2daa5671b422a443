//! The resource services one fleetd serves: each behind routing
//! ([`RouteLayer`]) and authentication ([`AuthenticateLayer`]), recorded by name for the health service and
//! held against the catalog, so a service the proto declares (and
//! `/openapi.json` and fleetctl advertise) cannot be left unserved.

use std::collections::BTreeSet;
use std::convert::Infallible;

use fleetlog_proto::catalog::Catalog;
use tonic::body::Body;
use tonic::codegen::http::{Request, Response};
use tonic::server::NamedService;
use tonic::service::Routes;

use crate::engine::access::AuthenticateLayer;
use crate::routing::RouteLayer;

/// The routes being built and the services added to them.
pub struct Served {
    routes: Routes,
    names: Vec<&'static str>,
    route: RouteLayer,
    authenticate: AuthenticateLayer,
}

impl Served {
    /// `routes` holds what needs no credentials (health, reflection).
    pub fn new(routes: Routes, route: RouteLayer, authenticate: AuthenticateLayer) -> Self {
        Served {
            routes,
            names: Vec::new(),
            route,
            authenticate,
        }
    }

    /// Serves `server` behind authentication, its commands for another
    /// region's resources routed there first (the owner authenticates
    /// them).
    pub fn add<S>(&mut self, server: S)
    where
        S: tower::Service<Request<Body>, Response = Response<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        use tower_layer::Layer;
        self.names.push(S::NAME);
        let routes = std::mem::take(&mut self.routes);
        self.routes = routes.add_service(self.route.layer(self.authenticate.layer(server)));
    }

    /// The full names of the services added (`fleetlog.devices.v1.DeviceService`).
    pub fn names(&self) -> &[&'static str] {
        &self.names
    }

    /// The catalog's services that were not added.
    pub fn missing_from(&self, catalog: &Catalog) -> Vec<String> {
        catalog_services(catalog)
            .into_iter()
            .filter(|name| !self.names.contains(&name.as_str()))
            .collect()
    }

    pub fn into_routes(self) -> Routes {
        self.routes
    }
}

/// Every service that declares a resource or an action.
pub fn catalog_services(catalog: &Catalog) -> BTreeSet<String> {
    let resources = catalog
        .resources
        .iter()
        .map(|r| r.service.full_name().to_owned());
    let actions = catalog
        .actions
        .iter()
        .map(|a| a.method.parent_service().full_name().to_owned());
    resources.chain(actions).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetlog_proto::catalog::CATALOG;

    #[test]
    fn the_catalog_names_every_service_of_every_package() {
        let services = catalog_services(&CATALOG);
        for expected in [
            "fleetlog.devices.v1.DeviceService",
            "fleetlog.devices.v1alpha2.ProvisioningApprovalRequestService",
            "fleetlog.iam.v1.RoleBindingService",
            "fleetlog.meta.v1.DeploymentService",
        ] {
            assert!(services.contains(expected), "{expected} in {services:?}");
        }
        assert_eq!(services.len(), 11);
    }
}
