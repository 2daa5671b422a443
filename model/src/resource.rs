//! What a resource type is to Fleetlog: the [`Resource`] trait a short
//! declarative module implements per type, the forms it takes on the wire,
//! and what its own rules may look at. The engine (in `fleetlog-services`)
//! serves every type that implements it.

use fleetlog_events::{Id, ResourceName, StorageKey};
use fleetlog_projections::Projection;
use fleetlog_projections::ProjectionError;
use fleetlog_projections::query_lang::FieldMask;
use fleetlog_proto::api::v1::Metadata;
use prost_reflect::ReflectMessage;
use prost_types::Any;

use crate::error::ModelError;

/// The key under which `metadata.shards` records the shard of a resource.
pub const SHARD_LABEL: &str = "byNameMod16";

/// Which part of the system a resource belongs to; writes need a different
/// role in each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Area {
    /// Devices, provisioning policies, approval requests: device-operator.
    Devices,
    /// Service accounts and role bindings: admin.
    Iam,
    /// Regions, services, deployments (no project): the bootstrap admin.
    Meta,
}

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

    /// Whether [`check_references`](Self::check_references) or
    /// [`check_delete`](Self::check_delete) read other resources: a
    /// command first waits for the projection to reach the log's last
    /// event, so the checks see what another process wrote a moment ago.
    /// (A stream-state read per command: set only where checks read.)
    const CHECKS_OTHERS: bool = false;

    /// Rules that involve other resources of the same service, checked
    /// against the active projection before a create or update is written
    /// (set [`CHECKS_OTHERS`](Self::CHECKS_OTHERS)).
    fn check_references(&self, _around: &Surroundings<'_>) -> Result<(), ModelError> {
        Ok(())
    }

    /// Refuses to delete this resource while something depends on it
    /// (FAILED_PRECONDITION naming what), checked against the active
    /// projection before the tombstone is written (set
    /// [`CHECKS_OTHERS`](Self::CHECKS_OTHERS)).
    fn check_delete(&self, _around: &Surroundings<'_>) -> Result<(), ModelError> {
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
    fn to_wire(&self, version: &str) -> Result<Wire, ModelError> {
        if version != Self::API_VERSION && !Self::ONE_VERSION {
            return Err(ModelError::Internal(format!(
                "{} has no {version} form",
                self.descriptor().full_name()
            )));
        }
        Ok(Wire::of(self, self.name().to_owned()))
    }

    /// The resource an event carries, written in any API version this type
    /// reads; `key` is the event's storage key.
    fn from_wire(any: &Any, _key: &StorageKey) -> Result<Self, ModelError> {
        decode_own_version(any)
    }
}

/// Decodes an `Any` holding exactly `R`'s message (its own API version).
pub fn decode_own_version<R: Resource>(any: &Any) -> Result<R, ModelError> {
    let descriptor = R::default().descriptor();
    if fleetlog_projections::projection::type_name_of(&any.type_url) != descriptor.full_name() {
        return Err(ModelError::Internal(format!(
            "an event holds {}, not {}",
            any.type_url,
            descriptor.full_name()
        )));
    }
    R::decode(any.value.as_slice())
        .map_err(|e| ModelError::Internal(format!("an event does not decode: {e}")))
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

/// A request's field mask, checked against `R`'s message; `field` names
/// the request field in errors.
pub fn parse_mask<R: Resource>(
    mask: Option<prost_types::FieldMask>,
    field: &'static str,
) -> Result<FieldMask, ModelError> {
    let paths = mask.map(|m| m.paths).unwrap_or_default();
    Ok(FieldMask::parse(&paths, &R::default().descriptor(), field)
        .map_err(ProjectionError::from)?)
}

/// The [`Resource`] accessors of a message with the usual `name` and
/// `metadata` fields; used inside `impl Resource for …`.
#[macro_export]
macro_rules! resource_fields {
    () => {
        fn name(&self) -> &str {
            &self.name
        }

        fn set_name(&mut self, name: String) {
            self.name = name;
        }

        fn metadata(&self) -> Option<&::fleetlog_proto::api::v1::Metadata> {
            self.metadata.as_ref()
        }

        fn metadata_mut(&mut self) -> &mut ::fleetlog_proto::api::v1::Metadata {
            self.metadata.get_or_insert_with(Default::default)
        }
    };
}
