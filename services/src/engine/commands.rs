//! Create, Update, Delete and custom actions: take the resource's state,
//! decide (`decide.rs`), append; when the append finds the log moved on,
//! read the log and decide again. One loop ([`Engine::command`]) does this
//! for every command.

use std::fmt::Display;
use std::time::SystemTime;

use fleetlog_events::envelope::{ChangeKind, CommandId, ResourceChange};
use fleetlog_events::{
    Appended, LogError, ResourceName, Revision, ShardId, StorageKey, StoredEvent,
};
use fleetlog_projections::Projection;
use fleetlog_projections::query_lang::FieldMask;
use prost_types::Timestamp;
use tracing::field::{Empty, display};

use super::Engine;
use super::decide::{self, Change, Current, Decision, Patch, Stamp};
use crate::error::ServiceError;
use fleetlog_model::{Resource, Surroundings};

/// How often a command re-reads the log and decides again when concurrent
/// writes keep getting in first.
const MERGE_ATTEMPTS: u32 = 8;

/// The actor of commands fleetd issues itself (outside any request).
const SYSTEM_ACTOR: &str = "system:fleetd";

pub struct CreateRequest<R> {
    pub parent: String,
    pub id: String,
    pub resource: Option<R>,
    pub request_id: String,
}

pub struct UpdateRequest<R> {
    pub resource: Option<R>,
    pub update_mask: Option<prost_types::FieldMask>,
    pub expected_revision: i64,
    pub allow_missing: bool,
    pub request_id: String,
}

pub struct DeleteRequest {
    pub name: String,
    pub expected_revision: i64,
    pub allow_missing: bool,
    pub request_id: String,
}

/// The state a command decides on first.
enum Guess<R> {
    /// Certain for refusals, a guess for writes (a create assumes no event
    /// yet): the append's expected sequence proves or disproves it.
    Assumed(Current<R>),
    /// A copy that may be stale (the active projection's): the append
    /// proves it; a refusal or a no-op decided on it is checked against
    /// the log first.
    Projected(Current<R>),
    /// Read the log first.
    Log,
}

/// How a command ended.
enum Outcome<R> {
    /// Its event is in the log (a retry's first attempt included).
    Written(R),
    /// An earlier attempt of the same command is the resource's last event.
    Earlier(Box<StoredEvent>),
    /// Nothing needed writing.
    Nothing,
}

/// Why an append did not write.
enum Appending {
    /// The subject's last event is not the one decided on: the log moved
    /// on. The engine's own signal, never a client's answer: the command
    /// reads the log and decides again.
    Raced,
    /// The log refused or cannot be reached (a transient conflict that
    /// outlived the log client's retries is UNAVAILABLE).
    Failed(ServiceError),
}

impl<R: Resource> Engine<R> {
    #[tracing::instrument(name = "create", skip_all, fields(resource = Empty, shard = Empty, command_id = Empty, revision = Empty))]
    pub async fn create(&self, request: CreateRequest<R>) -> Result<R, ServiceError> {
        self.check_accepts_commands()?;
        let _writing = self.ctx.write_gate.read().await;
        let parent = self.parse_parent(&request.parent)?;
        let id = <R::Name as ResourceName>::parse_id(&request.id)
            .map_err(|e| ServiceError::invalid(R::ID_FIELD, e.to_string()))?;
        let name = R::Name::new(parent, id);
        self.check_served(&name)?;
        let command = command_id(&request.request_id)?;
        let requested = request.resource.unwrap_or_default();
        let at = self.stamp_for(&name);
        // Most creates are of new names: assume no event at all and read
        // the log only when the append finds one (a live resource, a
        // tombstone, or this command's earlier attempt).
        let outcome = self
            .command(
                &name,
                &command,
                Guess::Assumed(Current::Absent),
                |current| {
                    decide::create(&name, requested.clone(), current, &at).map(Decision::Append)
                },
            )
            .await?;
        self.answer(outcome, &name)
    }

