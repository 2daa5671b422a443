//! Routing (docs/adr/0007): a command for a resource another region owns
//! is forwarded as it came — credentials, `request_id`, deadline — to that
//! region's endpoint, and its answer is returned as if served here. The
//! owning region decides, writes and answers; this one never writes
//! another region's events (over a leafnode an append would land in the
//! owner's stream past its checks).
//!
//! Which calls are commands and where their resource's name is comes from
//! the catalog: Create (`parent`), Update (`{resource}.name`), Delete and
//! every unary custom action (`name`). Who owns a name: Meta's and IAM's
//! resources belong to the leading region; any other resource to the
//! region its name is under (`…/regions/{region}/…`), or to this one when
//! its name has no region (a v1alpha2 name maps to the serving region).
//! A region's endpoint is its Devices Deployment's `regional_domain`, read
//! from Meta (a read copy outside the leading region). Queries and
//! streams never leave the region.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use fleetlog_events::Id;
use fleetlog_projections::Projection;
use fleetlog_proto::catalog::Catalog;
use fleetlog_proto::meta::v1::Deployment;
use http_body_util::BodyExt;
use prost_reflect::{DynamicMessage, MessageDescriptor, Value};
use tonic::body::Body;
use tonic::codegen::http::{HeaderValue, Request, Response, Uri};
use tonic::server::NamedService;
use tonic::transport::Channel;

use crate::engine::access::{answer_within, grpc_timeout};
use fleetlog_model::meta::deployment::deployment_name;

/// Marks a forwarded call, so a call that arrives forwarded and is not
/// owned here either (two regions each pointing at the other) is refused
/// instead of bouncing.
pub const ROUTED_FROM_HEADER: &str = "fleetlog-routed-from";

/// How long a forwarded call may take when its client set no deadline.
const DEFAULT_FORWARD_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a command's resource name is in its request.
#[derive(Clone, Debug)]
struct Command {
    input: MessageDescriptor,
    /// The field path to the name (`["parent"]`, `["device", "name"]`).
    field: Vec<String>,
    /// Whether the field is a parent (every region in it counts) rather
    /// than the resource's own name (its last region segment is an
    /// ancestor only when something follows it).
    parent: bool,
    /// Meta's and IAM's resources: owned by the leading region.
    global: bool,
}

/// Which region owns a command's resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Owner {
    Here,
    Region(String),
}

/// The region a resource name (or a parent) is under: the ID after the
/// last `regions` collection that is an ancestor of the resource.
pub fn region_of(name: &str, is_parent: bool) -> Option<&str> {
    let segments: Vec<&str> = name.split('/').collect();
    // A resource's own name ends with its collection and ID: a region
    // pair there is the Region resource itself, not an ancestor.
    let ancestors = if is_parent {
        segments.len()
    } else {
        segments.len().saturating_sub(2)
    };
    segments[..ancestors]
        .chunks(2)
        .filter(|pair| pair.len() == 2 && pair[0] == "regions")
        .map(|pair| pair[1])
        .next_back()
}

/// Every command of the catalog, by gRPC path.
fn commands(catalog: &Catalog, global_services: &[&str]) -> HashMap<String, Command> {
    let path_of = |method: &prost_reflect::MethodDescriptor| {
        format!("/{}/{}", method.parent_service().full_name(), method.name())
    };
    let is_global = |package: &str| {
        global_services
            .iter()
            .any(|service| package.starts_with(&format!("fleetlog.{service}.")))
    };
    let mut table = HashMap::new();
    for resource in &catalog.resources {
        let global = is_global(resource.message.package_name());
        let methods = &resource.methods;
        let standard = [
            (&methods.create, vec!["parent".to_owned()], true),
            (
                &methods.update,
                vec![resource.body_field(), "name".to_owned()],
                false,
            ),
            (&methods.delete, vec!["name".to_owned()], false),
        ];
        for (method, field, parent) in standard {
            if let Some(method) = method {
                table.insert(
                    path_of(method),
                    Command {
                        input: method.input(),
                        field,
                        parent,
                        global,
                    },
                );
            }
        }
    }
    for action in &catalog.actions {
        let method = &action.method;
        if method.is_client_streaming() || method.is_server_streaming() {
            continue;
        }
        table.insert(
            path_of(method),
            Command {
                input: method.input(),
                field: vec!["name".to_owned()],
                parent: false,
                global: is_global(method.parent_service().package_name()),
            },
        );
    }
    table
}

/// The string at `path` in `message`, if every step is set.
fn string_at(message: &DynamicMessage, path: &[String]) -> Option<String> {
    let (last, steps) = path.split_last()?;
    let mut current = message.clone();
    for step in steps {
        match current.get_field_by_name(step)?.as_ref() {
            Value::Message(inner) => current = inner.clone(),
            _ => return None,
        }
    }
    match current.get_field_by_name(last)?.as_ref() {
        Value::String(text) => Some(text.clone()),
        _ => None,
    }
}

