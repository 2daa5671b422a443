//! Dotted field paths (`spec.logging_config.priority`, `metadata.labels.env`)
//! resolved against a message descriptor.
//!
//! Resolving once, at parse time, is what lets filters, orderings and masks
//! report a typo as `INVALID_ARGUMENT` before touching any data, and lets
//! evaluation walk field descriptors instead of looking names up per message.

use std::borrow::Cow;
use std::fmt;

use prost_reflect::{DynamicMessage, FieldDescriptor, Kind, MapKey, MessageDescriptor, Value};

use super::InvalidArgument;

/// Longest accepted path, in segments. Real resources are a handful of
/// levels deep; the bound keeps recursive message types from turning a
/// hostile path into unbounded work.
const MAX_SEGMENTS: usize = 32;

/// A field path resolved against a message type.
///
/// After a map field the next segment is a key of that map
/// (`metadata.labels.env`); keys that are not plain words are written in
/// backticks (``metadata.labels.`app.kubernetes.io/name` ``). `labels` is an
/// alias for `metadata.labels`, because every resource has it and filters
/// on labels are the common case.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldPath {
    steps: Vec<Step>,
    shape: Shape,
    /// The path crosses a repeated message field, so it names one value per
    /// element (only filters allow this: `metadata.owner_references.kind`).
    through_list: bool,
}

/// One resolved segment.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Step {
    Field(FieldDescriptor),
    Key(MapKey),
}

/// What a path evaluates to, which decides the operators that apply to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Shape {
    /// At most one value of this kind (a singular field or one map entry).
    Single(Kind),
    /// Any number of values of this kind (a repeated field, or a field
    /// reached through a repeated message field).
    Repeated(Kind),
    /// A whole map field.
    Map { key: Kind, value: Kind },
}

impl FieldPath {
    /// Resolves `text` against `root`. `field` names the request field for
    /// errors. Paths may not cross repeated fields: field masks and
    /// orderings need exactly one value per path (AIP-161).
    pub fn parse(
        text: &str,
        root: &MessageDescriptor,
        field: &'static str,
    ) -> Result<FieldPath, InvalidArgument> {
        Self::resolve(text, root, false).map_err(|message| InvalidArgument::new(field, message))
    }

    /// Like [`FieldPath::parse`], but allows crossing repeated message
    /// fields (AIP-160 `r.foo:42`: some element's `foo` is 42). Errors are
    /// bare messages so the filter parser can add the position.
    pub(crate) fn parse_for_filter(
        text: &str,
        root: &MessageDescriptor,
    ) -> Result<FieldPath, String> {
        Self::resolve(text, root, true)
    }

    /// What the path evaluates to.
    pub fn shape(&self) -> &Shape {
        &self.shape
    }

    /// True when the path ends at a map key: "set" then means the key exists,
    /// whatever its value.
    pub(crate) fn ends_at_map_key(&self) -> bool {
        matches!(self.steps.last(), Some(Step::Key(_)))
    }

