//! The decisions of the commands, as pure functions: from a resource's
//! current state, the request and where and when it is decided, to the
//! change to append or the reason to refuse. No I/O happens here; the
//! engine reads the state and appends what these return (`commands.rs`),
//! and the tests below check each rule given/when/then.
//!
//! Checks that read other resources (`Resource::check_references`,
//! `Resource::check_delete`) are not decisions of the resource itself:
//! the engine runs them on the change a decision returns.

use std::collections::HashMap;
use std::fmt::Display;

use fleetlog_events::Revision;
use fleetlog_events::envelope::ChangeKind;
use fleetlog_projections::query_lang::FieldMask;
use prost_types::Timestamp;

use crate::error::ServiceError;
use fleetlog_model::{FieldViolation, Resource, SHARD_LABEL};

/// What the log says of a resource when a command decides (or what the
/// engine guesses it says; see `commands.rs`).
#[derive(Clone, Debug, PartialEq)]
pub enum Current<R> {
    /// No event on its subject.
    Absent,
    /// Its last event deleted it, at this revision: the name is free again.
    Deleted(Revision),
    /// It exists, as of this revision.
    Live(R, Revision),
}

impl<R> Current<R> {
    /// The revision a write on top of this state expects.
    pub fn revision(&self) -> Revision {
        match self {
            Current::Absent => Revision::NONE,
            Current::Deleted(revision) | Current::Live(_, revision) => *revision,
        }
    }
}

/// Where and when a decision is made: the output-only metadata it stamps.
#[derive(Clone, Debug, PartialEq)]
pub struct Stamp {
    pub now: Timestamp,
    /// The region that owns what is written.
    pub region: String,
    /// The resource's shard (from its storage key).
    pub shard: u32,
}

/// An event to append: the resource's new full state, on top of `expected`.
#[derive(Clone, Debug, PartialEq)]
pub struct Change<R> {
    pub kind: ChangeKind,
    pub resource: R,
    pub update_mask: Option<prost_types::FieldMask>,
    /// The custom action's name (ACTION events only).
    pub action: String,
    pub expected: Revision,
}

/// What a command does.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision<R> {
    Append(Change<R>),
    /// Nothing to write: the command is already satisfied (a delete of a
    /// missing resource with `allow_missing`).
    Nothing,
}

/// An update: the patch, and which of its fields to apply.
pub struct Patch<'a, R> {
    pub resource: &'a R,
    /// Empty: replace everything but the output-only fields.
    pub mask: &'a FieldMask,
    /// The mask as the request sent it, recorded in the event.
    pub update_mask: Option<prost_types::FieldMask>,
}

/// Create `requested` as `name`. Update's `allow_missing` decides with this
/// too, so both are checked the same way.
pub fn create<R: Resource>(
    name: &R::Name,
    mut requested: R,
    current: &Current<R>,
    at: &Stamp,
) -> Result<Change<R>, ServiceError> {
    if let Current::Live(..) = current {
        return Err(ServiceError::AlreadyExists(name.to_string()));
    }
    requested.set_name(name.to_string());
    requested.keep_output_only(None);
    validate(&requested)?;
    stamp(&mut requested, None, at);
    Ok(Change {
        kind: ChangeKind::Created,
        resource: requested,
        update_mask: None,
        action: String::new(),
        expected: current.revision(),
    })
}

/// Update `name` with `patch`, if it is at `expected_revision` (NONE: any).
pub fn update<R: Resource>(
    name: &R::Name,
    patch: Patch<'_, R>,
    expected_revision: Revision,
    allow_missing: bool,
    current: &Current<R>,
    at: &Stamp,
) -> Result<Change<R>, ServiceError> {
    let Current::Live(existing, revision) = current else {
        if allow_missing && expected_revision == Revision::NONE {
            return create(name, patch.resource.clone(), current, at);
        }
        return Err(ServiceError::NotFound(name.to_string()));
    };
    check_expected(name, expected_revision, *revision)?;
    let mut updated = if patch.mask.is_empty() {
        patch.resource.clone()
    } else {
        let mut merged = existing.transcode_to_dynamic();
        patch
            .mask
            .merge_into(&mut merged, &patch.resource.transcode_to_dynamic());
        merged
            .transcode_to::<R>()
            .map_err(|e| ServiceError::Internal(format!("applying the update mask: {e}")))?
    };
    updated.set_name(name.to_string());
    updated.keep_output_only(Some(existing));
    validate(&updated)?;
    stamp(&mut updated, existing.metadata(), at);
    Ok(Change {
        kind: ChangeKind::Updated,
        resource: updated,
        update_mask: patch.update_mask,
        action: String::new(),
        expected: *revision,
    })
}