/// The message of a unary gRPC request body: one uncompressed frame.
fn unframe(body: &[u8]) -> Option<&[u8]> {
    let (&compressed, rest) = body.split_first()?;
    if compressed != 0 || rest.len() < 4 {
        return None;
    }
    let (length, message) = rest.split_at(4);
    let length = u32::from_be_bytes(length.try_into().ok()?) as usize;
    (message.len() == length).then_some(message)
}

/// Decides and forwards; shared by every routed service of a process.
pub struct Router {
    commands: HashMap<String, Command>,
    region: Id,
    leading: Id,
    /// Meta's active projection (a read copy outside the leading region):
    /// where each region's endpoint is.
    meta: Arc<ArcSwap<Projection>>,
    max_request_bytes: usize,
    channels: Mutex<HashMap<String, Channel>>,
}

impl Router {
    pub fn new(
        catalog: &Catalog,
        global_services: &[&str],
        region: Id,
        leading: Id,
        meta: Arc<ArcSwap<Projection>>,
        max_request_bytes: usize,
    ) -> Arc<Self> {
        Arc::new(Router {
            commands: commands(catalog, global_services),
            region,
            leading,
            meta,
            max_request_bytes,
            channels: Mutex::default(),
        })
    }

    /// Who owns the resource of the command at `path` with request `body`
    /// (a gRPC frame); None when `path` is no command or the body cannot
    /// be read here (the service itself then answers it).
    fn owner(&self, path: &str, body: &[u8]) -> Option<Owner> {
        let command = self.commands.get(path)?;
        if command.global {
            return Some(self.owner_is(self.leading.as_str()));
        }
        let message = DynamicMessage::decode(command.input.clone(), unframe(body)?).ok()?;
        let name = string_at(&message, &command.field)?;
        Some(match region_of(&name, command.parent) {
            Some(region) => self.owner_is(region),
            None => Owner::Here,
        })
    }

    fn owner_is(&self, region: &str) -> Owner {
        if region == self.region.as_str() {
            Owner::Here
        } else {
            Owner::Region(region.to_owned())
        }
    }

    /// Where `region`'s fleetd answers: its Devices Deployment's
    /// `regional_domain` in Meta.
    fn endpoint(&self, region: &str) -> Result<String, tonic::Status> {
        let unknown = || {
            tonic::Status::failed_precondition(format!(
                "regions/{region} has no deployment in Meta, so no endpoint to send the command to: \
                 add its Deployment in the leading region ({})",
                self.leading
            ))
        };
        let id = Id::parse(region).map_err(|_| unknown())?;
        let name = deployment_name(crate::devices::SERVICE_DOMAIN, &id)
            .map_err(|e| tonic::Status::internal(e.to_string()))?
            .to_string();
        let projection = self.meta.load_full();
        let deployment = fleetlog_model::stored::stored::<Deployment>(&projection, &name)
            .map_err(|e| tonic::Status::internal(format!("reading {name}: {e}")))?
            .ok_or_else(unknown)?;
        if deployment.regional_domain.is_empty() {
            return Err(tonic::Status::failed_precondition(format!(
                "{name} has no regional_domain: set it to the host:port of region {region}'s fleetd"
            )));
        }
        Ok(if deployment.regional_domain.contains("://") {
            deployment.regional_domain
        } else {
            format!("http://{}", deployment.regional_domain)
        })
    }

    fn channel(&self, endpoint: &str) -> Result<Channel, tonic::Status> {
        let mut channels = self
            .channels
            .lock()
            .map_err(|_| tonic::Status::internal("the routing channels' lock is poisoned"))?;
        if let Some(channel) = channels.get(endpoint) {
            return Ok(channel.clone());
        }
        let channel = Channel::from_shared(endpoint.to_owned())
            .map_err(|e| {
                tonic::Status::failed_precondition(format!(
                    "the endpoint {endpoint} in Meta is not a URL: {e}"
                ))
            })?
            .connect_timeout(Duration::from_secs(2))
            .connect_lazy();
        channels.insert(endpoint.to_owned(), channel.clone());
        Ok(channel)
    }

    /// Sends `request` to `region` and returns its answer, or UNAVAILABLE
    /// naming the region before the client's deadline.
    async fn forward(&self, region: &str, mut request: Request<Body>) -> Response<Body> {
        if request.headers().contains_key(ROUTED_FROM_HEADER) {
            return tonic::Status::failed_precondition(format!(
                "this command was forwarded to region {} but belongs to region {region}: \
                 the regions disagree on who owns it (check each Deployment's regional_domain)",
                self.region
            ))
            .into_http();
        }
        let endpoint = match self.endpoint(region) {
            Ok(endpoint) => endpoint,
            Err(status) => return status.into_http(),
        };
        let channel = match self.channel(&endpoint) {
            Ok(channel) => channel,
            Err(status) => return status.into_http(),
        };
        let within = grpc_timeout(request.headers().get("grpc-timeout"))
            .map_or(DEFAULT_FORWARD_TIMEOUT, answer_within);
        if let Ok(from) = HeaderValue::from_str(self.region.as_str()) {
            request.headers_mut().insert(ROUTED_FROM_HEADER, from);
        }
        // The channel sets scheme and authority; the path stays.
        if let Some(path) = request.uri().path_and_query().cloned() {
            *request.uri_mut() = Uri::from(path);
        }
        let sent = tower::ServiceExt::oneshot(channel, request);
        match tokio::time::timeout(within, sent).await {
            Ok(Ok(response)) => response.map(Body::new),
            Ok(Err(err)) => tonic::Status::unavailable(format!(
                "region {region} cannot be reached at {endpoint}: {err}; retry with the same request_id"
            ))
            .into_http(),
            Err(_) => tonic::Status::unavailable(format!(
                "region {region} did not answer at {endpoint} within {within:?}; retry with the same request_id"
            ))
            .into_http(),
        }
    }
}

