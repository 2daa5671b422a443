//! Typed, hierarchical resource names (Google AIP style).
//!
//! Each name pattern gets its own type, declared with [`resource_name!`];
//! parsing validates every ID once, so code that holds a `DeviceName` never
//! re-checks it and never splices strings to build one.

use std::fmt;
use std::str::FromStr;

/// Longest permitted resource ID.
pub const MAX_ID_LEN: usize = 32;

/// One ID segment of a name: 1–32 characters of `a-z 0-9 - _`.
///
/// The alphabet keeps IDs safe as NATS subject tokens and RocksDB key parts
/// (no `.`, `*`, `>`, `/` or whitespace).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id(String);

impl Id {
    pub fn parse(text: &str) -> Result<Self, NameError> {
        if text.is_empty() {
            return Err(NameError::new("an ID must not be empty"));
        }
        if text.len() > MAX_ID_LEN {
            return Err(NameError::new(format!(
                "ID \"{}\" is {} characters long; at most {MAX_ID_LEN} are allowed",
                text.escape_debug(),
                text.len()
            )));
        }
        if let Some(bad) = text
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '_'))
        {
            return Err(NameError::new(format!(
                "ID \"{}\" contains '{}'; IDs use only a-z, 0-9, '-' and '_'",
                text.escape_debug(),
                bad.escape_debug()
            )));
        }
        Ok(Id(text.to_owned()))
    }

    /// A DNS-style ID such as `devices.fleetlog.io` (service names): labels
    /// of `a-z 0-9 -` joined by single dots, at most 63 characters. Subjects
    /// encode the dots (see `subject`), so the alphabet stays injective.
    pub fn parse_domain(text: &str) -> Result<Self, NameError> {
        if text.is_empty() || text.len() > MAX_DOMAIN_ID_LEN {
            return Err(NameError::new(format!(
                "domain ID \"{}\" must be 1 to {MAX_DOMAIN_ID_LEN} characters long",
                text.escape_debug()
            )));
        }
        for label in text.split('.') {
            let well_formed = !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
            if !well_formed {
                return Err(NameError::new(format!(
                    "domain ID \"{}\" is not a DNS-style name: use labels of a-z, 0-9 and '-' joined by single dots, e.g. devices.fleetlog.io",
                    text.escape_debug()
                )));
            }
        }
        Ok(Id(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Longest permitted DNS-style ID.
pub const MAX_DOMAIN_ID_LEN: usize = 63;

/// [`Id::parse`]'s rule as a regular expression (unanchored; the same in
/// Rust and ECMAScript syntax), for API documents.
pub const ID_REGEX: &str = "[a-z0-9_-]{1,32}";

/// [`Id::parse_domain`]'s rule as a regular expression, except the length
/// limit ([`MAX_DOMAIN_ID_LEN`]), which documents state on their own.
pub const DOMAIN_ID_REGEX: &str =
    r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*";

/// A subset of the DNS-style IDs whose length the expression itself bounds
/// (a first label of up to 30 characters and up to three more of up to 10:
/// at most 63), for a DNS-style ID inside a longer string (a whole name),
/// where no separate length limit can apply to it.
pub const BOUNDED_DOMAIN_ID_REGEX: &str =
    r"[a-z0-9]([a-z0-9-]{0,28}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?){0,3}";

/// How one ID segment of a pattern is parsed: [`Id::parse`] or
/// [`Id::parse_domain`].
pub type IdParser = fn(&str) -> Result<Id, NameError>;

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Id {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Id::parse(s)
    }
}

/// Why a name or ID was rejected. Callers add which request field it was.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NameError(String);

impl NameError {
    pub fn new(message: impl Into<String>) -> Self {
        NameError(message.into())
    }
}

/// The parent of a collection, e.g. `projects/p0/regions/eu1` for devices.
pub trait ParentName:
    Clone + fmt::Debug + fmt::Display + FromStr<Err = NameError> + Eq + Send + Sync + 'static
{
    /// The pattern, for error messages, e.g. `projects/{project}/regions/{region}`.
    const PATTERN: &'static str;

    /// The ID after the `projects` segment, if the pattern has one: the
    /// project that owns everything below (access is granted per project).
    fn project(&self) -> Option<&Id>;

    /// The ID after the `regions` segment, if the pattern has one: the
    /// region that owns everything below (commands run there).
    fn region(&self) -> Option<&Id>;

    /// The same parent in `region` (unchanged when the pattern has no
    /// `regions` segment): `regions/-` made one region's.
    fn in_region(&self, region: &Id) -> Self
    where
        Self: Sized;
}

/// A resource name of one pattern.
pub trait ResourceName:
    Clone
    + fmt::Debug
    + fmt::Display
    + FromStr<Err = NameError>
    + Eq
    + std::hash::Hash
    + Send
    + Sync
    + 'static
{
    type Parent: ParentName;
    /// The collection segment, e.g. `devices`.
    const COLLECTION: &'static str;
    /// The full pattern, for error messages.
    const PATTERN: &'static str;

    fn new(parent: Self::Parent, id: Id) -> Self;
    /// Parses a new resource's ID (create requests) with this pattern's
    /// alphabet for its last segment.
    fn parse_id(text: &str) -> Result<Id, NameError>;
    fn parent(&self) -> Self::Parent;
    fn id(&self) -> &Id;

    /// Where the names of this collection under `parent` start in key
    /// order: `{parent}/{collection}/`, or `{collection}/` at the root.
    fn collection_prefix(parent: &Self::Parent) -> String {
        let parent = parent.to_string();
        if parent.is_empty() {
            format!("{}/", Self::COLLECTION)
        } else {
            format!("{parent}/{}/", Self::COLLECTION)
        }
    }

    /// The project that owns the resource, if its pattern has one.
    fn project(&self) -> Option<&Id>;

    /// The region that owns the resource: the `regions` segment of its
    /// parent, if the pattern has one (`regions/{region}` itself has none:
    /// a Region is not inside a region).
    fn region(&self) -> Option<&Id>;
}

/// A resource's name in the one fixed storage form of its type. The subject,
/// the shard and the optimistic-concurrency line of a resource all derive from
/// it, whatever API version a command arrived in.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StorageKey(String);

impl StorageKey {
    /// Only typed names make storage keys, so the text is a valid name.
    pub fn from_name<N: ResourceName>(name: &N) -> Self {
        StorageKey(name.to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The `/`-separated segments (collection and ID tokens, alternating).
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    /// Re-reads a storage key found in the log (a subject or an envelope).
    pub fn parse<N: ResourceName>(text: &str) -> Result<(Self, N), NameError> {
        let name: N = text.parse()?;
        Ok((StorageKey::from_name(&name), name))
    }
}

impl fmt::Display for StorageKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Splits `text` on `/` and checks the collection tokens against `pattern`,
/// returning the IDs. `expected` is the pattern text for messages.
#[doc(hidden)]
pub fn parse_segments(
    text: &str,
    collections: &[(&str, IdParser)],
    expected: &str,
) -> Result<Vec<Id>, NameError> {
    let mismatch = || {
        NameError::new(format!(
            "\"{}\" does not match the pattern {expected}",
            text.escape_debug()
        ))
    };
    if collections.is_empty() {
        return if text.is_empty() {
            Ok(Vec::new())
        } else {
            Err(mismatch())
        };
    }
    let parts: Vec<&str> = text.split('/').collect();
    if parts.len() != collections.len() * 2 {
        return Err(mismatch());
    }
    let mut ids = Vec::with_capacity(collections.len());
    for (pair, (collection, parse)) in parts.chunks(2).zip(collections) {
        if pair[0] != *collection {
            return Err(mismatch());
        }
        ids.push(
            parse(pair[1]).map_err(|e| {
                NameError::new(format!("{e} (in {collection}/{{id}} of {expected})"))
            })?,
        );
    }
    Ok(ids)
}

/// The parser of one ID segment: `[domain]` after a segment in
/// [`resource_name!`] selects DNS-style IDs.
#[doc(hidden)]
#[macro_export]
macro_rules! __id_parser {
    () => {
        $crate::name::Id::parse
    };
    (domain) => {
        $crate::name::Id::parse_domain
    };
}

/// Declares a typed resource name and its parent type. A segment followed by
/// `[domain]` takes DNS-style IDs (`services/devices.fleetlog.io`).
///
/// ```ignore
/// resource_name! {
///     /// `projects/{project}/regions/{region}/devices/{device}`
///     pub struct DeviceName {
///         parent DeviceParent { projects: project, regions: region }
///         devices: device
///     }
/// }
/// ```
#[macro_export]
macro_rules! resource_name {
    (
        $(#[$doc:meta])*
        pub struct $name:ident {
            parent $parent:ident { $($pc:ident : $pf:ident $([$pk:ident])?),* $(,)? }
            $c:ident : $f:ident $([$k:ident])? $(,)?
        }
    ) => {
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $parent {
            $(pub $pf: $crate::name::Id,)*
        }

        impl $parent {
            const COLLECTIONS: &'static [(&'static str, $crate::name::IdParser)] =
                &[$((stringify!($pc), $crate::__id_parser!($($pk)?))),*];
        }

        impl ::std::fmt::Display for $parent {
            #[allow(unused_mut, unused_variables, unused_assignments)]
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                let mut sep = "";
                $(
                    write!(f, "{}{}/{}", sep, stringify!($pc), self.$pf)?;
                    sep = "/";
                )*
                Ok(())
            }
        }

        impl ::std::str::FromStr for $parent {
            type Err = $crate::name::NameError;
            #[allow(unused_mut, unused_variables)]
            fn from_str(text: &str) -> Result<Self, Self::Err> {
                let ids = $crate::name::parse_segments(
                    text,
                    Self::COLLECTIONS,
                    <Self as $crate::name::ParentName>::PATTERN,
                )?;
                let mut ids = ids.into_iter();
                Ok($parent {
                    $($pf: ids.next().ok_or_else(|| $crate::name::NameError::new("missing ID"))?,)*
                })
            }
        }

        impl $crate::name::ParentName for $parent {
            const PATTERN: &'static str = concat!($(stringify!($pc), "/{", stringify!($pf), "}/",)* "");

            fn project(&self) -> Option<&$crate::name::Id> {
                $(
                    if stringify!($pc) == "projects" {
                        return Some(&self.$pf);
                    }
                )*
                None
            }

            fn region(&self) -> Option<&$crate::name::Id> {
                $(
                    if stringify!($pc) == "regions" {
                        return Some(&self.$pf);
                    }
                )*
                None
            }

            #[allow(unused_variables, unused_mut)]
            fn in_region(&self, region: &$crate::name::Id) -> Self {
                let mut other = self.clone();
                $(
                    if stringify!($pc) == "regions" {
                        other.$pf = region.clone();
                    }
                )*
                other
            }
        }

        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name {
            $(pub $pf: $crate::name::Id,)*
            pub $f: $crate::name::Id,
        }

        impl $name {
            const COLLECTIONS: &'static [(&'static str, $crate::name::IdParser)] = &[
                $((stringify!($pc), $crate::__id_parser!($($pk)?)),)*
                (stringify!($c), $crate::__id_parser!($($k)?)),
            ];
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                $( write!(f, "{}/{}/", stringify!($pc), self.$pf)?; )*
                write!(f, "{}/{}", stringify!($c), self.$f)
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::name::NameError;
            fn from_str(text: &str) -> Result<Self, Self::Err> {
                let ids = $crate::name::parse_segments(
                    text,
                    Self::COLLECTIONS,
                    <Self as $crate::name::ResourceName>::PATTERN,
                )?;
                let mut ids = ids.into_iter();
                Ok($name {
                    $($pf: ids.next().ok_or_else(|| $crate::name::NameError::new("missing ID"))?,)*
                    $f: ids.next().ok_or_else(|| $crate::name::NameError::new("missing ID"))?,
                })
            }
        }

        impl $crate::name::ResourceName for $name {
            type Parent = $parent;
            const COLLECTION: &'static str = stringify!($c);
            const PATTERN: &'static str = concat!(
                $(stringify!($pc), "/{", stringify!($pf), "}/",)* stringify!($c), "/{", stringify!($f), "}"
            );

            #[allow(unused_variables)]
            fn new(parent: $parent, id: $crate::name::Id) -> Self {
                $name { $($pf: parent.$pf,)* $f: id }
            }

            fn parse_id(text: &str) -> Result<$crate::name::Id, $crate::name::NameError> {
                ($crate::__id_parser!($($k)?))(text)
            }

            fn parent(&self) -> $parent {
                $parent { $($pf: self.$pf.clone(),)* }
            }

            fn id(&self) -> &$crate::name::Id {
                &self.$f
            }

            fn project(&self) -> Option<&$crate::name::Id> {
                $(
                    if stringify!($pc) == "projects" {
                        return Some(&self.$pf);
                    }
                )*
                None
            }

            fn region(&self) -> Option<&$crate::name::Id> {
                $(
                    if stringify!($pc) == "regions" {
                        return Some(&self.$pf);
                    }
                )*
                None
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    resource_name! {
        /// `projects/{project}/regions/{region}/things/{thing}`
        pub struct ThingName {
            parent ThingParent { projects: project, regions: region }
            things: thing
        }
    }

    resource_name! {
        /// `regions/{region}`
        pub struct RegionName {
            parent RegionRoot {}
            regions: region
        }
    }

    resource_name! {
        /// `zones/{zone}`
        pub struct ZoneName {
            parent Root {}
            zones: zone
        }
    }

    #[test]
    fn round_trips_and_splits_into_parent_and_id() {
        let name: ThingName = "projects/p0/regions/eu1/things/t-1_x"
            .parse()
            .expect("valid");
        assert_eq!(name.to_string(), "projects/p0/regions/eu1/things/t-1_x");
        assert_eq!(name.parent().to_string(), "projects/p0/regions/eu1");
        assert_eq!(name.id().as_str(), "t-1_x");
        let rebuilt = ThingName::new(name.parent(), name.id().clone());
        assert_eq!(rebuilt, name);
        let zone: ZoneName = "zones/z".parse().expect("valid");
        assert_eq!(zone.parent().to_string(), "");
        assert_eq!(
            ThingName::PATTERN,
            "projects/{project}/regions/{region}/things/{thing}"
        );
        assert_eq!(ThingParent::PATTERN, "projects/{project}/regions/{region}/");
        assert_eq!(name.project().map(Id::as_str), Some("p0"));
        assert_eq!(name.parent().project().map(Id::as_str), Some("p0"));
        assert_eq!(zone.project(), None);
        assert_eq!(name.region().map(Id::as_str), Some("eu1"));
        assert_eq!(name.parent().region().map(Id::as_str), Some("eu1"));
        let region: RegionName = "regions/eu1".parse().expect("valid");
        assert_eq!(region.region(), None, "a region is not inside one");
        assert_eq!(
            ThingName::collection_prefix(&name.parent()),
            "projects/p0/regions/eu1/things/"
        );
        assert_eq!(ZoneName::collection_prefix(&zone.parent()), "zones/");
    }

    resource_name! {
        /// `services/{service}/deployments/{deployment}`
        pub struct DeploymentName {
            parent ServiceParent { services: service [domain] }
            deployments: deployment
        }
    }

    #[test]
    fn domain_segments_take_dns_style_ids() {
        let name: DeploymentName = "services/devices.fleetlog.io/deployments/eu1"
            .parse()
            .expect("valid");
        assert_eq!(name.service.as_str(), "devices.fleetlog.io");
        assert_eq!(
            name.to_string(),
            "services/devices.fleetlog.io/deployments/eu1"
        );
        for bad in [
            "services/devices..io/deployments/eu1",
            "services/.io/deployments/eu1",
            "services/Devices.io/deployments/eu1",
            "services/devices.io/deployments/e.u1",
        ] {
            assert!(bad.parse::<DeploymentName>().is_err(), "{bad}");
        }
        assert!(DeploymentName::parse_id("eu1").is_ok());
        assert!(DeploymentName::parse_id("e.u1").is_err());
    }

    #[test]
    fn the_regexes_say_what_the_parsers_accept() {
        let id = regex::Regex::new(&format!("^{ID_REGEX}$")).expect("valid");
        let domain = regex::Regex::new(&format!("^{DOMAIN_ID_REGEX}$")).expect("valid");
        let samples = [
            "",
            "a",
            "a-b_c",
            "0",
            "-",
            "_x",
            "A",
            "a.b",
            "a b",
            "d\u{e9}",
            "a/b",
            "a*",
            "devices.fleetlog.io",
            "a..b",
            ".a",
            "a.",
            "-a.b",
            "a-.b",
            "a.-b",
            "x-1.y-2",
            "under_score.io",
            &"a".repeat(32),
            &"a".repeat(33),
        ];
        let bounded = regex::Regex::new(&format!("^{BOUNDED_DOMAIN_ID_REGEX}$")).expect("valid");
        for fits in ["devices.fleetlog.io", "api.platform.example.com", "a"] {
            assert!(bounded.is_match(fits), "{fits}");
        }
        for sample in samples {
            if bounded.is_match(sample) {
                assert!(Id::parse_domain(sample).is_ok(), "bounded {sample:?}");
            }
            assert_eq!(
                id.is_match(sample),
                Id::parse(sample).is_ok(),
                "id {sample:?}"
            );
            let within = sample.len() <= MAX_DOMAIN_ID_LEN;
            assert_eq!(
                domain.is_match(sample) && within,
                Id::parse_domain(sample).is_ok(),
                "domain {sample:?}"
            );
        }
    }

    #[test]
    fn rejects_malformed_names_with_a_reason() {
        let cases = [
            ("", "does not match"),
            ("projects/p0/things/t", "does not match"),
            ("projects/p0/regions/eu1/things/", "must not be empty"),
            ("projects/P0/regions/eu1/things/t", "contains 'P'"),
            ("projects/p0/regions/eu1/things/t.x", "contains '.'"),
            ("projects/p0/regions/eu1/things/a*", "contains '*'"),
            ("projects/p0/regions/eu1/things/t/x", "does not match"),
            ("projects/p0/regions/eu1/gadgets/t", "does not match"),
            (
                "projects/p0/regions/eu1/things/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                "at most 32",
            ),
        ];
        for (text, reason) in cases {
            let err = text.parse::<ThingName>().expect_err(text);
            assert!(err.to_string().contains(reason), "{text}: {err}");
        }
        assert!(Id::parse(&"a".repeat(32)).is_ok());
    }
}