/// Delete `name`, if it is at `expected_revision` (NONE: any): a tombstone
/// of its last state.
pub fn delete<R: Resource>(
    name: &R::Name,
    expected_revision: Revision,
    allow_missing: bool,
    current: &Current<R>,
    at: &Stamp,
) -> Result<Decision<R>, ServiceError> {
    let Current::Live(existing, revision) = current else {
        return if allow_missing {
            Ok(Decision::Nothing)
        } else {
            Err(ServiceError::NotFound(name.to_string()))
        };
    };
    check_expected(name, expected_revision, *revision)?;
    let mut tombstone = existing.clone();
    let metadata = tombstone.metadata_mut();
    metadata.revision = 0;
    metadata.delete_time = Some(at.now);
    Ok(Decision::Append(Change {
        kind: ChangeKind::Deleted,
        resource: tombstone,
        update_mask: None,
        action: String::new(),
        expected: *revision,
    }))
}

/// The custom action `action` on `name`: `apply` changes the resource or
/// refuses (FAILED_PRECONDITION and the like).
pub fn act<R: Resource>(
    name: &R::Name,
    action: &str,
    expected_revision: Revision,
    apply: &dyn Fn(&mut R) -> Result<(), ServiceError>,
    current: &Current<R>,
    at: &Stamp,
) -> Result<Change<R>, ServiceError> {
    let Current::Live(existing, revision) = current else {
        return Err(ServiceError::NotFound(name.to_string()));
    };
    check_expected(name, expected_revision, *revision)?;
    let mut changed = existing.clone();
    apply(&mut changed)?;
    changed.set_name(name.to_string());
    validate(&changed)?;
    stamp(&mut changed, existing.metadata(), at);
    Ok(Change {
        kind: ChangeKind::Action,
        resource: changed,
        update_mask: None,
        action: action.to_owned(),
        expected: *revision,
    })
}

