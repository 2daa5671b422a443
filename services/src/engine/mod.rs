//! The generic resource engine: the standard methods (Get, BatchGet, List,
//! Watch, Create, Update, Delete) written once, for every type that
//! implements [`Resource`].
//!
//! Commands are read-decide-append against the log: read the resource's last
//! event through the stream leader, decide the new full state, append it with
//! the read revision as the expected last subject sequence. Queries read the
//! active projection.

mod commands;
mod macros;
mod queries;
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
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::error::ServiceError;

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
/// short declarative module per resource (see `devices::device`).
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

    /// Rules beyond what the proto types express.
    fn validate(&self) -> Result<(), FieldViolation> {
        Ok(())
    }

    /// The one storage form of the name (DESIGN §3).
    fn storage_key(name: &Self::Name) -> StorageKey {
        StorageKey::from_name(name)
    }
}

/// Everything the standard methods of one service share.
pub struct ServiceContext {
    pub log: EventLog,
    /// The projection queries read; swapped atomically on upgrades.
    pub active: Arc<ArcSwap<Projection>>,
    /// The API version this service writes events in, e.g. `v1`.
    pub api_version: String,
    /// The region this process serves.
    pub region: Id,
    pub page_tokens: PageTokenKey,
    /// Longest wait for `min_revision`.
    pub read_wait: Duration,
    /// Fires on shutdown: watch streams end.
    pub shutdown: CancellationToken,
    /// Owns the watch tasks so shutdown can join them.
    pub tasks: TaskTracker,
    /// False in the projector role, which serves queries only.
    pub accept_commands: bool,
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

    fn projection(&self) -> Arc<Projection> {
        self.ctx.active.load_full()
    }

    /// Waits, bounded, until the active projection has applied `min_revision`.
    async fn wait_for(&self, min_revision: i64) -> Result<Arc<Projection>, ServiceError> {
        if min_revision < 0 {
            return Err(ServiceError::invalid(
                "min_revision",
                "must not be negative",
            ));
        }
        let projection = self.projection();
        projection
            .wait_for(Revision::from_wire(min_revision), self.ctx.read_wait)
            .await?;
        Ok(projection)
    }
}

pub use commands::{CreateRequest, DeleteRequest, SHARD_LABEL, UpdateRequest};
pub use queries::{DEFAULT_PAGE_SIZE, ListRequest, ListResponse, MAX_PAGE_SIZE};
