//! The generic resource engine: the standard methods (Get, BatchGet, List,
//! Watch, Create, Update, Delete) written once, for every type that
//! implements [`Resource`].
//!
//! Commands are read-decide-append against the log: take the resource's
//! state, decide the new full state, append it with the state's revision as
//! the expected last subject sequence. The state is first guessed (a create
//! expects no event; an update or delete uses the active projection's copy)
//! and read from the log through the stream leader only when the append
//! proves the guess wrong. Queries read the active projection.

pub mod access;
mod commands;
pub mod convert;
pub mod decide;
pub mod feeds;
mod macros;
mod queries;
pub mod registry;
pub mod versioned;
pub mod watch;

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use fleetlog_events::{EventLog, Id, ResourceName, Revision, StorageKey};
use fleetlog_projections::Projection;
use fleetlog_projections::query_lang::PageTokenKey;
use fleetlog_proto::api::v1::Metadata;
use prost_reflect::ReflectMessage;
use prost_types::Any;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::error::ServiceError;
use access::{Area, Authorizer};

/// A field of a resource that failed validation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldViolation {
    /// Path inside the resource, e.g. `spec.logging_config.priority`.
    pub path: String,
    pub message: String,
}

impl FieldViolation {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        FieldViolation {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// What the engine needs to know about a resource type. Implemented by a
/// short declarative module per resource (see `devices::model::device`).
pub trait Resource:
    prost::Message + ReflectMessage + Default + Clone + Send + Sync + 'static
{
    type Name: ResourceName;
    /// The request field that carries the resource in create and update
    /// requests (`device`), used to name fields in errors.
    const FIELD: &'static str;
    /// The request field of the new ID in create requests (`device_id`).
    const ID_FIELD: &'static str;

    fn name(&self) -> &str;
    fn set_name(&mut self, name: String);
    fn metadata(&self) -> Option<&Metadata>;
    fn metadata_mut(&mut self) -> &mut Metadata;

    /// The API version this message belongs to, e.g. `v1`.
    const API_VERSION: &'static str;
    /// The type exists in this one API version only (it was added after the
    /// older versions): every projection stores it in this form and events
    /// carry it in this form, whichever version is current.
    const ONE_VERSION: bool = false;
    /// Which role a write needs (device-operator, admin, the bootstrap admin).
    const AREA: Area;

    /// The service account that acts as this resource (a device's agent):
    /// it may read the resource without a role in its project.
    fn acting_account(&self) -> Option<&str> {
        None
    }

    /// Resets the fields only actions may set (a bound service account) to
    /// their `current` values (none on create): Create and Update ignore
    /// what a client sent there.
    fn keep_output_only(&mut self, _current: Option<&Self>) {}

    /// Rules beyond what the proto types express.
    fn validate(&self) -> Result<(), FieldViolation> {
        Ok(())
    }

    /// Rules that involve other resources of the same service, checked
    /// against the active projection before a create or update is written.
    fn check_references(&self, _around: &Surroundings<'_>) -> Result<(), ServiceError> {
        Ok(())
    }

    /// Refuses to delete this resource while something depends on it
    /// (FAILED_PRECONDITION naming what), checked against the active
    /// projection before the tombstone is written.
    fn check_delete(&self, _around: &Surroundings<'_>) -> Result<(), ServiceError> {
        Ok(())
    }

    /// The one storage form of the name (DESIGN §3).
    fn storage_key(name: &Self::Name) -> StorageKey {
        StorageKey::from_name(name)
    }

    /// Whether events carrying `type_name` (a full protobuf message name)
    /// hold this resource type, in any API version.
    fn reads_type(type_name: &str) -> bool {
        type_name == Self::default().descriptor().full_name()
    }

    /// This resource as an event written in `version` carries it, with its
    /// name in that version. Types with several API versions convert here.
    fn to_wire(&self, version: &str) -> Result<Wire, ServiceError> {
        if version != Self::API_VERSION && !Self::ONE_VERSION {
            return Err(ServiceError::Internal(format!(
                "{} has no {version} form",
                self.descriptor().full_name()
            )));
        }
        Ok(Wire::of(self, self.name().to_owned()))
    }

    /// The resource an event carries, written in any API version this type
    /// reads; `key` is the event's storage key.
    fn from_wire(any: &Any, _key: &StorageKey) -> Result<Self, ServiceError> {
        decode_own_version(any)
    }
}

/// Decodes an `Any` holding exactly `R`'s message (its own API version).
pub fn decode_own_version<R: Resource>(any: &Any) -> Result<R, ServiceError> {
    let descriptor = R::default().descriptor();
    if fleetlog_projections::projection::type_name_of(&any.type_url) != descriptor.full_name() {
        return Err(ServiceError::Internal(format!(
            "an event holds {}, not {}",
            any.type_url,
            descriptor.full_name()
        )));
    }
    R::decode(any.value.as_slice())
        .map_err(|e| ServiceError::Internal(format!("an event does not decode: {e}")))
}

/// What a resource's own checks may look at beyond the request itself.
pub struct Surroundings<'a> {
    /// The service's active projection: the other resources, as of now.
    pub projection: &'a Projection,
    /// The region this process serves.
    pub region: &'a Id,
    /// The services this process runs in `region` (their Deployment there,
    /// their Service and the Region are in use while it runs).
    pub runs: &'a [&'a str],
}