/// The rules the resource's fields declare (`fleetlog.api.v1.field`), then
/// the type's own; the field is named from the request (`device.spec…`).
pub fn validate<R: Resource>(resource: &R) -> Result<(), ServiceError> {
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

/// A command's `expected_revision` (NONE: no check) against the resource's
/// actual revision: a stale expectation is the client's ABORTED.
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

/// Sets the output-only metadata; whatever a client sent there is ignored.
fn stamp<R: Resource>(
    resource: &mut R,
    previous: Option<&fleetlog_proto::api::v1::Metadata>,
    at: &Stamp,
) {
    let metadata = resource.metadata_mut();
    metadata.create_time = previous.and_then(|p| p.create_time).or(Some(at.now));
    metadata.update_time = Some(at.now);
    metadata.delete_time = None;
    metadata.revision = 0;
    metadata.generation = previous.map_or(0, |p| p.generation) + 1;
    metadata.shards = HashMap::from([(SHARD_LABEL.to_owned(), i64::from(at.shard))]);
    metadata.owning_region = at.region.clone();
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetlog_model::devices::names::DeviceName;
    use fleetlog_proto::api::v1::Metadata;
    use fleetlog_proto::devices::v1::Device;
    use fleetlog_proto::devices::v1::device::{Spec, spec::LoggingConfig};
    use prost_reflect::ReflectMessage;

    fn name() -> DeviceName {
        "projects/p/regions/eu1/devices/d".parse().expect("valid")
    }

    fn at(seconds: i64) -> Stamp {
        Stamp {
            now: Timestamp { seconds, nanos: 0 },
            region: "eu1".into(),
            shard: 7,
        }
    }

    fn device(display_name: &str, priority: i32) -> Device {
        Device {
            display_name: display_name.into(),
            spec: Some(Spec {
                logging_config: Some(LoggingConfig {
                    priority,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// A device as its create at revision `revision`, time 100, wrote it.
    fn live(display_name: &str, revision: u64) -> Current<Device> {
        let created =
            create(&name(), device(display_name, 3), &Current::Absent, &at(100)).expect("valid");
        Current::Live(created.resource, Revision(revision))
    }

    fn mask(paths: &[&str]) -> FieldMask {
        let paths: Vec<String> = paths.iter().map(|p| p.to_string()).collect();
        FieldMask::parse(&paths, &Device::default().descriptor(), "update_mask").expect("valid")
    }

    fn patch<'a>(resource: &'a Device, mask: &'a FieldMask) -> Patch<'a, Device> {
        Patch {
            resource,
            mask,
            update_mask: None,
        }
    }

    #[test]
    fn create_names_and_stamps_a_new_resource() {
        let mut requested = device("gw", 3);
        requested.metadata = Some(Metadata {
            revision: 99,
            generation: 42,
            owning_region: "forged".into(),
            ..Default::default()
        });
        let change = create(&name(), requested, &Current::Absent, &at(100)).expect("created");
        assert_eq!(change.kind, ChangeKind::Created);
        assert_eq!(change.expected, Revision::NONE);
        let created = change.resource;
        assert_eq!(created.name, name().to_string());
        let metadata = created.metadata.expect("stamped");
        assert_eq!(metadata.generation, 1);
        assert_eq!(metadata.revision, 0);
        assert_eq!(metadata.owning_region, "eu1");
        assert_eq!(metadata.create_time, Some(at(100).now));
        assert_eq!(metadata.shards[SHARD_LABEL], 7);
    }

    #[test]
    fn create_goes_on_top_of_a_tombstone_and_refuses_a_live_name() {
        let change = create(
            &name(),
            device("gw", 3),
            &Current::Deleted(Revision(5)),
            &at(1),
        )
        .expect("free again");
        assert_eq!(change.expected, Revision(5));
        let taken = create(&name(), device("gw", 3), &live("old", 4), &at(1));
        assert!(
            matches!(taken, Err(ServiceError::AlreadyExists(_))),
            "{taken:?}"
        );
    }

    #[test]
    fn create_validates_the_declared_rules() {
        let refused = create(&name(), device("gw", 9), &Current::Absent, &at(1));
        match refused {
            Err(ServiceError::InvalidArgument { field, .. }) => {
                assert_eq!(field, "device.spec.logging_config.priority");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn update_without_a_mask_replaces_and_with_one_merges() {
        let current = live("old", 4);
        let empty = mask(&[]);
        let replaced = update(
            &name(),
            patch(&device("new", 5), &empty),
            Revision::NONE,
            false,
            &current,
            &at(200),
        )
        .expect("updated");
        assert_eq!(replaced.kind, ChangeKind::Updated);
        assert_eq!(replaced.expected, Revision(4));
        assert_eq!(replaced.resource.display_name, "new");
        let metadata = replaced.resource.metadata.clone().expect("stamped");
        assert_eq!(metadata.generation, 2);
        assert_eq!(metadata.create_time, Some(at(100).now), "kept");
        assert_eq!(metadata.update_time, Some(at(200).now));

        let only_name = mask(&["display_name"]);
        let merged = update(
            &name(),
            patch(&device("renamed", 6), &only_name),
            Revision::NONE,
            false,
            &current,
            &at(200),
        )
        .expect("updated")
        .resource;
        assert_eq!(merged.display_name, "renamed");
        let priority = merged
            .spec
            .and_then(|s| s.logging_config)
            .map(|l| l.priority);
        assert_eq!(priority, Some(3), "outside the mask: as it was");
    }

    #[test]
    fn update_on_a_stale_revision_is_aborted_and_on_nothing_not_found() {
        let empty = mask(&[]);
        let stale = update(
            &name(),
            patch(&device("x", 1), &empty),
            Revision(3),
            false,
            &live("old", 4),
            &at(1),
        );
        assert!(matches!(stale, Err(ServiceError::Aborted(_))), "{stale:?}");
        let missing = update(
            &name(),
            patch(&device("x", 1), &empty),
            Revision::NONE,
            false,
            &Current::Absent,
            &at(1),
        );
        assert!(
            matches!(missing, Err(ServiceError::NotFound(_))),
            "{missing:?}"
        );
    }

    #[test]
    fn update_with_allow_missing_is_the_create_decision() {
        let empty = mask(&[]);
        let created = update(
            &name(),
            patch(&device("x", 1), &empty),
            Revision::NONE,
            true,
            &Current::Deleted(Revision(8)),
            &at(1),
        )
        .expect("created");
        assert_eq!(
            created,
            create(
                &name(),
                device("x", 1),
                &Current::Deleted(Revision(8)),
                &at(1)
            )
            .expect("created")
        );
        let invalid = update(
            &name(),
            patch(&device("x", 8), &empty),
            Revision::NONE,
            true,
            &Current::Absent,
            &at(1),
        );
        assert!(
            matches!(invalid, Err(ServiceError::InvalidArgument { .. })),
            "{invalid:?}"
        );
        let expecting = update(
            &name(),
            patch(&device("x", 1), &empty),
            Revision(2),
            true,
            &Current::Absent,
            &at(1),
        );
        assert!(
            matches!(expecting, Err(ServiceError::NotFound(_))),
            "an expected revision needs a resource: {expecting:?}"
        );
    }

    #[test]
    fn delete_writes_a_tombstone_of_the_last_state() {
        let decision =
            delete(&name(), Revision::NONE, false, &live("old", 4), &at(300)).expect("deleted");
        let Decision::Append(change) = decision else {
            panic!("nothing written");
        };
        assert_eq!(change.kind, ChangeKind::Deleted);
        assert_eq!(change.expected, Revision(4));
        assert_eq!(change.resource.display_name, "old");
        assert_eq!(
            change.resource.metadata.and_then(|m| m.delete_time),
            Some(at(300).now)
        );
    }

    #[test]
    fn delete_of_nothing_is_not_found_unless_allowed_and_a_stale_one_aborted() {
        let missing = delete::<Device>(
            &name(),
            Revision::NONE,
            false,
            &Current::Deleted(Revision(4)),
            &at(1),
        );
        assert!(
            matches!(missing, Err(ServiceError::NotFound(_))),
            "{missing:?}"
        );
        let allowed = delete::<Device>(&name(), Revision::NONE, true, &Current::Absent, &at(1));
        assert_eq!(allowed.expect("fine"), Decision::Nothing);
        let stale = delete(&name(), Revision(3), false, &live("old", 4), &at(1));
        assert!(matches!(stale, Err(ServiceError::Aborted(_))), "{stale:?}");
    }

    #[test]
    fn actions_change_a_live_resource_or_refuse() {
        let rename = |d: &mut Device| {
            d.display_name = "acted".into();
            Ok(())
        };
        let change = act(
            &name(),
            "Rename",
            Revision::NONE,
            &rename,
            &live("old", 4),
            &at(400),
        )
        .expect("acted");
        assert_eq!(change.kind, ChangeKind::Action);
        assert_eq!(change.action, "Rename");
        assert_eq!(change.resource.display_name, "acted");
        assert_eq!(change.resource.metadata.map(|m| m.generation), Some(2));
        let refuse = |_: &mut Device| Err(ServiceError::FailedPrecondition("not now".into()));
        let refused = act(
            &name(),
            "Rename",
            Revision::NONE,
            &refuse,
            &live("old", 4),
            &at(1),
        );
        assert!(
            matches!(refused, Err(ServiceError::FailedPrecondition(_))),
            "{refused:?}"
        );
        let missing = act(
            &name(),
            "Rename",
            Revision::NONE,
            &rename,
            &Current::Absent,
            &at(1),
        );
        assert!(
            matches!(missing, Err(ServiceError::NotFound(_))),
            "{missing:?}"
        );
        let invalid = |d: &mut Device| {
            *d = device("bad", 11);
            Ok(())
        };
        let refused = act(
            &name(),
            "Break",
            Revision::NONE,
            &invalid,
            &live("old", 4),
            &at(1),
        );
        assert!(
            matches!(refused, Err(ServiceError::InvalidArgument { .. })),
            "{refused:?}"
        );
    }
}
