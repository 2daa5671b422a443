//! Resource names, checked as fleetd will parse them: the shape by the
//! catalog's pattern (read from the proto descriptors), each ID by the rules
//! of `fleetlog_events::Id`, which fleetd's typed names use. fleetctl holds
//! no pattern of its own, so a resource added to the protos is checked here
//! as it is, and a malformed name is a usage error before any call.

use fleetlog_events::Id;
use fleetlog_proto::catalog::{CATALOG, NamePattern};

/// Checks `name` against `pattern`; the error names both, and which ID is
/// wrong when the shape is right.
pub fn check(pattern: &NamePattern, name: &str) -> Result<(), String> {
    let wrong = |reason: &str| format!("'{name}' is not a name of the form {pattern}{reason}");
    if !pattern.matches(name) {
        return Err(wrong(""));
    }
    for (segment, id) in segments(pattern).iter().zip(name.split('/')) {
        let Some(variable) = variable(segment) else {
            continue;
        };
        let parsed = if CATALOG.is_domain_variable(variable) {
            Id::parse_domain(id)
        } else {
            Id::parse(id)
        };
        parsed.map_err(|err| wrong(&format!(": {err} (the {{{variable}}})")))?;
    }
    Ok(())
}

/// The name of `pattern` with `ids` for its variables, in order; [`check`]
/// it, as a missing ID leaves an empty segment.
pub fn fill(pattern: &NamePattern, ids: &[&str]) -> String {
    let mut ids = ids.iter();
    segments(pattern)
        .iter()
        .map(|segment| match variable(segment) {
            Some(_) => ids.next().copied().unwrap_or_default(),
            None => segment.as_str(),
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// The segments of `pattern`: NamePattern keeps its own private, and its
/// text is the pattern as the proto declares it.
fn segments(pattern: &NamePattern) -> Vec<String> {
    pattern.to_string().split('/').map(str::to_owned).collect()
}

/// The variable of a pattern segment (`{device}` → `device`).
fn variable(segment: &str) -> Option<&str> {
    segment.strip_prefix('{').and_then(|s| s.strip_suffix('}'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(text: &str) -> NamePattern {
        NamePattern::parse(text)
    }

    #[test]
    fn names_of_the_pattern_with_valid_ids_pass() {
        let device = pattern("projects/{project}/regions/{region}/devices/{device}");
        assert_eq!(
            check(&device, "projects/p1/regions/eu-west/devices/dev_7"),
            Ok(())
        );
        let deployment = pattern("services/{service}/deployments/{deployment}");
        assert_eq!(
            check(
                &deployment,
                "services/devices.fleetlog.io/deployments/local"
            ),
            Ok(())
        );
    }

    #[test]
    fn malformed_names_are_refused_naming_the_pattern() {
        let text = "projects/{project}/regions/{region}/devices/{device}";
        let device = pattern(text);
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
            "projects/P/regions/r/devices/d",
            "projects/p/regions/r/devices/a.b",
        ] {
            let err = check(&device, bad).expect_err(bad);
            assert!(
                err.contains(text) && err.contains(&format!("'{bad}'")),
                "{err}"
            );
        }
    }

    #[test]
    fn a_bad_id_is_named_with_its_rule() {
        let device = pattern("projects/{project}/regions/{region}/devices/{device}");
        let err = check(&device, "projects/Acme/regions/r/devices/d").expect_err("uppercase");
        assert!(
            err.contains("contains 'A'") && err.contains("{project}"),
            "{err}"
        );
        let long = format!("projects/p/regions/r/devices/{}", "d".repeat(33));
        let err = check(&device, &long).expect_err("too long");
        assert!(
            err.contains("at most 32") && err.contains("{device}"),
            "{err}"
        );
        // Domain variables take DNS-style IDs, and only those.
        let service = pattern("services/{service}");
        assert!(check(&service, "services/devices..io").is_err());
        let region = pattern("regions/{region}");
        assert!(check(&region, "regions/eu.1").is_err());
    }

    #[test]
    fn fill_puts_ids_into_the_variables() {
        let deployment = pattern("services/{service}/deployments/{deployment}");
        let name = fill(&deployment, &["devices.fleetlog.io", "eu1"]);
        assert_eq!(name, "services/devices.fleetlog.io/deployments/eu1");
        assert_eq!(check(&deployment, &name), Ok(()));
        let short = fill(&deployment, &["devices.fleetlog.io"]);
        assert!(check(&deployment, &short).is_err(), "{short}");
    }
}
