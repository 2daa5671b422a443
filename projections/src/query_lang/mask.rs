//! Field masks (AIP-161): `field_mask` on reads picks the fields returned,
//! `update_mask` on updates picks the fields written.
//!
//! Both directions walk the same resolved [`FieldPath`]s, so a path that a
//! read accepts means exactly the same fields in an update.

use std::fmt;

use prost_reflect::{DynamicMessage, Kind, MessageDescriptor, ReflectMessage, Value};

use super::InvalidArgument;
use super::field_path::{FieldPath, Step};

/// A parsed field mask.
#[derive(Clone, Debug, Default)]
pub struct FieldMask {
    paths: Vec<FieldPath>,
    /// `*`: every field.
    all: bool,
}

impl FieldMask {
    /// Resolves every path against `descriptor`; `field` names the request
    /// field (`field_mask` or `update_mask`) in errors. `*` selects every
    /// field. Map keys are allowed (`metadata.labels.env`), paths through
    /// repeated fields are not.
    pub fn parse(
        paths: &[String],
        descriptor: &MessageDescriptor,
        field: &'static str,
    ) -> Result<FieldMask, InvalidArgument> {
        let mut mask = FieldMask::default();
        for text in paths {
            let text = text.trim();
            if text == "*" {
                mask.all = true;
                continue;
            }
            let path = FieldPath::parse(text, descriptor, field)?;
            if !mask.paths.contains(&path) {
                mask.paths.push(path);
            }
        }
        Ok(mask)
    }

    /// True when no path was given. Callers treat that as "no mask": reads
    /// return whole resources, updates replace the whole resource.
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty() && !self.all
    }

    /// A copy of `msg` with only the masked fields set. Nested paths copy
    /// just that sub-field (and create its parents); `name` is always kept,
    /// because a resource without its name cannot be told apart in a list.
    pub fn project(&self, msg: &DynamicMessage) -> DynamicMessage {
        if self.all {
            return msg.clone();
        }
        let descriptor = msg.descriptor();
        let mut out = DynamicMessage::new(descriptor.clone());
        if let Some(name) = descriptor.get_field_by_name("name")
            && msg.has_field(&name)
        {
            // Same descriptor on both sides, so the value always fits.
            let _ = out.try_set_field(&name, msg.get_field(&name).into_owned());
        }
        for path in &self.paths {
            copy_path(msg, &mut out, path.steps());
        }
        out
    }

    /// Applies an update: for each path, `target` takes `source`'s value,
    /// and a field unset in `source` is cleared in `target`. A map-key path
    /// sets or removes that one key. `*` replaces the whole message.
    pub fn merge_into(&self, target: &mut DynamicMessage, source: &DynamicMessage) {
        if self.all {
            *target = source.clone();
            return;
        }
        for path in &self.paths {
            merge_path(target, source, path.steps());
        }
    }
}

impl fmt::Display for FieldMask {
    /// The canonical paths, comma separated, as in a REST query string.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = Vec::new();
        if self.all {
            parts.push("*".to_owned());
        }
        parts.extend(self.paths.iter().map(ToString::to_string));
        f.write_str(&parts.join(","))
    }
}

/// Copies the value at `steps` from `src` into `dst`; returns whether
/// anything was copied, so parents are only created for present values.
fn copy_path(src: &DynamicMessage, dst: &mut DynamicMessage, steps: &[Step]) -> bool {
    let Some((Step::Field(field), rest)) = steps.split_first() else {
        return false;
    };
    if !src.has_field(field) {
        return false;
    }
    match rest {
        [] => dst
            .try_set_field(field, src.get_field(field).into_owned())
            .is_ok(),
        [Step::Key(key), ..] => {
            let value = src.get_field(field);
            let Some(entry) = value.as_map().and_then(|map| map.get(key)) else {
                return false;
            };
            match dst.get_field_mut(field).as_map_mut() {
                Some(map) => {
                    map.insert(key.clone(), entry.clone());
                    true
                }
                None => false,
            }
        }
        more => {
            let value = src.get_field(field);
            let Some(inner_src) = value.as_message() else {
                return false;
            };
            let (mut inner_dst, existed) = match dst.take_field(field) {
                Some(Value::Message(existing)) => (existing, true),
                _ => (DynamicMessage::new(inner_src.descriptor()), false),
            };
            let copied = copy_path(inner_src, &mut inner_dst, more);
            if copied || existed {
                let _ = dst.try_set_field(field, Value::Message(inner_dst));
            }
            copied
        }
    }
}

