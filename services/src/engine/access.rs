//! Who calls and what they may do, as the engine sees it: the [`Caller`]
//! every request carries, the [`Area`] and [`Access`] a call needs, and the
//! [`Authorizer`] that decides (IAM implements it: `iam::authorizer`; the
//! engine knows nothing of keys or role bindings).
//!
//! [`AuthenticateLayer`] authenticates every call of the resource services
//! once, before any handler runs: it puts the caller in the request and runs
//! the call inside the [`ACTOR`] scope the engine records in events, so no
//! handler can forget either. The authorization policy of the standard
//! methods is [`access_of`] plus the `authorize_*` checks below, run before
//! the engine reads the log or a projection. A caller without the right gets
//! PERMISSION_DENIED whether or not the target exists.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use fleetlog_events::{Id, ParentName, ResourceName};
use tonic::codegen::http::{HeaderValue, Request, Response};
use tonic::server::NamedService;

use super::ServiceContext;
use crate::error::ServiceError;
use fleetlog_model::{Area, Resource};

pub use fleetlog_proto::catalog::Standard;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// fleetd itself (bootstrap, the upgrade controller).
    System,
    /// The bootstrap admin: everything everywhere.
    Admin,
    /// A service account's key: the account's name.
    Account(String),
}

impl Caller {
    /// The service account, when the caller is one.
    pub fn account(&self) -> Option<&str> {
        match self {
            Caller::Account(name) => Some(name),
            _ => None,
        }
    }

    /// What events record as their actor.
    pub fn actor(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Caller::System => f.write_str("system:fleetd"),
            Caller::Admin => f.write_str("system:bootstrap-admin"),
            Caller::Account(name) => f.write_str(name),
        }
    }
}

tokio::task_local! {
    /// The caller of the command being executed, for the events' `actor`.
    pub static ACTOR: String;
}

/// Authenticates callers and decides what they may do.
pub trait Authorizer: Send + Sync + 'static {
    /// The caller an `authorization` header names (None: there is none).
    fn authenticate(&self, authorization: Option<&HeaderValue>) -> Result<Caller, ServiceError>;

    /// Whether `caller` may `access` a resource of `area` in `project`
    /// (None: a resource outside projects); `target` names what was asked
    /// for, for the message.
    fn check(
        &self,
        caller: &Caller,
        area: Area,
        access: Access,
        project: Option<&Id>,
        target: &dyn fmt::Display,
    ) -> Result<(), ServiceError>;
}

/// The access a standard method needs of its target.
pub fn access_of(method: Standard) -> Access {
    match method {
        Standard::Get
        | Standard::BatchGet
        | Standard::List
        | Standard::WatchOne
        | Standard::WatchMany => Access::Read,
        Standard::Create | Standard::Update | Standard::Delete => Access::Write,
    }
}

/// Whether `caller` is the account that acts as `resource` (a device's
/// agent): it may read the resource without a role in its project.
pub fn acts_as<R: Resource>(caller: &Caller, resource: &R) -> bool {
    caller
        .account()
        .is_some_and(|account| resource.acting_account() == Some(account))
}

impl ServiceContext {
    /// The caller [`AuthenticateLayer`] put in the request.
    pub fn caller<T>(&self, request: &tonic::Request<T>) -> Result<Caller, ServiceError> {
        request
            .extensions()
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| {
                ServiceError::Internal(
                    "the call reached its service without passing authentication".into(),
                )
            })
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

    /// Checks every name of a BatchGet (`names[i]`).
    pub fn authorize_names<R: Resource>(
        &self,
        caller: &Caller,
        names: &[String],
    ) -> Result<(), ServiceError> {
        for (i, name) in names.iter().enumerate() {
            self.authorize_name::<R>(caller, Access::Read, &format!("names[{i}]"), name)?;
        }
        Ok(())
    }

    /// Read access to one resource: the caller's role in its project, or
    /// the resource naming the caller as the account that acts as it.
    /// `fetch` reads the resource only when the role does not suffice.
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
            Err(denied @ ServiceError::PermissionDenied(_)) => match fetch().await {
                Ok(found) if acts_as(caller, &found) => Ok(()),
                _ => Err(denied),
            },
            other => other.map(|_| ()),
        }
    }
}

/// Authenticates every call of the service it wraps (see the module docs).
#[derive(Clone)]
pub struct AuthenticateLayer {
    auth: Arc<dyn Authorizer>,
}

impl AuthenticateLayer {
    pub fn new(auth: Arc<dyn Authorizer>) -> Self {
        AuthenticateLayer { auth }
    }
}

