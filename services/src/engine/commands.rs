//! Create, Update, Delete: read the last event, decide, append.

use std::collections::HashMap;
use std::fmt::Display;
use std::ops::ControlFlow;
use std::time::SystemTime;

use fleetlog_events::envelope::{ChangeKind, CommandId, ResourceChange};
use fleetlog_events::{
    Appended, LogError, ResourceName, Revision, ShardId, StorageKey, StoredEvent,
};
use fleetlog_projections::Projection;
use fleetlog_projections::query_lang::FieldMask;
use prost_types::Timestamp;
use tracing::field::{Empty, display};

use super::{Engine, FieldViolation, Resource, Surroundings};
use crate::error::ServiceError;

/// How often an update without `expected_revision` re-reads and re-applies
/// itself when a concurrent write got in first.
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

/// The key under which `metadata.shards` records the shard of a resource.
pub const SHARD_LABEL: &str = "byNameMod16";

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
        let mut resource = request.resource.unwrap_or_default();
        resource.set_name(name.to_string());
        resource.keep_output_only(None);
        self.validate(&resource)?;
        resource.check_references(&self.surroundings(&self.projection()))?;

        let key = R::storage_key(&name);
        trace_command(&key, &name, &command);
        // Most creates are of new names: append expecting no event at all
        // and read the log only when the subject turns out to have one (a
        // live resource, a tombstone, or this command's earlier attempt).
        self.stamp(&mut resource, None, &key);
        let create_expecting = |expected| {
            self.append(
                &key,
                ChangeKind::Created,
                &resource,
                None,
                expected,
                &command,
            )
        };
        match create_expecting(Revision::NONE).await {
            Err(ServiceError::Aborted(_)) => {}
            done => return done,
        }
        let last = self.ctx.log.last(&key).await?;
        if let Some(done) = self.replayed(&last, &command)? {
            return Ok(done);
        }
        if last.as_ref().is_some_and(|e| !e.is_deletion()) {
            return Err(ServiceError::AlreadyExists(name.to_string()));
        }
        // A tombstone: the name is free again, on top of it.
        let expected = last.map_or(Revision::NONE, |e| e.revision);
        match create_expecting(expected).await {
            Err(ServiceError::Aborted(_)) => Err(ServiceError::AlreadyExists(name.to_string())),
            other => other,
        }
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
        let key = R::storage_key(&name);
        trace_command(&key, &name, &command);
        let update_mask = (!paths.is_empty()).then(|| prost_types::FieldMask {
            paths: paths.clone(),
        });
        let change = |current: &R| {
            let mut updated = if mask.is_empty() {
                patch.clone()
            } else {
                let mut merged = current.transcode_to_dynamic();
                mask.merge_into(&mut merged, &patch.transcode_to_dynamic());
                merged
                    .transcode_to::<R>()
                    .map_err(|e| ServiceError::Internal(format!("applying the update mask: {e}")))?
            };
            updated.set_name(name.to_string());
            updated.keep_output_only(Some(current));
            self.validate(&updated)?;
            updated.check_references(&self.surroundings(&self.projection()))?;
            self.stamp(&mut updated, current.metadata(), &key);
            Ok::<_, ServiceError>(updated)
        };

        // The active projection usually holds the latest state already;
        // the append's expected-sequence check proves it. When it does not
        // (the projection is behind, or the change is refused on what may
        // be stale state), the log decides below.
        if let Some((current, revision)) = self.projected(&name)?
            && (expected_revision == Revision::NONE || expected_revision == revision)
            && let Ok(updated) = change(&current)
        {
            match self
                .append(
                    &key,
                    ChangeKind::Updated,
                    &updated,
                    update_mask.clone(),
                    revision,
                    &command,
                )
                .await
            {
                Err(ServiceError::Aborted(_)) => {}
                done => return done,
            }
        }

        for _ in 0..MERGE_ATTEMPTS {
            let last = self.ctx.log.last(&key).await?;
            if let Some(done) = self.replayed(&last, &command)? {
                return Ok(done);
            }
            let current = match &last {
                Some(event) if !event.is_deletion() => self.decode(event)?,
                _ if request.allow_missing && expected_revision == Revision::NONE => {
                    let mut created = patch.clone();
                    created.set_name(name.to_string());
                    created.keep_output_only(None);
                    self.validate(&created)?;
                    self.stamp(&mut created, None, &key);
                    let expected = last.map_or(Revision::NONE, |e| e.revision);
                    match self
                        .append(
                            &key,
                            ChangeKind::Created,
                            &created,
                            None,
                            expected,
                            &command,
                        )
                        .await
                    {
                        Err(ServiceError::Aborted(_)) => continue,
                        other => return other,
                    }
                }
                _ => return Err(ServiceError::NotFound(name.to_string())),
            };
            let last_revision = last.map_or(Revision::NONE, |e| e.revision);
            check_expected(&name, expected_revision, last_revision)?;
            let updated = change(&current)?;
            let outcome = self
                .append(
                    &key,
                    ChangeKind::Updated,
                    &updated,
                    update_mask.clone(),
                    last_revision,
                    &command,
                )
                .await;
            match after_race(outcome, expected_revision) {
                ControlFlow::Continue(()) => continue,
                ControlFlow::Break(result) => return result,
            }
        }
        Err(kept_changing(&name))
    }

    #[tracing::instrument(name = "delete", skip_all, fields(resource = Empty, shard = Empty, command_id = Empty, revision = Empty))]
    pub async fn delete(&self, request: DeleteRequest) -> Result<(), ServiceError> {
        self.check_accepts_commands()?;
        let _writing = self.ctx.write_gate.read().await;
        let name = self.parse_name("name", &request.name)?;
        self.check_served(&name)?;
        let command = command_id(&request.request_id)?;
        let expected_revision = parse_expected_revision(request.expected_revision)?;
        let key = R::storage_key(&name);
        trace_command(&key, &name, &command);
        let tombstone_of = |mut resource: R| {
            resource.check_delete(&self.surroundings(&self.projection()))?;
            resource.metadata_mut().revision = 0;
            resource.metadata_mut().delete_time = Some(Timestamp::from(SystemTime::now()));
            Ok::<_, ServiceError>(resource)
        };
        // As in update: try the projected state first, let the log decide.
        if let Some((current, revision)) = self.projected(&name)?
            && (expected_revision == Revision::NONE || expected_revision == revision)
        {
            let tombstone = tombstone_of(current)?;
            match self
                .append(
                    &key,
                    ChangeKind::Deleted,
                    &tombstone,
                    None,
                    revision,
                    &command,
                )
                .await
            {
                Err(ServiceError::Aborted(_)) => {}
                done => return done.map(|_| ()),
            }
        }
        for _ in 0..MERGE_ATTEMPTS {
            let last = self.ctx.log.last(&key).await?;
            if last.as_ref().is_some_and(|event| command.wrote(event)) {
                return Ok(());
            }
            let (current, last_revision) = match &last {
                Some(event) if !event.is_deletion() => (self.decode(event)?, event.revision),
                _ if request.allow_missing => return Ok(()),
                _ => return Err(ServiceError::NotFound(name.to_string())),
            };
            check_expected(&name, expected_revision, last_revision)?;
            let tombstone = tombstone_of(current)?;
            let outcome = self
                .append(
                    &key,
                    ChangeKind::Deleted,
                    &tombstone,
                    None,
                    last_revision,
                    &command,
                )
                .await;
            match after_race(outcome, expected_revision) {
                ControlFlow::Continue(()) => continue,
                ControlFlow::Break(result) => return result.map(|_| ()),
            }
        }
        Err(kept_changing(&name))
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

    /// The outcome of an earlier attempt of the same command, if the
    /// resource's last event is that attempt.
    fn replayed(
        &self,
        last: &Option<StoredEvent>,
        command: &Issued,
    ) -> Result<Option<R>, ServiceError> {
        match last {
            Some(event) if command.wrote(event) => {
                if event.is_deletion() {
                    return Err(ServiceError::NotFound(event.change.storage_key.clone()));
                }
                Ok(Some(self.decode(event)?))
            }
            _ => Ok(None),
        }
    }

    /// The resource as the active projection holds it, with the revision of
    /// its last event there: a guess at the current state that only an
    /// append expecting that revision can confirm. None when the projection
    /// does not hold it (which proves nothing: it may be behind).
    fn projected(&self, name: &R::Name) -> Result<Option<(R, Revision)>, ServiceError> {
        let projection = self.projection();
        if projection.api_version() != R::API_VERSION && !R::ONE_VERSION {
            return Ok(None);
        }
        Ok(
            super::queries::stored::<R>(&projection, &name.to_string())?.map(|resource| {
                let revision = Revision::from_wire(resource.metadata().map_or(0, |m| m.revision));
                (resource, revision)
            }),
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

    /// The rules the resource's fields declare (`fleetlog.api.v1.field`),
    /// then the type's own.
    fn validate(&self, resource: &R) -> Result<(), ServiceError> {
        fleetlog_proto::rules::check(resource)
            .map_err(|v| FieldViolation::new(v.path, v.message))
            .and_then(|()| resource.validate())
            .map_err(|violation| {
                ServiceError::invalid(
                    format!("{}.{}", R::FIELD, violation.path),
                    violation.message,
                )
            })
    }

    /// Sets the output-only metadata; whatever a client sent there is ignored.
    fn stamp(
        &self,
        resource: &mut R,
        previous: Option<&fleetlog_proto::api::v1::Metadata>,
        key: &StorageKey,
    ) {
        let now = Timestamp::from(SystemTime::now());
        let region = self.ctx.region.to_string();
        let metadata = resource.metadata_mut();
        metadata.create_time = previous.and_then(|p| p.create_time).or(Some(now));
        metadata.update_time = Some(now);
        metadata.delete_time = None;
        metadata.revision = 0;
        metadata.generation = previous.map_or(0, |p| p.generation) + 1;
        metadata.shards =
            HashMap::from([(SHARD_LABEL.to_owned(), i64::from(ShardId::of(key).index()))]);
        metadata.owning_region = region;
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

    /// A custom action: reads the resource, lets `apply` change it (or
    /// refuse with FAILED_PRECONDITION and the like), validates and appends
    /// the new state as an ACTION event. Without `expected_revision` a
    /// concurrent write makes it re-read and re-apply.
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
        let key = R::storage_key(&name);
        trace_command(&key, &name, &command);
        for _ in 0..MERGE_ATTEMPTS {
            let last = self.ctx.log.last(&key).await?;
            if let Some(done) = self.replayed(&last, &command)? {
                return Ok(done);
            }
            let (current, last_revision) = match &last {
                Some(event) if !event.is_deletion() => (self.decode(event)?, event.revision),
                _ => return Err(ServiceError::NotFound(name.to_string())),
            };
            check_expected(&name, expected_revision, last_revision)?;
            let mut changed = current.clone();
            apply(&mut changed)?;
            changed.set_name(name.to_string());
            self.validate(&changed)?;
            self.stamp(&mut changed, current.metadata(), &key);
            let outcome = self
                .append_action(
                    &key,
                    ChangeKind::Action,
                    action,
                    &changed,
                    None,
                    last_revision,
                    &command,
                )
                .await;
            match after_race(outcome, expected_revision) {
                ControlFlow::Continue(()) => continue,
                ControlFlow::Break(result) => return result,
            }
        }
        Err(kept_changing(&name))
    }

    async fn append(
        &self,
        key: &StorageKey,
        kind: ChangeKind,
        resource: &R,
        update_mask: Option<prost_types::FieldMask>,
        expected: Revision,
        command: &Issued,
    ) -> Result<R, ServiceError> {
        self.append_action(key, kind, "", resource, update_mask, expected, command)
            .await
    }

    /// Appends one event in the service's current API version.
    #[allow(clippy::too_many_arguments)]
    async fn append_action(
        &self,
        key: &StorageKey,
        kind: ChangeKind,
        action: &str,
        resource: &R,
        update_mask: Option<prost_types::FieldMask>,
        expected: Revision,
        command: &Issued,
    ) -> Result<R, ServiceError> {
        let version = self.ctx.current_version();
        let wire = resource.to_wire(&version)?;
        let change = ResourceChange {
            kind: kind as i32,
            storage_key: key.to_string(),
            resource: Some(wire.any),
            update_mask,
            action: action.to_owned(),
            api_version: version,
            actor: crate::auth::ACTOR
                .try_with(Clone::clone)
                .unwrap_or_else(|_| SYSTEM_ACTOR.to_owned()),
            command_id: command.id.to_string(),
            time: Some(Timestamp::from(SystemTime::now())),
        };
        let revision = match self
            .ctx
            .log
            .append(key, &change, expected, &command.id)
            .await
        {
            Ok(Appended::Written(revision)) => revision,
            // A retry whose first attempt landed: answer with what it wrote.
            Ok(Appended::Earlier(event)) => {
                tracing::Span::current().record("revision", event.revision.get());
                return self.decode(&event);
            }
            Err(err @ LogError::WrongLastSequence { .. }) => {
                return Err(ServiceError::Aborted(format!(
                    "a concurrent write to {key} won ({err}); read it again and retry"
                )));
            }
            Err(err) => return Err(err.into()),
        };
        tracing::Span::current().record("revision", revision.get());
        tracing::debug!(resource = %key, revision = revision.get(), command_id = %command.id, ?kind, "appended");
        if self.ctx.settle_writes {
            self.projection()
                .wait_for(revision, self.ctx.read_wait)
                .await?;
        }
        let mut written = resource.clone();
        written.metadata_mut().revision = revision.to_wire();
        Ok(written)
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

/// A command's `expected_revision` (none: no check) against the resource's
/// actual last revision.
fn check_expected(
    name: &impl Display,
    expected: Revision,
    actual: Revision,
) -> Result<(), ServiceError> {
    if expected != Revision::NONE && expected != actual {
        return Err(ServiceError::Aborted(format!(
            "{name} is at revision {actual}, not the expected {expected}; read it again and retry"
        )));
    }
    Ok(())
}

/// After an append: when a concurrent write got in first, a command with an
/// expected revision asked to lose; one without re-applies itself to the
/// newer state.
fn after_race<T>(
    outcome: Result<T, ServiceError>,
    expected: Revision,
) -> ControlFlow<Result<T, ServiceError>> {
    match outcome {
        Err(ServiceError::Aborted(_)) if expected == Revision::NONE => ControlFlow::Continue(()),
        other => ControlFlow::Break(other),
    }
}

fn kept_changing(name: &impl Display) -> ServiceError {
    ServiceError::Aborted(format!(
        "{name} kept changing under concurrent writes; retry"
    ))
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