    pub(crate) fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// The value at this path, or `None` when a message on the way is unset
    /// or a map has no such key. Unset scalars read as their default (proto3
    /// cannot tell them apart); unset lists and maps read as empty. A path
    /// through a repeated field yields a list of every element's value.
    pub fn value<'a>(&self, msg: &'a DynamicMessage) -> Option<Cow<'a, Value>> {
        if self.through_list {
            let mut out = Vec::new();
            collect(msg, &self.steps, &mut out);
            return Some(Cow::Owned(Value::List(out)));
        }
        let mut current = msg;
        let mut steps = self.steps.iter().peekable();
        while let Some(step) = steps.next() {
            let Step::Field(field) = step else {
                return None; // keys only follow map fields, handled below
            };
            if field.is_map() {
                let Some(Step::Key(key)) = steps.next() else {
                    return Some(current.get_field(field));
                };
                let map = present_field(current, field)?.as_map()?;
                let entry = map.get(key)?;
                // Resolution ends every path at a map key.
                return Some(Cow::Borrowed(entry));
            }
            let last = steps.peek().is_none();
            let singular_message = !field.is_list() && matches!(field.kind(), Kind::Message(_));
            if last {
                if singular_message && !current.has_field(field) {
                    return None;
                }
                return Some(current.get_field(field));
            }
            current = present_field(current, field)?.as_message()?;
        }
        None
    }

    fn resolve(
        text: &str,
        root: &MessageDescriptor,
        allow_lists: bool,
    ) -> Result<FieldPath, String> {
        let mut segments = split_segments(text)?;
        if segments.len() > MAX_SEGMENTS {
            return Err(format!(
                "field path {text:?} is longer than {MAX_SEGMENTS} segments"
            ));
        }
        if let Some(first) = segments.first()
            && !first.quoted
            && first.text == "labels"
            && root.get_field_by_name("labels").is_none()
            && let Some(metadata) = root.get_field_by_name("metadata")
            && let Kind::Message(metadata) = metadata.kind()
            && metadata.get_field_by_name("labels").is_some()
        {
            segments.insert(
                0,
                Segment {
                    text: "metadata".to_owned(),
                    quoted: false,
                },
            );
        }

        let mut steps = Vec::with_capacity(segments.len());
        let mut message = root.clone();
        let mut through_list = false;
        let mut rest = segments.iter().peekable();
        let shape = loop {
            let Some(segment) = rest.next() else {
                return Err(format!("empty field path {text:?}"));
            };
            if segment.quoted {
                return Err(format!(
                    "field path {text:?}: only map keys may be quoted, and `{}` is not one",
                    segment.text
                ));
            }
            let Some(field) = message
                .get_field_by_name(&segment.text)
                .or_else(|| message.get_field_by_json_name(&segment.text))
            else {
                let known: Vec<String> = message.fields().map(|f| f.name().to_owned()).collect();
                let known = known.join(", ");
                return Err(format!(
                    "unknown field path {text:?} (known fields of {}: {known})",
                    message.full_name()
                ));
            };
            steps.push(Step::Field(field.clone()));
            let so_far = display_steps(&steps);

            if field.is_map() {
                let Kind::Message(entry) = field.kind() else {
                    return Err(format!(
                        "field path {text:?}: {so_far} is not a well-formed map"
                    ));
                };
                let key_kind = entry.map_entry_key_field().kind();
                let value_kind = entry.map_entry_value_field().kind();
                let Some(key_segment) = rest.next() else {
                    if through_list {
                        return Err(format!(
                            "field path {text:?}: maps inside repeated fields cannot be tested; \
                             name one key, as in {so_far}.KEY"
                        ));
                    }
                    break Shape::Map {
                        key: key_kind,
                        value: value_kind,
                    };
                };
                let Some(key) = parse_map_key(&key_segment.text, &key_kind) else {
                    return Err(format!(
                        "field path {text:?}: {:?} is not a valid key of {so_far} (keys are {})",
                        key_segment.text,
                        kind_name(&key_kind)
                    ));
                };
                steps.push(Step::Key(key));
                if rest.peek().is_some() {
                    return Err(format!(
                        "field path {text:?}: {so_far} has {} values; \
                         the path must end at the map key",
                        kind_name(&value_kind)
                    ));
                }
                break if through_list {
                    Shape::Repeated(value_kind)
                } else {
                    Shape::Single(value_kind)
                };
            }

            let kind = field.kind();
            if rest.peek().is_none() {
                break if field.is_list() || through_list {
                    Shape::Repeated(kind)
                } else {
                    Shape::Single(kind)
                };
            }
            match kind {
                Kind::Message(next) if field.is_list() => {
                    if !allow_lists {
                        return Err(format!(
                            "field path {text:?}: {so_far} is repeated, and paths here cannot go \
                             inside repeated fields"
                        ));
                    }
                    through_list = true;
                    message = next;
                }
                Kind::Message(next) => message = next,
                other => {
                    let what = if field.is_list() { "repeated " } else { "" };
                    return Err(format!(
                        "field path {text:?}: {so_far} ({what}{}) has no fields",
                        kind_name(&other)
                    ));
                }
            }
        };
        Ok(FieldPath {
            steps,
            shape,
            through_list,
        })
    }
}

impl fmt::Display for FieldPath {
    /// The canonical spelling: field names as declared, aliases expanded,
    /// keys quoted only when they need it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&display_steps(&self.steps))
    }
}

