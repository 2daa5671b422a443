//! The generic resource engine: the standard methods (Get, BatchGet, List,
//! Watch, Create, Update, Delete) written once, for every type that
//! implements `fleetlog_model::Resource`.
//!
//! Commands are read-decide-append against the log: take the resource's
//! state, decide the new full state, append it with the state's revision as
//! the expected last subject sequence. The state is first guessed (a create
//! expects no event; an update or delete uses the active projection's copy)
//! and read from the log through the stream leader only when the append
//! proves the guess wrong. Queries read the active projection.

pub mod access;
mod commands;
pub mod decide;
pub mod feeds;
mod macros;
mod queries;
pub mod versioned;
pub mod watch;

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use fleetlog_events::{EventLog, Id, ResourceName, Revision};
use fleetlog_model::Resource;
use fleetlog_projections::Projection;
use fleetlog_projections::query_lang::PageTokenKey;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::error::ServiceError;
use access::Authorizer;

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
    /// The projections of other regions' resources, from read copies of
    /// their logs (docs/adr/0007); queries for a name in such a region
    /// read there.
    pub copies: ReadCopies,
}

/// The active projection of each other region's read copy, by region.
#[derive(Clone, Default)]
pub struct ReadCopies(
    Arc<std::sync::RwLock<std::collections::HashMap<Id, Arc<ArcSwap<Projection>>>>>,
);

impl ReadCopies {
    /// `region`'s copy's active projection, if this process reads one.
    pub fn get(&self, region: &Id) -> Option<Arc<Projection>> {
        self.0
            .read()
            .ok()
            .and_then(|copies| copies.get(region).map(|active| active.load_full()))
    }

    /// Every region this process reads a copy of.
    pub fn regions(&self) -> Vec<Id> {
        self.0
            .read()
            .map(|copies| copies.keys().cloned().collect())
            .unwrap_or_default()
    }

    pub fn contains(&self, region: &Id) -> bool {
        self.0
            .read()
            .is_ok_and(|copies| copies.contains_key(region))
    }

    pub fn insert(&self, region: Id, active: Arc<ArcSwap<Projection>>) {
        if let Ok(mut copies) = self.0.write() {
            copies.insert(region, active);
        }
    }
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

    /// Where a query of `region`'s resources reads: `own` (this region's
    /// projection) for this region or a name without one, that region's
    /// read copy otherwise (in the same API version), and whether that is
    /// this region's own. None when this region reads no copy of `region`
    /// (it has no Deployment in Meta): nothing of it exists here.
    fn source(
        &self,
        own: Arc<Projection>,
        region: Option<&Id>,
    ) -> Result<Option<(Arc<Projection>, bool)>, ServiceError> {
        let Some(region) = region.filter(|r| **r != self.ctx.region) else {
            return Ok(Some((own, true)));
        };
        match self.ctx.copies.get(region) {
            Some(copy) if copy.api_version() == own.api_version() => Ok(Some((copy, false))),
            Some(copy) => Err(ServiceError::Unavailable(format!(
                "the read copy of region {region} is projected in {} while this query reads {};                  it follows after this region's switch",
                copy.api_version(),
                own.api_version()
            ))),
            None => Ok(None),
        }
    }

    /// Waits, bounded, until `projection` has applied `min_revision` and,
    /// when it is this region's `own`, every write this process
    /// acknowledged (a read copy's revisions are another region's).
    async fn wait_for(
        &self,
        projection: Arc<Projection>,
        min_revision: i64,
        own: bool,
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
        let acknowledged = if own {
            self.ctx.log.acknowledged()
        } else {
            Revision::NONE
        };
        let wanted = Revision::from_wire(min_revision).max(acknowledged);
        projection.wait_for(wanted, self.ctx.read_wait).await?;
        Ok(projection)
    }
}

pub use commands::{CreateRequest, DeleteRequest, UpdateRequest};
pub use queries::{DEFAULT_PAGE_SIZE, ListRequest, ListResponse, MAX_PAGE_SIZE};

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
