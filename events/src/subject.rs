//! The only code that builds NATS subjects and stream names.
//!
//! A resource's subject mirrors its storage key with a shard token in front:
//! `ev.devices.eu1.s07.projects.p0.regions.eu1.devices.d0`. IDs never contain
//! `.`, `*` or `>` (see [`crate::name::Id`]), so a name maps onto subject
//! tokens one to one.

use std::fmt;

use crate::name::{Id, ResourceName, StorageKey};

/// Number of shards a service's resources are spread over.
pub const SHARD_RING_SIZE: u64 = 16;

/// A shard of the ring: FNV-1a 64 of the storage key modulo [`SHARD_RING_SIZE`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardId(u8);

impl ShardId {
    /// Every shard of the ring.
    pub fn all() -> impl Iterator<Item = ShardId> {
        (0..SHARD_RING_SIZE as u8).map(ShardId)
    }

    pub fn of(key: &StorageKey) -> Self {
        let hash = fnv1a64(key.as_str().as_bytes());
        // The modulus is 16, so the result always fits a u8.
        ShardId((hash % SHARD_RING_SIZE) as u8)
    }

    pub fn index(self) -> u8 {
        self.0
    }
}

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s{:02}", self.0)
    }
}

fn fnv1a64(bytes: &[u8]) -> u64 {
    use std::hash::Hasher;
    let mut hasher = fnv::FnvHasher::default();
    hasher.write(bytes);
    hasher.finish()
}

/// The stream of one service in one region, e.g. `DEVICES_EU1` on
/// `ev.devices.eu1.>`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StreamId {
    service: Id,
    region: Id,
}

impl StreamId {
    /// `service` is the short service token (`devices`, `meta`, `iam`).
    pub fn new(service: Id, region: Id) -> Self {
        StreamId { service, region }
    }

    pub fn service(&self) -> &Id {
        &self.service
    }

    pub fn region(&self) -> &Id {
        &self.region
    }

    /// The JetStream stream name. Stream names may not contain `.`; `-` and
    /// `_` are allowed.
    pub fn stream_name(&self) -> String {
        format!(
            "{}_{}",
            self.service.as_str().to_ascii_uppercase(),
            self.region.as_str().to_ascii_uppercase()
        )
    }

    /// Every subject of the stream.
    pub fn all_subjects(&self) -> String {
        format!("ev.{}.{}.>", self.service, self.region)
    }

    /// The subject of one resource.
    pub fn resource_subject(&self, key: &StorageKey) -> String {
        let mut subject = format!("ev.{}.{}.{}", self.service, self.region, ShardId::of(key));
        for segment in key.segments() {
            subject.push('.');
            push_token(&mut subject, segment);
        }
        subject
    }

    /// Every subject of one shard.
    pub fn shard_subjects(&self, shard: ShardId) -> String {
        format!("ev.{}.{}.{}.>", self.service, self.region, shard)
    }

    /// Every resource of one collection under `parent`, on any shard.
    pub fn collection_subject<N: ResourceName>(&self, parent: &N::Parent) -> String {
        let mut subject = format!("ev.{}.{}.*", self.service, self.region);
        let parent = parent.to_string();
        for segment in parent.split('/').filter(|s| !s.is_empty()) {
            subject.push('.');
            push_token(&mut subject, segment);
        }
        subject.push('.');
        subject.push_str(N::COLLECTION);
        subject.push_str(".*");
        subject
    }

    /// Recovers the storage key from a resource subject of this stream.
    pub fn storage_key_of(&self, subject: &str) -> Option<String> {
        let prefix = format!("ev.{}.{}.", self.service, self.region);
        let rest = subject.strip_prefix(&prefix)?;
        let (_shard, key) = rest.split_once('.')?;
        Some(key.replace('.', "/").replace(DOT_IN_TOKEN, "."))
    }
}