    #[tracing::instrument(name = "update", skip_all, fields(resource = Empty, shard = Empty, command_id = Empty, revision = Empty))]
    pub async fn update(&self, request: UpdateRequest<R>) -> Result<R, ServiceError> {
        self.check_accepts_commands()?;
        let _writing = self.ctx.write_gate.read().await;
        let field = R::FIELD;
        let Some(patch) = request.resource else {
            return Err(ServiceError::invalid(field, "is required"));
        };
        let name = self.parse_name(&format!("{field}.name"), patch.name())?;
        self.check_served(&name)?;
        let command = command_id(&request.request_id)?;
        let expected_revision = parse_expected_revision(request.expected_revision)?;
        let descriptor = R::default().descriptor();
        let paths = request.update_mask.map(|m| m.paths).unwrap_or_default();
        let mask = FieldMask::parse(&paths, &descriptor, "update_mask")
            .map_err(fleetlog_projections::ProjectionError::from)?;
        let update_mask = (!paths.is_empty()).then_some(prost_types::FieldMask { paths });
        let at = self.stamp_for(&name);
        // The active projection usually holds the latest state already;
        // the append's expected sequence proves it.
        let guess = self.projected(&name)?;
        let outcome = self
            .command(&name, &command, guess, |current| {
                let patch = Patch {
                    resource: &patch,
                    mask: &mask,
                    update_mask: update_mask.clone(),
                };
                decide::update(
                    &name,
                    patch,
                    expected_revision,
                    request.allow_missing,
                    current,
                    &at,
                )
                .map(Decision::Append)
            })
            .await?;
        self.answer(outcome, &name)
    }

    #[tracing::instrument(name = "delete", skip_all, fields(resource = Empty, shard = Empty, command_id = Empty, revision = Empty))]
    pub async fn delete(&self, request: DeleteRequest) -> Result<(), ServiceError> {
        self.check_accepts_commands()?;
        let _writing = self.ctx.write_gate.read().await;
        let name = self.parse_name("name", &request.name)?;
        self.check_served(&name)?;
        let command = command_id(&request.request_id)?;
        let expected_revision = parse_expected_revision(request.expected_revision)?;
        let at = self.stamp_for(&name);
        let guess = self.projected(&name)?;
        // Whatever the outcome (written, a retry's earlier deletion, nothing
        // to delete), the resource is gone.
        self.command(&name, &command, guess, |current| {
            decide::delete(
                &name,
                expected_revision,
                request.allow_missing,
                current,
                &at,
            )
        })
        .await
        .map(|_| ())
    }

    /// A custom action: reads the resource from the log, lets `apply`
    /// change it (or refuse with FAILED_PRECONDITION and the like),
    /// validates and appends the new state as an ACTION event. Without
    /// `expected_revision` a concurrent write makes it re-read and re-apply.
    #[tracing::instrument(name = "act", skip_all, fields(action = action, resource = Empty, shard = Empty, command_id = Empty, revision = Empty))]
    pub async fn act(
        &self,
        name: &str,
        action: &str,
        expected_revision: i64,
        request_id: &str,
        apply: impl Fn(&mut R) -> Result<(), ServiceError>,
    ) -> Result<R, ServiceError> {
        self.check_accepts_commands()?;
        let _writing = self.ctx.write_gate.read().await;
        let name = self.parse_name("name", name)?;
        self.check_served(&name)?;
        let command = command_id(request_id)?;
        let expected_revision = parse_expected_revision(expected_revision)?;
        let at = self.stamp_for(&name);
        let outcome = self
            .command(&name, &command, Guess::Log, |current| {
                decide::act(&name, action, expected_revision, &apply, current, &at)
                    .map(Decision::Append)
            })
            .await?;
        self.answer(outcome, &name)
    }

    /// The one read → decide → append loop of every command. `decide` is
    /// called on the guessed state first, then on the log's whenever the
    /// guess or a race says the log holds something else.
    async fn command(
        &self,
        name: &R::Name,
        command: &Issued,
        guess: Guess<R>,
        decide: impl Fn(&Current<R>) -> Result<Decision<R>, ServiceError>,
    ) -> Result<Outcome<R>, ServiceError> {
        let key = R::storage_key(name);
        trace_command(&key, name, command);
        let (mut current, mut from_log) = match guess {
            Guess::Assumed(current) => (current, true),
            Guess::Projected(current) => (current, false),
            Guess::Log => match self.read_log(&key, command).await? {
                Ok(current) => (current, true),
                Err(earlier) => return Ok(Outcome::Earlier(earlier)),
            },
        };
        for _ in 0..MERGE_ATTEMPTS {
            let change = match decide(&current) {
                Ok(Decision::Append(change)) => change,
                Ok(Decision::Nothing) if from_log => return Ok(Outcome::Nothing),
                Err(refusal) if from_log => return Err(refusal),
                // Decided on a possibly stale copy: the log decides.
                Ok(Decision::Nothing) | Err(_) => {
                    match self.read_log(&key, command).await? {
                        Ok(read) => current = read,
                        Err(earlier) => return Ok(Outcome::Earlier(earlier)),
                    }
                    from_log = true;
                    continue;
                }
            };
            self.check_surroundings(&change).await?;
            match self.append(&key, change, command).await {
                Ok(outcome) => return Ok(outcome),
                Err(Appending::Failed(err)) => return Err(err),
                Err(Appending::Raced) => {
                    match self.read_log(&key, command).await? {
                        Ok(read) => current = read,
                        Err(earlier) => return Ok(Outcome::Earlier(earlier)),
                    }
                    from_log = true;
                }
            }
        }
        Err(ServiceError::Aborted(format!(
            "{name} kept changing under concurrent writes; retry"
        )))
    }

