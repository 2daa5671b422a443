//! Authorization of the standard methods, before they touch the log or a
//! projection: every name and parent a request carries is parsed with the
//! API's own name type and checked against the caller's role in its
//! project. A caller without the right gets PERMISSION_DENIED whether or
//! not the target exists.

use std::future::Future;

use fleetlog_events::{ParentName, ResourceName};

use super::{Resource, ServiceContext};
use crate::auth::{Access, Caller};
use crate::error::ServiceError;

impl ServiceContext {
    /// The caller a request's credentials name.
    pub fn caller<T>(&self, request: &tonic::Request<T>) -> Result<Caller, ServiceError> {
        self.auth.authenticate(request.metadata())
    }

    /// Authenticates a custom action's request and checks `access` to the
    /// `R` its `name` field names; returns the caller.
    pub fn authorize_request<R: Resource, T>(
        &self,
        request: &tonic::Request<T>,
        access: Access,
        name: impl FnOnce(&T) -> &str,
    ) -> Result<Caller, ServiceError> {
        let caller = self.caller(request)?;
        self.authorize_name::<R>(&caller, access, "name", name(request.get_ref()))?;
        Ok(caller)
    }

    /// Checks that `caller` may `access` the `R` named `text` (request
    /// field `field`).
    pub fn authorize_name<R: Resource>(
        &self,
        caller: &Caller,
        access: Access,
        field: &str,
        text: &str,
    ) -> Result<R::Name, ServiceError> {
        let name: R::Name = text
            .parse()
            .map_err(|e: fleetlog_events::NameError| ServiceError::invalid(field, e.to_string()))?;
        self.auth
            .check(caller, R::AREA, access, name.project(), &name)?;
        Ok(name)
    }

    /// Checks that `caller` may `access` the `R`s under `text`.
    pub fn authorize_parent<R: Resource>(
        &self,
        caller: &Caller,
        access: Access,
        text: &str,
    ) -> Result<(), ServiceError> {
        let parent: <R::Name as ResourceName>::Parent =
            text.parse().map_err(|e: fleetlog_events::NameError| {
                ServiceError::invalid("parent", e.to_string())
            })?;
        let what = format!(
            "{} under {}",
            R::Name::COLLECTION,
            if text.is_empty() { "/" } else { text }
        );
        self.auth
            .check(caller, R::AREA, access, parent.project(), &what)
    }

    /// Read access to one resource: the caller's role in its project, or
    /// the resource naming the caller as the account that acts as it (a
    /// device's agent reading its own device). `fetch` reads the resource
    /// only when the role does not suffice.
    pub async fn authorize_read_one<R, F, Fut>(
        &self,
        caller: &Caller,
        field: &str,
        text: &str,
        fetch: F,
    ) -> Result<(), ServiceError>
    where
        R: Resource,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<R, ServiceError>>,
    {
        match self.authorize_name::<R>(caller, Access::Read, field, text) {
            Err(denied @ ServiceError::PermissionDenied(_)) => {
                let Some(account) = caller.account() else {
                    return Err(denied);
                };
                match fetch().await {
                    Ok(found) if found.acting_account() == Some(account.to_string().as_str()) => {
                        Ok(())
                    }
                    _ => Err(denied),
                }
            }
            other => other.map(|_| ()),
        }
    }
}