/// Dots separate subject tokens, so the dots of DNS-style IDs
/// (`devices.fleetlog.io`) travel as `~`, which no ID contains.
const DOT_IN_TOKEN: char = '~';

/// The stream of a region's archived device logs: journal entries, not
/// resource events, one subject per device (its storage key's segments).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceLogStream {
    region: Id,
}

impl DeviceLogStream {
    pub fn new(region: Id) -> Self {
        DeviceLogStream { region }
    }

    pub fn stream_name(&self) -> String {
        format!("DEVICELOGS_{}", self.region.as_str().to_ascii_uppercase())
    }

    pub fn all_subjects(&self) -> String {
        format!("logs.devices.{}.>", self.region)
    }

    /// The subject of one device's entries.
    pub fn device_subject(&self, key: &StorageKey) -> String {
        let mut subject = format!("logs.devices.{}", self.region);
        for segment in key.segments() {
            subject.push('.');
            push_token(&mut subject, segment);
        }
        subject
    }
}

fn push_token(subject: &mut String, segment: &str) {
    subject.extend(
        segment
            .chars()
            .map(|c| if c == '.' { DOT_IN_TOKEN } else { c }),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::resource_name! {
        pub struct DeviceName {
            parent DeviceParent { projects: project, regions: region }
            devices: device
        }
    }

    fn id(s: &str) -> Id {
        Id::parse(s).expect("valid id")
    }

    #[test]
    fn subjects_mirror_names_with_a_shard() {
        let stream = StreamId::new(id("devices"), id("eu1"));
        let name: DeviceName = "projects/p0/regions/eu1/devices/d0".parse().expect("valid");
        let key = StorageKey::from_name(&name);
        let shard = ShardId::of(&key);
        assert_eq!(stream.stream_name(), "DEVICES_EU1");
        assert_eq!(stream.all_subjects(), "ev.devices.eu1.>");
        assert_eq!(
            stream.resource_subject(&key),
            format!("ev.devices.eu1.{shard}.projects.p0.regions.eu1.devices.d0")
        );
        assert_eq!(
            stream.collection_subject::<DeviceName>(&name.parent()),
            "ev.devices.eu1.*.projects.p0.regions.eu1.devices.*"
        );
        assert_eq!(
            stream
                .storage_key_of(&stream.resource_subject(&key))
                .as_deref(),
            Some("projects/p0/regions/eu1/devices/d0")
        );
    }

    crate::resource_name! {
        pub struct ServiceName {
            parent Root {}
            services: service [domain]
        }
    }

    #[test]
    fn dotted_ids_round_trip_through_subjects() {
        let stream = StreamId::new(id("meta"), id("eu1"));
        let name: ServiceName = "services/devices.fleetlog.io".parse().expect("valid");
        let key = StorageKey::from_name(&name);
        let subject = stream.resource_subject(&key);
        assert!(
            subject.ends_with(".services.devices~fleetlog~io"),
            "{subject}"
        );
        assert_eq!(
            stream.storage_key_of(&subject).as_deref(),
            Some("services/devices.fleetlog.io")
        );
    }

    #[test]
    fn shard_is_fnv1a_64_mod_16() {
        // FNV-1a 64 reference values: "" -> cbf29ce484222325, "a" -> af63dc4c8601ec8c.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        let name: DeviceName = "projects/p0/regions/eu1/devices/d0".parse().expect("valid");
        let key = StorageKey::from_name(&name);
        assert_eq!(
            u64::from(ShardId::of(&key).index()),
            fnv1a64(key.as_str().as_bytes()) % 16
        );
        // Names spread over the whole ring.
        let shards: std::collections::HashSet<u8> = (0..200)
            .map(|i| {
                let n: DeviceName = format!("projects/p0/regions/eu1/devices/d{i}")
                    .parse()
                    .expect("valid");
                ShardId::of(&StorageKey::from_name(&n)).index()
            })
            .collect();
        assert_eq!(shards.len(), 16);
    }
}