/// The field's value when it is actually stored: `None` for an unset
/// message or map, so `value` never hands out a borrow of a temporary.
fn present_field<'a>(msg: &'a DynamicMessage, field: &FieldDescriptor) -> Option<&'a Value> {
    if !msg.has_field(field) {
        return None;
    }
    match msg.get_field(field) {
        Cow::Borrowed(value) => Some(value),
        Cow::Owned(_) => None,
    }
}

/// Gathers the values a path through repeated fields names, flattening
/// lists so `r.tags:x` tests every tag of every element.
fn collect(msg: &DynamicMessage, steps: &[Step], out: &mut Vec<Value>) {
    let Some((Step::Field(field), rest)) = steps.split_first() else {
        return;
    };
    if field.is_map() {
        if let [Step::Key(key)] = rest
            && let Some(map) = present_field(msg, field).and_then(Value::as_map)
            && let Some(value) = map.get(key)
        {
            out.push(value.clone());
        }
        return;
    }
    let singular_message = !field.is_list() && matches!(field.kind(), Kind::Message(_));
    if singular_message && !msg.has_field(field) {
        return;
    }
    let value = msg.get_field(field);
    match (value.as_ref(), rest.is_empty()) {
        (Value::List(items), true) => out.extend(items.iter().cloned()),
        (Value::List(items), false) => {
            for item in items {
                if let Value::Message(element) = item {
                    collect(element, rest, out);
                }
            }
        }
        (Value::Message(inner), false) => collect(inner, rest, out),
        (other, true) => out.push(other.clone()),
        (_, false) => {}
    }
}

/// A raw segment of a path; `quoted` when written in backticks.
struct Segment {
    text: String,
    quoted: bool,
}

/// Splits on dots outside backticks. A doubled backtick inside a quoted
/// segment is a literal backtick (AIP-161).
fn split_segments(text: &str) -> Result<Vec<Segment>, String> {
    if text.is_empty() {
        return Err("empty field path".to_owned());
    }
    let mut segments = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        let mut current = String::new();
        let quoted = chars.peek() == Some(&'`');
        if quoted {
            chars.next();
            loop {
                match chars.next() {
                    None => {
                        return Err(format!("field path {text:?} has an unterminated backtick"));
                    }
                    Some('`') if chars.peek() == Some(&'`') => {
                        chars.next();
                        current.push('`');
                    }
                    Some('`') => break,
                    Some(c) => current.push(c),
                }
            }
            if !matches!(chars.peek(), None | Some('.')) {
                return Err(format!(
                    "field path {text:?}: a quoted segment must be followed by '.' or end the path"
                ));
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == '.' {
                    break;
                }
                if c == '`' {
                    return Err(format!(
                        "field path {text:?}: backticks must quote a whole segment"
                    ));
                }
                current.push(c);
                chars.next();
            }
            if current.is_empty() {
                return Err(format!("field path {text:?} has an empty segment"));
            }
        }
        segments.push(Segment {
            text: current,
            quoted,
        });
        match chars.next() {
            None => return Ok(segments),
            Some(_dot) => {
                if chars.peek().is_none() {
                    return Err(format!("field path {text:?} ends with '.'"));
                }
            }
        }
    }
}

/// Parses a map key written in a path or a filter (`labels:env`).
pub(crate) fn parse_map_key(text: &str, kind: &Kind) -> Option<MapKey> {
    Some(match kind {
        Kind::String => MapKey::String(text.to_owned()),
        Kind::Bool => match text {
            "true" => MapKey::Bool(true),
            "false" => MapKey::Bool(false),
            _ => return None,
        },
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => MapKey::I32(text.parse().ok()?),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => MapKey::I64(text.parse().ok()?),
        Kind::Uint32 | Kind::Fixed32 => MapKey::U32(text.parse().ok()?),
        Kind::Uint64 | Kind::Fixed64 => MapKey::U64(text.parse().ok()?),
        _ => return None,
    })
}

