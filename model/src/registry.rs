//! Each service's resource types, listed once. The projection converter is
//! built from the list, and `tidy` holds the list against the API catalog:
//! a resource type the proto declares but the service never lists would be
//! written and never readable (every read NOT_FOUND), so it fails a test
//! instead.

use crate::Resource;
use crate::convert::VersionConverter;
use fleetlog_events::ResourceName;

/// What a service says about one of its resource types.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registered {
    /// The Rust type's message, e.g. `fleetlog.devices.v1.Device`.
    pub message: String,
    /// It is an API resource (the catalog has it, with standard methods);
    /// otherwise a record only the service itself reads and writes.
    pub served: bool,
    /// `R::Name::PATTERN`.
    pub pattern: &'static str,
    /// `R::FIELD`, the request's body field.
    pub field: &'static str,
    /// `R::ID_FIELD`, the create request's ID field.
    pub id_field: &'static str,
    /// Projections store this type (its events are folded); otherwise it is
    /// an older API version's view of a stored type.
    pub stored: bool,
}

/// The resource types of one service.
#[derive(Default)]
pub struct Registry {
    registered: Vec<Registered>,
    stored: Vec<fn(VersionConverter) -> VersionConverter>,
}

impl Registry {
    pub fn new() -> Self {
        Registry::default()
    }

    /// An API resource the projections store, by its storage-version
    /// message: every projection converts its events into its own version.
    pub fn stored<R: Resource>(mut self) -> Self {
        self.registered.push(registered::<R>(true, true));
        self.stored.push(VersionConverter::with::<R>);
        self
    }

    /// A stored record that is no API resource: the service reads and
    /// writes it through its own actions (IAM's key hashes).
    pub fn internal<R: Resource>(mut self) -> Self {
        self.registered.push(registered::<R>(false, true));
        self.stored.push(VersionConverter::with::<R>);
        self
    }

    /// An API resource of an older API version, read and written through
    /// the stored type it converts to.
    pub fn older<R: Resource>(mut self) -> Self {
        self.registered.push(registered::<R>(true, false));
        self
    }

    /// What a projection of `version` holds: every stored type, converted
    /// from whatever version its events were written in.
    pub fn converter(&self, version: &str) -> VersionConverter {
        self.stored
            .iter()
            .fold(VersionConverter::new(version), |converter, add| {
                add(converter)
            })
    }

    pub fn registered(&self) -> &[Registered] {
        &self.registered
    }
}

fn message_of<R: Resource>() -> String {
    R::default().descriptor().full_name().to_owned()
}

fn registered<R: Resource>(served: bool, stored: bool) -> Registered {
    Registered {
        message: message_of::<R>(),
        served,
        pattern: <R::Name as ResourceName>::PATTERN,
        field: R::FIELD,
        id_field: R::ID_FIELD,
        stored,
    }
}