/// Writes `source`'s value at `steps` into `target`, clearing it there when
/// `source` has none.
fn merge_path(target: &mut DynamicMessage, source: &DynamicMessage, steps: &[Step]) {
    let Some((Step::Field(field), rest)) = steps.split_first() else {
        return;
    };
    match rest {
        [] => {
            if source.has_field(field) {
                let _ = target.try_set_field(field, source.get_field(field).into_owned());
            } else {
                target.clear_field(field);
            }
        }
        [Step::Key(key), ..] => {
            let value = source.get_field(field);
            match value.as_map().and_then(|map| map.get(key)) {
                Some(entry) => {
                    if let Some(map) = target.get_field_mut(field).as_map_mut() {
                        map.insert(key.clone(), entry.clone());
                    }
                }
                None => {
                    if target.has_field(field)
                        && let Some(map) = target.get_field_mut(field).as_map_mut()
                    {
                        map.remove(key);
                    }
                }
            }
        }
        more => {
            // Clearing a sub-field of an absent message changes nothing;
            // don't materialize the parent for it.
            if !source.has_field(field) && !target.has_field(field) {
                return;
            }
            let Kind::Message(_) = field.kind() else {
                return;
            };
            let value = source.get_field(field);
            let Some(inner_source) = value.as_message() else {
                return;
            };
            if let Some(inner_target) = target.get_field_mut(field).as_message_mut() {
                merge_path(inner_target, inner_source, more);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query_lang::testing::{Sample, device_descriptor};
    use expect_test::{Expect, expect};
    use fleetlog_proto::api::v1::Metadata;
    use fleetlog_proto::devices::v1::Device;
    use fleetlog_proto::devices::v1::device::Spec;
    use fleetlog_proto::devices::v1::device::spec::LoggingConfig;

    fn mask(paths: &[&str], field: &'static str) -> Result<FieldMask, InvalidArgument> {
        let paths: Vec<String> = paths.iter().map(|p| (*p).to_owned()).collect();
        FieldMask::parse(&paths, &device_descriptor(), field)
    }

    fn check(paths: &[&str], expected: Expect) {
        let actual = match mask(paths, "field_mask") {
            Ok(mask) => mask.to_string(),
            Err(err) => err.to_string(),
        };
        expected.assert_eq(&actual);
    }

    fn project(paths: &[&str], device: &Device) -> Device {
        let mask = mask(paths, "field_mask").expect("valid mask");
        mask.project(&device.transcode_to_dynamic())
            .transcode_to()
            .expect("same type")
    }

    fn merge(paths: &[&str], target: &Device, source: &Device) -> Device {
        let mask = mask(paths, "update_mask").expect("valid mask");
        let mut merged = target.transcode_to_dynamic();
        mask.merge_into(&mut merged, &source.transcode_to_dynamic());
        merged.transcode_to().expect("same type")
    }

    fn full() -> Device {
        Sample {
            name: "projects/p/regions/r/devices/d1",
            priority: Some(5),
            online: Some(true),
            labels: &[("env", "prod"), ("site", "berlin")],
            units: &["sshd"],
            heartbeat: Some("2024-05-01T12:00:00Z"),
            os_version: Some("1.2.3"),
        }
        .typed()
    }

    #[test]
    fn parses_masks() {
        check(&[], expect![[""]]);
        check(
            &["display_name", "spec.logging_config.priority"],
            expect![[r#"display_name,spec.logging_config.priority"#]],
        );
        check(
            &["labels.env", "metadata.labels.env", " name "],
            expect![[r#"metadata.labels.env,name"#]],
        );
        check(&["*"], expect![[r#"*"#]]);
        check(
            &["spec.nope"],
            expect![[
                r#"invalid field_mask: unknown field path "spec.nope" (known fields of fleetlog.devices.v1.Device.Spec: service_account, logging_config)"#
            ]],
        );
        check(
            &["metadata.owner_references.kind"],
            expect![[
                r#"invalid field_mask: field path "metadata.owner_references.kind": metadata.owner_references is repeated, and paths here cannot go inside repeated fields"#
            ]],
        );
        check(&[""], expect![[r#"invalid field_mask: empty field path"#]]);
        let err = mask(&["bogus"], "update_mask").expect_err("unknown");
        assert_eq!(err.field, "update_mask");
        assert!(mask(&[], "field_mask").expect("empty").is_empty());
        assert!(!mask(&["*"], "field_mask").expect("all").is_empty());
        assert!(!mask(&["name"], "field_mask").expect("one").is_empty());
    }

    #[test]
    fn project_keeps_only_masked_paths_and_the_name() {
        let device = full();
        let shaped = project(&["display_name"], &device);
        assert_eq!(
            shaped,
            Device {
                name: device.name.clone(),
                display_name: device.display_name.clone(),
                ..Device::default()
            }
        );

        let shaped = project(&["spec.logging_config.priority"], &device);
        assert_eq!(
            shaped,
            Device {
                name: device.name.clone(),
                spec: Some(Spec {
                    logging_config: Some(LoggingConfig {
                        priority: 5,
                        ..LoggingConfig::default()
                    }),
                    ..Spec::default()
                }),
                ..Device::default()
            }
        );

        let shaped = project(&["labels.site", "metadata.revision"], &device);
        let metadata = shaped.metadata.expect("metadata copied");
        assert_eq!(metadata.labels.len(), 1);
        assert_eq!(
            metadata.labels.get("site").map(String::as_str),
            Some("berlin")
        );
        assert_eq!(metadata.revision, 7);
        assert!(shaped.spec.is_none());

        assert_eq!(project(&["*"], &device), device);
    }

    #[test]
    fn project_does_not_invent_absent_parents() {
        let bare = Sample {
            name: "d2",
            ..Sample::default()
        }
        .typed();
        let shaped = project(
            &["spec.logging_config.priority", "labels.env", "status"],
            &bare,
        );
        assert_eq!(
            shaped,
            Device {
                name: "d2".into(),
                ..Device::default()
            }
        );
    }

    #[test]
    fn merge_sets_and_clears_masked_paths() {
        let target = full();
        let source = Device {
            name: target.name.clone(),
            display_name: "renamed".into(),
            description: "should not be written".into(),
            spec: Some(Spec {
                service_account: "other@example".into(),
                logging_config: Some(LoggingConfig {
                    priority: 2,
                    ..LoggingConfig::default()
                }),
            }),
            metadata: Some(Metadata {
                labels: [("env".to_owned(), "dev".to_owned())].into(),
                ..Metadata::default()
            }),
            status: None,
        };

        let merged = merge(
            &["display_name", "spec.logging_config.priority"],
            &target,
            &source,
        );
        let mut expected = target.clone();
        expected.display_name = "renamed".into();
        if let Some(config) = expected
            .spec
            .as_mut()
            .and_then(|s| s.logging_config.as_mut())
        {
            config.priority = 2;
        }
        assert_eq!(merged, expected);

        // status is unset in the source: the update clears it.
        let merged = merge(&["status"], &target, &source);
        assert!(merged.status.is_none());
        assert_eq!(merged.spec, target.spec);

        // A list that is empty in the source is emptied in the target.
        let merged = merge(&["spec.logging_config.units"], &target, &source);
        assert_eq!(
            merged.spec.and_then(|s| s.logging_config).map(|c| c.units),
            Some(vec![])
        );
    }

    #[test]
    fn merge_map_keys_one_at_a_time() {
        let target = full();
        let source = Device {
            metadata: Some(Metadata {
                labels: [
                    ("env".to_owned(), "dev".to_owned()),
                    ("new".to_owned(), "x".to_owned()),
                ]
                .into(),
                ..Metadata::default()
            }),
            ..Device::default()
        };
        let labels = |d: Device| {
            let mut pairs: Vec<(String, String)> = d
                .metadata
                .map(|m| m.labels.into_iter().collect())
                .unwrap_or_default();
            pairs.sort();
            pairs
        };
        // env is overwritten, site is removed (absent in source), new is left out.
        let merged = merge(&["labels.env", "labels.site"], &target, &source);
        assert_eq!(
            labels(merged.clone()),
            vec![("env".to_owned(), "dev".to_owned())]
        );
        assert_eq!(merged.metadata.map(|m| m.revision), Some(7));
        // The whole map replaces.
        let merged = merge(&["metadata.labels"], &target, &source);
        assert_eq!(
            labels(merged),
            vec![
                ("env".to_owned(), "dev".to_owned()),
                ("new".to_owned(), "x".to_owned())
            ]
        );
    }

    #[test]
    fn merge_does_not_create_parents_to_clear_nothing() {
        let target = Device {
            name: "d".into(),
            ..Device::default()
        };
        let merged = merge(
            &["spec.logging_config.priority", "labels.gone"],
            &target,
            &Device::default(),
        );
        assert_eq!(merged, target);
    }

    #[test]
    fn merge_star_replaces_everything() {
        let target = full();
        let source = Sample {
            name: "other",
            ..Sample::default()
        }
        .typed();
        assert_eq!(merge(&["*"], &target, &source), source);
    }
}