/// A map key as written back in a canonical path.
pub(crate) fn display_map_key(key: &MapKey) -> String {
    match key {
        MapKey::String(s) => {
            let plain = !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if plain {
                s.clone()
            } else {
                format!("`{}`", s.replace('`', "``"))
            }
        }
        MapKey::Bool(b) => b.to_string(),
        MapKey::I32(n) => n.to_string(),
        MapKey::I64(n) => n.to_string(),
        MapKey::U32(n) => n.to_string(),
        MapKey::U64(n) => n.to_string(),
    }
}

fn display_steps(steps: &[Step]) -> String {
    let parts: Vec<String> = steps
        .iter()
        .map(|step| match step {
            Step::Field(field) => field.name().to_owned(),
            Step::Key(key) => display_map_key(key),
        })
        .collect();
    parts.join(".")
}

/// A type's name as the .proto file spells it, for error messages.
pub(crate) fn kind_name(kind: &Kind) -> String {
    match kind {
        Kind::Double => "double".to_owned(),
        Kind::Float => "float".to_owned(),
        Kind::Int32 => "int32".to_owned(),
        Kind::Int64 => "int64".to_owned(),
        Kind::Uint32 => "uint32".to_owned(),
        Kind::Uint64 => "uint64".to_owned(),
        Kind::Sint32 => "sint32".to_owned(),
        Kind::Sint64 => "sint64".to_owned(),
        Kind::Fixed32 => "fixed32".to_owned(),
        Kind::Fixed64 => "fixed64".to_owned(),
        Kind::Sfixed32 => "sfixed32".to_owned(),
        Kind::Sfixed64 => "sfixed64".to_owned(),
        Kind::Bool => "bool".to_owned(),
        Kind::String => "string".to_owned(),
        Kind::Bytes => "bytes".to_owned(),
        Kind::Message(message) => message.full_name().to_owned(),
        Kind::Enum(enumeration) => format!("enum {}", enumeration.full_name()),
    }
}

#[cfg(test)]
mod tests {
    use expect_test::{Expect, expect};
    use fleetlog_proto::devices::v1::DeviceChange;
    use prost_reflect::ReflectMessage;

    use super::*;
    use crate::query_lang::testing::{Sample, device_descriptor};

    /// Parses against Device and shows the canonical path and shape, or the error.
    fn check(text: &str, expected: Expect) {
        let actual = match FieldPath::parse(text, &device_descriptor(), "field_mask") {
            Ok(path) => format!("{path} :: {:?}", path.shape()),
            Err(err) => err.to_string(),
        };
        expected.assert_eq(&actual);
    }

    #[test]
    fn parses_paths() {
        check("name", expect!["name :: Single(string)"]);
        check(
            "spec.logging_config.priority",
            expect!["spec.logging_config.priority :: Single(int32)"],
        );
        check(
            "metadata.labels.env",
            expect!["metadata.labels.env :: Single(string)"],
        );
        check(
            "labels.env",
            expect!["metadata.labels.env :: Single(string)"],
        );
        check(
            "labels.`app.io/name`",
            expect!["metadata.labels.`app.io/name` :: Single(string)"],
        );
        check(
            "metadata.labels",
            expect!["metadata.labels :: Map { key: string, value: string }"],
        );
        check(
            "metadata.shards.byNameMod16",
            expect!["metadata.shards.byNameMod16 :: Single(int64)"],
        );
        check(
            "spec.logging_config.units",
            expect!["spec.logging_config.units :: Repeated(string)"],
        );
        check("displayName", expect!["display_name :: Single(string)"]);
    }