impl<S> tower_layer::Layer<S> for AuthenticateLayer {
    type Service = Authenticated<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authenticated {
            inner,
            auth: self.auth.clone(),
        }
    }
}

/// A gRPC service behind [`AuthenticateLayer`]; routed by its own name.
#[derive(Clone)]
pub struct Authenticated<S> {
    inner: S,
    auth: Arc<dyn Authorizer>,
}

impl<S: NamedService> NamedService for Authenticated<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> tower::Service<Request<B>> for Authenticated<S>
where
    S: tower::Service<Request<B>, Response = Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        match self
            .auth
            .authenticate(request.headers().get("authorization"))
        {
            Ok(caller) => {
                let actor = caller.actor();
                let timeout = grpc_timeout(request.headers().get("grpc-timeout"));
                request.extensions_mut().insert(caller);
                let call = ACTOR.scope(actor, self.inner.call(request));
                match timeout {
                    // The log stops retrying a transient state in time for
                    // the answer (UNAVAILABLE) to reach the client before
                    // its deadline.
                    Some(timeout) => Box::pin(fleetlog_events::log::answer_by(
                        tokio::time::Instant::now() + answer_within(timeout),
                        call,
                    )),
                    None => Box::pin(call),
                }
            }
            Err(refused) => {
                let response = tonic::Status::from(refused).into_http();
                Box::pin(std::future::ready(Ok(response)))
            }
        }
    }
}

/// The client's timeout from a `grpc-timeout` header (gRPC over HTTP/2:
/// at most 8 digits and a unit, `H` `M` `S` `m` `u` `n`); None when absent
/// or malformed (then only the server's own bounds apply).
pub fn grpc_timeout(header: Option<&HeaderValue>) -> Option<Duration> {
    let text = header?.to_str().ok()?;
    let (digits, unit) = text.split_at(text.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let value: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(value.checked_mul(3600)?),
        "M" => Duration::from_secs(value.checked_mul(60)?),
        "S" => Duration::from_secs(value),
        "m" => Duration::from_millis(value),
        "u" => Duration::from_micros(value),
        "n" => Duration::from_nanos(value),
        _ => return None,
    })
}

/// How long a call with the client timeout `timeout` may work: the
/// timeout less a tenth of it (at most 250 ms), the time the answer takes
/// back.
pub fn answer_within(timeout: Duration) -> Duration {
    timeout - (timeout / 10).min(Duration::from_millis(250))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_timeout_comes_from_grpc_timeout() {
        let parse = |text: &str| grpc_timeout(Some(&HeaderValue::from_str(text).expect("header")));
        assert_eq!(parse("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse("1500m"), Some(Duration::from_millis(1500)));
        assert_eq!(parse("3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse("250000u"), Some(Duration::from_millis(250)));
        assert_eq!(parse("99999999n"), Some(Duration::from_nanos(99_999_999)));
        for malformed in ["", "S", "123456789S", "10s", "1.5S", "-1S", "10"] {
            assert_eq!(parse(malformed), None, "{malformed:?}");
        }
        assert_eq!(grpc_timeout(None), None);
    }

    #[test]
    fn a_call_answers_before_its_client_gives_up() {
        assert_eq!(
            answer_within(Duration::from_secs(1)),
            Duration::from_millis(900)
        );
        assert_eq!(
            answer_within(Duration::from_secs(30)),
            Duration::from_millis(29_750)
        );
        assert_eq!(answer_within(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn reads_need_read_and_commands_write() {
        for method in [
            Standard::Get,
            Standard::BatchGet,
            Standard::List,
            Standard::WatchOne,
            Standard::WatchMany,
        ] {
            assert_eq!(access_of(method), Access::Read, "{method:?}");
        }
        for method in [Standard::Create, Standard::Update, Standard::Delete] {
            assert_eq!(access_of(method), Access::Write, "{method:?}");
        }
    }

    #[test]
    fn only_the_bound_account_acts_as_a_resource() {
        use fleetlog_proto::devices::v1::Device;
        use fleetlog_proto::devices::v1::device::Spec;
        let device = Device {
            spec: Some(Spec {
                service_account: "projects/p/serviceAccounts/dev-1".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let agent = Caller::Account("projects/p/serviceAccounts/dev-1".into());
        let other = Caller::Account("projects/p/serviceAccounts/dev-2".into());
        assert!(acts_as(&agent, &device));
        assert!(!acts_as(&other, &device));
        assert!(
            !acts_as(&Caller::Admin, &device),
            "the admin has its role instead"
        );
        assert!(!acts_as(&agent, &Device::default()), "an unbound device");
    }
}