/// A resource as one API version writes it into an event or a projection.
#[derive(Clone, Debug, PartialEq)]
pub struct Wire {
    pub any: Any,
    /// The resource's name in that version (the projection's key).
    pub name: String,
}

impl Wire {
    /// `message` packed as an event carries it, named `name`.
    pub fn of(message: &impl ReflectMessage, name: String) -> Self {
        Wire {
            any: Any {
                type_url: type_url_of(&message.descriptor()),
                value: message.encode_to_vec(),
            },
            name,
        }
    }
}

/// `type.googleapis.com/{full message name}`.
fn type_url_of(descriptor: &prost_reflect::MessageDescriptor) -> String {
    format!("type.googleapis.com/{}", descriptor.full_name())
}

/// Everything the standard methods of one service share.
pub struct ServiceContext {
    pub log: EventLog,
    /// The projection queries read; swapped atomically on upgrades. Its API
    /// version is the service's current version, which commands write
    /// events in.
    pub active: Arc<ArcSwap<Projection>>,
    /// The service's API versions, oldest first. Writes through a version
    /// newer than the current one are refused (it is read-only until the
    /// switch).
    pub versions: &'static [&'static str],
    /// Commands hold it shared for their whole read-decide-append; a version
    /// switch holds it exclusively, so writes pause (queued, not rejected)
    /// and none straddles two versions.
    pub write_gate: Arc<tokio::sync::RwLock<()>>,
    /// The region this process serves.
    pub region: Id,
    /// The services this process runs in `region`, by their Meta name
    /// (`devices.fleetlog.io`): Meta refuses to delete what they need.
    pub runs: &'static [&'static str],
    pub page_tokens: PageTokenKey,
    /// Longest wait for `min_revision`.
    pub read_wait: Duration,
    /// Fires on shutdown: watch streams end.
    pub shutdown: CancellationToken,
    /// Owns the watch tasks so shutdown can join them.
    pub tasks: TaskTracker,
    /// The shared live consumers watch calls follow.
    pub feeds: feeds::WatchFeeds,
    /// False in the projector role, which serves queries only.
    pub accept_commands: bool,
    /// Commands answer only once the active projection has applied them
    /// (IAM: a key works, and a revoked one is refused, from the answer on).
    pub settle_writes: bool,
    /// Authenticates callers and checks their roles (shared by all services).
    pub auth: Arc<dyn Authorizer>,
    /// `fleetlog_watch_streams_open` of this service.
    pub open_watches: prometheus_client::metrics::gauge::Gauge,
}