/// Routes the calls of the service it wraps (see the module docs).
#[derive(Clone)]
pub struct RouteLayer {
    router: Arc<Router>,
}

impl RouteLayer {
    pub fn new(router: Arc<Router>) -> Self {
        RouteLayer { router }
    }
}

impl<S> tower_layer::Layer<S> for RouteLayer {
    type Service = Routed<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Routed {
            inner,
            router: self.router.clone(),
        }
    }
}

/// A gRPC service behind [`RouteLayer`]; routed by its own name.
#[derive(Clone)]
pub struct Routed<S> {
    inner: S,
    router: Arc<Router>,
}

impl<S: NamedService> NamedService for Routed<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> tower::Service<Request<Body>> for Routed<S>
where
    S: tower::Service<Request<Body>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        if !self.router.commands.contains_key(request.uri().path()) {
            return Box::pin(self.inner.call(request));
        }
        // The service polled ready is the one that serves this call.
        let ready = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, ready);
        let router = self.router.clone();
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let limited = http_body_util::Limited::new(body, router.max_request_bytes + 5);
            let bytes: Bytes = match limited.collect().await {
                Ok(collected) => collected.to_bytes(),
                // OUT_OF_RANGE, as the service's own decoding limit answers.
                Err(err) => {
                    return Ok(tonic::Status::out_of_range(format!(
                        "the request is larger than max_request_bytes ({} bytes) or unreadable: {err}",
                        router.max_request_bytes
                    ))
                    .into_http());
                }
            };
            let owner = router.owner(parts.uri.path(), &bytes);
            let request = Request::from_parts(parts, Body::new(http_body_util::Full::new(bytes)));
            match owner {
                Some(Owner::Region(region)) => Ok(router.forward(&region, request).await),
                Some(Owner::Here) | None => inner.call(request).await,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_owned_by_the_region_it_is_under() {
        // Given names and parents of regional resources, then their region.
        assert_eq!(
            region_of("projects/p/regions/us1/devices/d", false),
            Some("us1")
        );
        assert_eq!(region_of("projects/p/regions/us1", true), Some("us1"));
        assert_eq!(
            region_of("projects/p/regions/us1/provisioningPolicies/x", false),
            Some("us1")
        );
        // The Region resource itself is not under a region.
        assert_eq!(region_of("regions/us1", false), None);
        assert_eq!(region_of("projects/p/devices/d", false), None);
        assert_eq!(region_of("projects/p", true), None);
        assert_eq!(region_of("", false), None);
    }

    #[test]
    fn the_catalog_commands_are_routed_and_its_queries_are_not() {
        let table = commands(&fleetlog_proto::catalog::CATALOG, &["meta", "iam"]);
        let create = &table["/fleetlog.devices.v1.DeviceService/CreateDevice"];
        assert_eq!(create.field, vec!["parent"]);
        assert!(create.parent && !create.global);
        let update = &table["/fleetlog.devices.v1.DeviceService/UpdateDevice"];
        assert_eq!(update.field, vec!["device", "name"]);
        assert!(table["/fleetlog.meta.v1.RegionService/CreateRegion"].global);
        assert!(table["/fleetlog.iam.v1.ServiceAccountService/CreateServiceAccountKey"].global);
        assert!(table.contains_key("/fleetlog.devices.v1.DeviceService/UploadDeviceLogs"));
        for query in [
            "/fleetlog.devices.v1.DeviceService/GetDevice",
            "/fleetlog.devices.v1.DeviceService/ListDevices",
            "/fleetlog.devices.v1.DeviceService/WatchDevices",
            "/fleetlog.devices.v1.DeviceService/QueryDeviceLogs",
            "/fleetlog.devices.v1.DeviceService/Heartbeat",
        ] {
            assert!(!table.contains_key(query), "{query} stays in the region");
        }
    }

    #[test]
    fn a_unary_frame_unwraps_and_anything_else_does_not() {
        assert_eq!(unframe(&[0, 0, 0, 0, 2, 7, 8]), Some(&[7u8, 8][..]));
        assert_eq!(unframe(&[1, 0, 0, 0, 1, 7]), None, "compressed");
        assert_eq!(unframe(&[0, 0, 0, 0, 3, 7]), None, "truncated");
        assert_eq!(unframe(&[]), None);
    }
}
