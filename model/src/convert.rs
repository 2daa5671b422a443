//! The projection side of API versions: turns each event, whatever version
//! it was written in, into a record of one projection's version (DESIGN §5:
//! every projection converts every event to its own version).

use std::marker::PhantomData;

use fleetlog_events::{StorageKey, StoredEvent};
use fleetlog_projections::projection::type_name_of;
use fleetlog_projections::store::Op;
use fleetlog_projections::{Converter, ProjectionError};

use crate::Resource;

/// Converts the events of a service's resource types into one API version.
pub struct VersionConverter {
    version: String,
    kinds: Vec<Box<dyn KindConverter>>,
}

impl VersionConverter {
    pub fn new(version: impl Into<String>) -> Self {
        VersionConverter {
            version: version.into(),
            kinds: Vec::new(),
        }
    }

    /// Adds a resource type, by its storage-version message.
    pub fn with<R: Resource>(mut self) -> Self {
        self.kinds.push(Box::new(Kind::<R> {
            own_type: R::default().descriptor().full_name().to_owned(),
            _resource: PhantomData,
        }));
        self
    }

    pub fn version(&self) -> &str {
        &self.version
    }
}

impl Converter for VersionConverter {
    fn convert(&self, event: &StoredEvent) -> Result<Op, ProjectionError> {
        let failed = |reason: String| ProjectionError::Conversion {
            revision: event.revision.get(),
            reason,
        };
        let Some(any) = &event.change.resource else {
            return Err(failed("the event carries no resource".into()));
        };
        let type_name = type_name_of(&any.type_url);
        let Some(kind) = self.kinds.iter().find(|k| k.reads(type_name)) else {
            // A resource type this service version does not know (e.g. one
            // added by a later release): not part of this projection.
            return Ok(Op::Skip);
        };
        kind.convert(event, &self.version).map_err(failed)
    }
}

trait KindConverter: Send + Sync + 'static {
    fn reads(&self, type_name: &str) -> bool;
    fn convert(&self, event: &StoredEvent, version: &str) -> Result<Op, String>;
}

struct Kind<R> {
    /// `R`'s full message name, looked up once rather than per event.
    own_type: String,
    _resource: PhantomData<fn() -> R>,
}

impl<R: Resource> KindConverter for Kind<R> {
    fn reads(&self, type_name: &str) -> bool {
        type_name == self.own_type || R::reads_type(type_name)
    }

    fn convert(&self, event: &StoredEvent, version: &str) -> Result<Op, String> {
        let Some(any) = &event.change.resource else {
            return Err("the event carries no resource".into());
        };
        let (key, name) = StorageKey::parse::<R::Name>(&event.change.storage_key)
            .map_err(|e| format!("malformed storage key: {e}"))?;
        let (type_name, name, bytes) = if (version == R::API_VERSION || R::ONE_VERSION)
            && type_name_of(&any.type_url) == self.own_type
        {
            // Written in this projection's own version (the common
            // case once a region runs it): stored as the event carries
            // it, without decoding.
            (self.own_type.clone(), name.to_string(), any.value.clone())
        } else {
            let resource = R::from_wire(any, &key).map_err(|e| e.to_string())?;
            let wire = resource.to_wire(version).map_err(|e| e.to_string())?;
            let type_name = type_name_of(&wire.any.type_url).to_owned();
            (type_name, wire.name, wire.any.value)
        };
        Ok(Op::for_event(event, type_name, name, bytes))
    }
}