    #[test]
    fn rejects_bad_paths() {
        check(
            "spec.foo",
            expect![[
                r#"invalid field_mask: unknown field path "spec.foo" (known fields of fleetlog.devices.v1.Device.Spec: service_account, logging_config)"#
            ]],
        );
        check(
            "nope",
            expect![[
                r#"invalid field_mask: unknown field path "nope" (known fields of fleetlog.devices.v1.Device: name, display_name, description, metadata, spec, status)"#
            ]],
        );
        check("", expect![[r#"invalid field_mask: empty field path"#]]);
        check(
            "spec..priority",
            expect![[r#"invalid field_mask: field path "spec..priority" has an empty segment"#]],
        );
        check(
            "spec.",
            expect![[r#"invalid field_mask: field path "spec." ends with '.'"#]],
        );
        check(
            "name.first",
            expect![[
                r#"invalid field_mask: field path "name.first": name (string) has no fields"#
            ]],
        );
        check(
            "metadata.owner_references.kind",
            expect![[
                r#"invalid field_mask: field path "metadata.owner_references.kind": metadata.owner_references is repeated, and paths here cannot go inside repeated fields"#
            ]],
        );
        check(
            "metadata.labels.env.x",
            expect![[
                r#"invalid field_mask: field path "metadata.labels.env.x": metadata.labels has string values; the path must end at the map key"#
            ]],
        );
        check(
            "labels.`env",
            expect![[
                r#"invalid field_mask: field path "labels.`env" has an unterminated backtick"#
            ]],
        );
        check(
            "`spec`.service_account",
            expect![[
                r#"invalid field_mask: field path "`spec`.service_account": only map keys may be quoted, and `spec` is not one"#
            ]],
        );
        check(
            "spec.logging_config.units.x",
            expect![[
                r#"invalid field_mask: field path "spec.logging_config.units.x": spec.logging_config.units (repeated string) has no fields"#
            ]],
        );
        let long = vec!["spec"; 40].join(".");
        let err = FieldPath::parse(&long, &device_descriptor(), "order_by").expect_err("too long");
        assert_eq!(err.field, "order_by");
        assert!(err.message.contains("longer than 32 segments"), "{err}");
    }

    #[test]
    fn reads_values() {
        let descriptor = device_descriptor();
        let path = |text: &str| FieldPath::parse(text, &descriptor, "filter").expect("valid path");
        let full = Sample {
            name: "d1",
            priority: Some(5),
            online: Some(true),
            labels: &[("env", "prod")],
            ..Sample::default()
        }
        .dynamic();
        let bare = Sample {
            name: "d2",
            ..Sample::default()
        }
        .dynamic();

        let priority = path("spec.logging_config.priority");
        assert_eq!(priority.value(&full).as_deref(), Some(&Value::I32(5)));
        // spec unset: the whole path is missing, not 0.
        assert_eq!(priority.value(&bare), None);

        let env = path("labels.env");
        assert_eq!(
            env.value(&full).as_deref(),
            Some(&Value::String("prod".to_owned()))
        );
        assert_eq!(env.value(&bare), None);
        assert_eq!(path("labels.site").value(&full), None);

        // An unset scalar on a present message reads as its default.
        assert_eq!(
            path("description").value(&full).as_deref(),
            Some(&Value::String(String::new()))
        );
        // Unset message fields read as missing.
        assert_eq!(path("status.last_heartbeat_time").value(&full), None);
        assert_eq!(path("status").value(&bare), None);
        assert!(matches!(
            path("status").value(&full).as_deref(),
            Some(Value::Message(_))
        ));
    }

    #[test]
    fn filter_paths_may_cross_repeated_fields() {
        let descriptor = fleetlog_proto::api::v1::Metadata::default().descriptor();
        let path =
            FieldPath::parse_for_filter("owner_references.kind", &descriptor).expect("valid");
        assert_eq!(path.to_string(), "owner_references.kind");
        assert_eq!(path.shape(), &Shape::Repeated(Kind::String));
        let metadata = fleetlog_proto::api::v1::Metadata {
            owner_references: vec![
                fleetlog_proto::api::v1::OwnerReference {
                    kind: "Fleet".into(),
                    name: "a".into(),
                },
                fleetlog_proto::api::v1::OwnerReference {
                    kind: "Site".into(),
                    name: "b".into(),
                },
            ],
            ..Default::default()
        }
        .transcode_to_dynamic();
        assert_eq!(
            path.value(&metadata).map(Cow::into_owned),
            Some(Value::List(vec![
                Value::String("Fleet".into()),
                Value::String("Site".into())
            ]))
        );
    }

    #[test]
    fn enum_paths_resolve() {
        let descriptor = DeviceChange::default().descriptor();
        let path = FieldPath::parse("type", &descriptor, "filter").expect("valid");
        assert!(matches!(path.shape(), Shape::Single(Kind::Enum(_))));
        let path = FieldPath::parse("device.labels.env", &descriptor, "filter");
        // The alias applies only at the root resource, not inside nested ones.
        assert!(path.is_err());
    }
}