    /// The resource as the log has it, or (`Err`) this command's own
    /// earlier attempt when that is the resource's last event (a client
    /// retry whose first try landed).
    async fn read_log(
        &self,
        key: &StorageKey,
        command: &Issued,
    ) -> Result<Result<Current<R>, Box<StoredEvent>>, ServiceError> {
        Ok(match self.ctx.log.last(key).await? {
            Some(event) if command.wrote(&event) => Err(Box::new(event)),
            Some(event) if event.is_deletion() => Ok(Current::Deleted(event.revision)),
            Some(event) => Ok(Current::Live(self.decode(&event)?, event.revision)),
            None => Ok(Current::Absent),
        })
    }

    /// The checks of a change that read other resources: the references of
    /// what a create or update writes, the dependents of what a delete
    /// removes. (Actions change what they own and are checked by their
    /// `apply`.) The projection is first brought up to the log's last
    /// event: another process's write a moment ago (a deployment of the
    /// service this command deletes) is in the log before it is in this
    /// process's projection. Two such commands in flight at once can still
    /// both pass: the checks span resources, the append's expectation one.
    async fn check_surroundings(&self, change: &Change<R>) -> Result<(), ServiceError> {
        if !R::CHECKS_OTHERS {
            return Ok(());
        }
        let check: fn(&R, &Surroundings<'_>) -> Result<(), fleetlog_model::ModelError> =
            match change.kind {
                ChangeKind::Created | ChangeKind::Updated => R::check_references,
                ChangeKind::Deleted => R::check_delete,
                _ => return Ok(()),
            };
        let projection = self.projection();
        let last = self.ctx.log.last_revision().await?;
        projection.wait_for(last, self.ctx.read_wait).await?;
        Ok(check(&change.resource, &self.surroundings(&projection))?)
    }

    /// A command's answer: the resource it wrote (or its earlier attempt
    /// wrote).
    fn answer(&self, outcome: Outcome<R>, name: &R::Name) -> Result<R, ServiceError> {
        match outcome {
            Outcome::Written(resource) => Ok(resource),
            Outcome::Earlier(event) if event.is_deletion() => {
                Err(ServiceError::NotFound(name.to_string()))
            }
            Outcome::Earlier(event) => {
                tracing::Span::current().record("revision", event.revision.get());
                self.decode(&event)
            }
            Outcome::Nothing => Err(ServiceError::Internal(format!(
                "a command on {name} decided to write nothing"
            ))),
        }
    }

    /// The resource's current state, read from the log through the stream
    /// leader (fresh in every process, unlike a projection); None when it
    /// does not exist.
    pub async fn current(&self, name: &R::Name) -> Result<Option<R>, ServiceError> {
        match self.ctx.log.last(&R::storage_key(name)).await? {
            Some(event) if !event.is_deletion() => Ok(Some(self.decode(&event)?)),
            _ => Ok(None),
        }
    }

    /// The resource as the active projection holds it: a guess at the
    /// current state that only an append expecting its revision can
    /// confirm. When the projection does not hold it (which proves
    /// nothing: it may be behind), the log is read first.
    fn projected(&self, name: &R::Name) -> Result<Guess<R>, ServiceError> {
        let projection = self.projection();
        if projection.api_version() != R::API_VERSION && !R::ONE_VERSION {
            return Ok(Guess::Log);
        }
        Ok(
            match fleetlog_model::stored::stored::<R>(&projection, &name.to_string())? {
                Some(resource) => {
                    let revision =
                        Revision::from_wire(resource.metadata().map_or(0, |m| m.revision));
                    Guess::Projected(Current::Live(resource, revision))
                }
                None => Guess::Log,
            },
        )
    }

    /// Refuses commands for resources of another region: this process
    /// writes only its own region's log (commands are not routed between
    /// regions).
    fn check_served(&self, name: &R::Name) -> Result<(), ServiceError> {
        match name.region() {
            Some(region) if *region != self.ctx.region => {
                Err(ServiceError::FailedPrecondition(format!(
                    "{name} is in region {region}, but this fleetd serves region {served}; \
                     send commands for {region} to that region's endpoint (or use regions/{served})",
                    served = self.ctx.region
                )))
            }
            _ => Ok(()),
        }
    }

    fn surroundings<'a>(&'a self, projection: &'a Projection) -> Surroundings<'a> {
        Surroundings {
            projection,
            region: &self.ctx.region,
            runs: self.ctx.runs,
        }
    }

    /// Where and when a command on `name` decides.
    fn stamp_for(&self, name: &R::Name) -> Stamp {
        Stamp {
            now: Timestamp::from(SystemTime::now()),
            region: self.ctx.region.to_string(),
            shard: u32::from(ShardId::of(&R::storage_key(name)).index()),
        }
    }

    /// Decodes the resource an event carries (written in any API version),
    /// with its revision.
    pub fn decode(&self, event: &StoredEvent) -> Result<R, ServiceError> {
        let any = event.change.resource.as_ref().ok_or_else(|| {
            ServiceError::Internal(format!("event {} carries no resource", event.revision))
        })?;
        let key = StorageKey::parse::<R::Name>(&event.change.storage_key)
            .map_err(|e| {
                ServiceError::Internal(format!(
                    "event {} has a malformed storage key: {e}",
                    event.revision
                ))
            })?
            .0;
        let mut resource = R::from_wire(any, &key)
            .map_err(|e| ServiceError::Internal(format!("event {}: {e}", event.revision)))?;
        resource.metadata_mut().revision = event.revision.to_wire();
        Ok(resource)
    }

    /// Appends one change, in the service's current API version.
    async fn append(
        &self,
        key: &StorageKey,
        change: Change<R>,
        command: &Issued,
    ) -> Result<Outcome<R>, Appending> {
        let version = self.ctx.current_version();
        let wire = change
            .resource
            .to_wire(&version)
            .map_err(|e| Appending::Failed(e.into()))?;
        let event = ResourceChange {
            kind: change.kind as i32,
            storage_key: key.to_string(),
            resource: Some(wire.any),
            update_mask: change.update_mask,
            action: change.action,
            api_version: version,
            actor: super::access::ACTOR
                .try_with(Clone::clone)
                .unwrap_or_else(|_| SYSTEM_ACTOR.to_owned()),
            command_id: command.id.to_string(),
            time: Some(Timestamp::from(SystemTime::now())),
        };
        let revision = match self
            .ctx
            .log
            .append(key, &event, change.expected, &command.id)
            .await
        {
            Ok(Appended::Written(revision)) => revision,
            // A retry whose first attempt landed: answer with what it wrote.
            Ok(Appended::Earlier(event)) => return Ok(Outcome::Earlier(event)),
            Err(LogError::WrongLastSequence { .. }) => return Err(Appending::Raced),
            Err(err) => return Err(Appending::Failed(err.into())),
        };
        tracing::Span::current().record("revision", revision.get());
        tracing::debug!(resource = %key, revision = revision.get(), command_id = %command.id, kind = ?change.kind, "appended");
        if self.ctx.settle_writes {
            self.projection()
                .wait_for(revision, self.ctx.read_wait)
                .await
                .map_err(|e| Appending::Failed(e.into()))?;
        }
        let mut written = change.resource;
        written.metadata_mut().revision = revision.to_wire();
        Ok(Outcome::Written(written))
    }
}

/// A command id and whether the client chose it (only then can a later
/// request be a retry of this one).
pub(super) struct Issued {
    id: CommandId,
    from_client: bool,
}

impl Issued {
    /// Whether `event` is this command's own earlier attempt: a client retry
    /// whose first try already landed.
    fn wrote(&self, event: &StoredEvent) -> bool {
        self.from_client && event.change.command_id == self.id.as_str()
    }
}

fn parse_expected_revision(value: i64) -> Result<Revision, ServiceError> {
    if value < 0 {
        return Err(ServiceError::invalid(
            "expected_revision",
            "must not be negative",
        ));
    }
    Ok(Revision::from_wire(value))
}

/// Fills the fields of the current command's span (nothing when no
/// subscriber records it).
fn trace_command(key: &StorageKey, name: &impl Display, command: &Issued) {
    let span = tracing::Span::current();
    if !span.is_disabled() {
        span.record("resource", display(name));
        span.record("shard", ShardId::of(key).index());
        span.record("command_id", display(&command.id));
    }
}

fn command_id(request_id: &str) -> Result<Issued, ServiceError> {
    let id = CommandId::from_optional_request_id(request_id)
        .map_err(|message| ServiceError::invalid("request_id", message))?;
    Ok(Issued {
        id,
        from_client: !request_id.is_empty(),
    })
}