/// The standard methods for resource type `R`.
pub struct Engine<R> {
    ctx: Arc<ServiceContext>,
    _resource: PhantomData<fn() -> R>,
}

impl<R> Clone for Engine<R> {
    fn clone(&self) -> Self {
        Engine {
            ctx: self.ctx.clone(),
            _resource: PhantomData,
        }
    }
}

impl<R: Resource> Engine<R> {
    pub fn new(ctx: Arc<ServiceContext>) -> Self {
        Engine {
            ctx,
            _resource: PhantomData,
        }
    }

    pub fn context(&self) -> &ServiceContext {
        &self.ctx
    }

    fn parse_name(&self, field: &str, text: &str) -> Result<R::Name, ServiceError> {
        text.parse::<R::Name>()
            .map_err(|e| ServiceError::invalid(field, e.to_string()))
    }

    fn parse_parent(&self, text: &str) -> Result<<R::Name as ResourceName>::Parent, ServiceError> {
        text.parse()
            .map_err(|e: fleetlog_events::NameError| ServiceError::invalid("parent", e.to_string()))
    }

    fn check_accepts_commands(&self) -> Result<(), ServiceError> {
        if self.ctx.accept_commands {
            Ok(())
        } else {
            Err(ServiceError::Unavailable(
                "this fleetd runs the projector role and serves queries only; send commands to an api server".into(),
            ))
        }
    }

    /// The active projection, read once per request so a request never
    /// mixes two versions.
    pub fn projection(&self) -> Arc<Projection> {
        self.ctx.active.load_full()
    }

    /// Waits, bounded, until `projection` has applied `min_revision` and
    /// every write this process acknowledged.
    async fn wait_for(
        &self,
        projection: Arc<Projection>,
        min_revision: i64,
    ) -> Result<Arc<Projection>, ServiceError> {
        if min_revision < 0 {
            return Err(ServiceError::invalid(
                "min_revision",
                "must not be negative",
            ));
        }
        if projection.api_version() != R::API_VERSION && !R::ONE_VERSION {
            return Err(ServiceError::Internal(format!(
                "a {} query reached the {} projection",
                R::API_VERSION,
                projection.api_version()
            )));
        }
        // Never older than what this process already acknowledged: a read
        // after a write through the same server sees it, `min_revision` or
        // not (a delete's answer carries no revision to pass).
        let wanted = Revision::from_wire(min_revision).max(self.ctx.log.acknowledged());
        projection.wait_for(wanted, self.ctx.read_wait).await?;
        Ok(projection)
    }
}

pub use commands::{CreateRequest, DeleteRequest, UpdateRequest};
pub use decide::SHARD_LABEL;
pub use queries::{
    DEFAULT_PAGE_SIZE, ListRequest, ListResponse, MAX_PAGE_SIZE, stored, stored_under,
    stored_with_prefix,
};

impl ServiceContext {
    /// The service's current API version: the active projection's.
    pub fn current_version(&self) -> String {
        self.active.load().api_version().to_owned()
    }

    /// Refuses writes through `api_version` while it is newer than the
    /// current version (the upgrade target before its switch).
    pub fn check_writable(&self, api_version: &str) -> Result<(), ServiceError> {
        let current = self.current_version();
        let position = |v: &str| self.versions.iter().position(|known| *known == v);
        match (position(api_version), position(&current)) {
            (Some(requested), Some(active)) if requested <= active => Ok(()),
            (Some(_), Some(_)) => Err(ServiceError::FailedPrecondition(format!(
                "API version {api_version} is read-only until this region switches to it (current version: {current}); write through {current}, or finish the upgrade"
            ))),
            _ => Err(ServiceError::Internal(format!(
                "unknown API version {api_version} or {current}"
            ))),
        }
    }
}
