//! Typed resource names and `key=value` labels, parsed from the command line.
//!
//! These implement [`FromStr`] so clap can use them as argument types: a
//! malformed value is reported as a usage error (exit code 2) naming the
//! argument.

use std::fmt;
use std::str::FromStr;

/// A device name, `projects/{project}/regions/{region}/devices/{device}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceName {
    pub project: String,
    pub region: String,
    pub device: String,
}

impl DeviceName {
    /// The collection the device lives in: `projects/{project}/regions/{region}`.
    pub fn parent(&self) -> String {
        format!("projects/{}/regions/{}", self.project, self.region)
    }

    /// The device ID, the last segment of the name.
    pub fn device_id(&self) -> &str {
        &self.device
    }
}

impl fmt::Display for DeviceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "projects/{}/regions/{}/devices/{}",
            self.project, self.region, self.device
        )
    }
}

impl FromStr for DeviceName {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const PATTERN: &str = "projects/{project}/regions/{region}/devices/{device}";
        let ids = match_pattern(s, &["projects", "regions", "devices"], PATTERN)?;
        let [project, region, device] = ids;
        Ok(DeviceName {
            project,
            region,
            device,
        })
    }
}

/// The parent of devices, `projects/{project}/regions/{region}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionName {
    pub project: String,
    pub region: String,
}

impl fmt::Display for RegionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "projects/{}/regions/{}", self.project, self.region)
    }
}

impl FromStr for RegionName {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const PATTERN: &str = "projects/{project}/regions/{region}";
        let [project, region] = match_pattern(s, &["projects", "regions"], PATTERN)?;
        Ok(RegionName { project, region })
    }
}

/// Matches `s` against `collection/{id}/collection/{id}/...` and returns the IDs.
fn match_pattern<const N: usize>(
    s: &str,
    collections: &[&str; N],
    pattern: &'static str,
) -> Result<[String; N], NameError> {
    let err = |reason: String| NameError {
        name: s.to_owned(),
        pattern,
        reason,
    };
    let segments: Vec<&str> = s.split('/').collect();
    if segments.len() != 2 * N {
        return Err(err(format!(
            "expected {} segments separated by '/', found {}",
            2 * N,
            segments.len()
        )));
    }
    let mut ids: [String; N] = std::array::from_fn(|_| String::new());
    for (i, (pair, collection)) in segments.chunks_exact(2).zip(collections).enumerate() {
        let (found, id) = (pair[0], pair[1]);
        if found != *collection {
            return Err(err(format!(
                "segment {} must be '{collection}', found '{found}'",
                2 * i + 1
            )));
        }
        if id.is_empty() {
            return Err(err(format!("the ID after '{collection}/' is empty")));
        }
        if id.chars().any(char::is_whitespace) {
            return Err(err(format!("the ID '{id}' contains whitespace")));
        }
        ids[i] = id.to_owned();
    }
    Ok(ids)
}

/// A resource name that does not match its pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameError {
    name: String,
    pattern: &'static str,
    reason: String,
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "'{}' is not a name of the form {}: {}",
            self.name, self.pattern, self.reason
        )
    }
}

impl std::error::Error for NameError {}

/// A `key=value` label from `--label`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    pub key: String,
    pub value: String,
}

impl FromStr for Label {
    type Err = LabelError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let Some((key, value)) = s.split_once('=') else {
            return Err(LabelError(format!(
                "'{s}' is not of the form key=value (missing '=')"
            )));
        };
        let key = key.trim();
        if key.is_empty() {
            return Err(LabelError(format!("'{s}' has an empty label key")));
        }
        if key.chars().any(char::is_whitespace) {
            return Err(LabelError(format!(
                "label key '{key}' must not contain whitespace"
            )));
        }
        Ok(Label {
            key: key.to_owned(),
            value: value.to_owned(),
        })
    }
}

/// A malformed `--label` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelError(String);

impl fmt::Display for LabelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LabelError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_name_splits_into_parent_and_id() {
        let name: DeviceName = "projects/p1/regions/eu-west/devices/dev-7"
            .parse()
            .expect("valid name");
        assert_eq!(name.parent(), "projects/p1/regions/eu-west");
        assert_eq!(name.device_id(), "dev-7");
        assert_eq!(
            name.to_string(),
            "projects/p1/regions/eu-west/devices/dev-7"
        );
    }

    #[test]
    fn device_name_rejects_malformed_names() {
        for bad in [
            "",
            "dev-7",
            "projects/p1/devices/dev-7",
            "projects/p1/regions/r/devices",
            "projects/p1/regions/r/devices/",
            "projects//regions/r/devices/d",
            "projects/p/zones/r/devices/d",
            "projects/p/regions/r/policies/d",
            "projects/p/regions/r/devices/d/extra",
            "/projects/p/regions/r/devices/d",
            "projects/p/regions/r/devices/d e",
        ] {
            let err = bad.parse::<DeviceName>().expect_err(bad);
            let msg = err.to_string();
            assert!(
                msg.contains("projects/{project}/regions/{region}/devices/{device}"),
                "{msg}"
            );
        }
    }

    #[test]
    fn device_name_error_says_what_is_wrong() {
        let err = "projects/p/zones/r/devices/d"
            .parse::<DeviceName>()
            .expect_err("bad collection");
        assert!(
            err.to_string().contains("must be 'regions', found 'zones'"),
            "{err}"
        );
    }

    #[test]
    fn region_name_parses() {
        let parent: RegionName = "projects/p/regions/r".parse().expect("valid parent");
        assert_eq!(parent.project, "p");
        assert_eq!(parent.region, "r");
        assert_eq!(parent.to_string(), "projects/p/regions/r");
        assert!("projects/p".parse::<RegionName>().is_err());
        assert!(
            "projects/p/regions/r/devices/d"
                .parse::<RegionName>()
                .is_err()
        );
    }

    #[test]
    fn labels_parse() {
        let l: Label = "site=berlin".parse().expect("valid label");
        assert_eq!((l.key.as_str(), l.value.as_str()), ("site", "berlin"));
        // Only the first '=' separates; the value may be empty or contain '='.
        let l: Label = "expr=a=b".parse().expect("valid label");
        assert_eq!((l.key.as_str(), l.value.as_str()), ("expr", "a=b"));
        let l: Label = "empty=".parse().expect("valid label");
        assert_eq!((l.key.as_str(), l.value.as_str()), ("empty", ""));
    }

    #[test]
    fn labels_reject_malformed() {
        assert!("site".parse::<Label>().is_err());
        assert!("=berlin".parse::<Label>().is_err());
        assert!("a b=c".parse::<Label>().is_err());
    }
}
