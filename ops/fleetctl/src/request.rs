//! Request bodies in proto3 JSON: YAML or JSON documents (`-f FILE`, `-`
//! for stdin, `-d TEXT`) and `--set path=value`, merged, checked field by
//! field against the descriptor (an unknown field is named with the fields
//! that exist), then decoded into a `DynamicMessage`.

use std::io::Read as _;

use prost_reflect::{
    DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, ReflectMessage, Value,
};
use serde_json::{Map, Value as Json};

use crate::error::Error;

/// Longest `--set` path, in segments.
const MAX_SEGMENTS: usize = 32;

/// Reads `-f FILE` (`-` = stdin).
pub fn read_source(source: &str) -> Result<String, Error> {
    if source == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|err| Error::Usage(format!("cannot read the body from stdin: {err}")))?;
        Ok(text)
    } else {
        std::fs::read_to_string(source)
            .map_err(|err| Error::Usage(format!("cannot read {source}: {err}")))
    }
}

/// The documents in `text`: JSON (an object or an array), or YAML (one or
/// more documents separated by `---`). `origin` names the text in errors.
pub fn parse_documents(text: &str, origin: &str) -> Result<Vec<Json>, Error> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        // JSON first: its errors are the clearer ones for JSON input.
        if let Ok(value) = serde_json::from_str::<Json>(text) {
            return Ok(vec![value]);
        }
    }
    let mut documents = Vec::new();
    for document in serde_yaml::Deserializer::from_str(text) {
        let value = serde::Deserialize::deserialize(document).map_err(|err| {
            Error::Usage(format!("{origin} is neither valid JSON nor YAML: {err}"))
        })?;
        if !matches!(value, Json::Null) {
            documents.push(value);
        }
    }
    Ok(documents)
}

/// Exactly one document (an object) from `text`.
pub fn parse_object(text: &str, origin: &str) -> Result<Json, Error> {
    let mut documents = parse_documents(text, origin)?;
    match (documents.pop(), documents.is_empty()) {
        (None, _) => Ok(Json::Object(Map::new())),
        (Some(value @ Json::Object(_)), true) => Ok(value),
        (Some(_), true) => Err(Error::Usage(format!(
            "{origin} must hold an object ({{…}} in JSON, key: value in YAML)"
        ))),
        (Some(_), false) => Err(Error::Usage(format!(
            "{origin} holds several documents; give one"
        ))),
    }
}

/// Well-known types (Timestamp, Duration, FieldMask, wrappers, Struct…)
/// have their own JSON forms; prost-reflect checks those.
fn is_well_known(desc: &MessageDescriptor) -> bool {
    desc.package_name() == "google.protobuf"
}

fn known_fields(desc: &MessageDescriptor) -> String {
    desc.fields()
        .map(|f| f.json_name().to_owned())
        .collect::<Vec<_>>()
        .join(", ")
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{prefix}.{name}")
    }
}

/// Checks every key of `value` against `desc` (recursively) and renames
/// proto field names (`display_name`) to their JSON names (`displayName`),
/// so a document and `--set` may spell fields either way. `prefix` is the
/// path of `value` for errors.
pub fn normalize(value: &mut Json, desc: &MessageDescriptor, prefix: &str) -> Result<(), Error> {
    if is_well_known(desc) {
        return Ok(());
    }
    let Json::Object(map) = value else {
        // prost-reflect names the type mismatch.
        return Ok(());
    };
    let entries = std::mem::take(map);
    for (key, mut inner) in entries {
        let path = join(prefix, &key);
        let Some(field) = desc
            .get_field_by_json_name(&key)
            .or_else(|| desc.get_field_by_name(&key))
        else {
            return Err(Error::Usage(format!(
                "unknown field `{path}`: {} has no field `{key}` (its fields: {})",
                desc.full_name(),
                known_fields(desc)
            )));
        };
        normalize_field(&mut inner, &field, &path)?;
        map.insert(field.json_name().to_owned(), inner);
    }
    Ok(())
}

fn normalize_field(value: &mut Json, field: &FieldDescriptor, path: &str) -> Result<(), Error> {
    let Kind::Message(message) = field.kind() else {
        return Ok(());
    };
    if field.is_map() {
        let value_kind = message.map_entry_value_field().kind();
        if let (Kind::Message(value_desc), Json::Object(entries)) = (value_kind, value) {
            for (key, entry) in entries.iter_mut() {
                normalize(entry, &value_desc, &join(path, key))?;
            }
        }
        return Ok(());
    }
    if field.is_list() {
        if let Json::Array(items) = value {
            for (i, item) in items.iter_mut().enumerate() {
                normalize(item, &message, &format!("{path}[{i}]"))?;
            }
        }
        return Ok(());
    }
    normalize(value, &message, path)
}

/// The field paths a (normalized) document sets, in proto names: nested
/// messages down to their fields; maps, lists, scalars and well-known types
/// whole (`metadata.labels`, `spec.logging_config.priority`).
pub fn document_paths(value: &Json, desc: &MessageDescriptor, prefix: &str) -> Vec<String> {
    let Json::Object(map) = value else {
        return Vec::new();
    };
    let mut paths = Vec::new();
    for (key, inner) in map {
        let Some(field) = desc
            .get_field_by_json_name(key)
            .or_else(|| desc.get_field_by_name(key))
        else {
            continue;
        };
        let path = join(prefix, field.name());
        match field.kind() {
            Kind::Message(message)
                if !field.is_list() && !field.is_map() && !is_well_known(&message) =>
            {
                let nested = document_paths(inner, &message, &path);
                if nested.is_empty() {
                    paths.push(path);
                } else {
                    paths.extend(nested);
                }
            }
            _ => paths.push(path),
        }
    }
    paths
}

/// Decodes a (normalized) proto3 JSON value; `what` names it in errors.
pub fn decode(value: Json, desc: &MessageDescriptor, what: &str) -> Result<DynamicMessage, Error> {
    DynamicMessage::deserialize(desc.clone(), value).map_err(|err| {
        Error::Usage(format!(
            "the {what} is not a valid {}: {err}",
            desc.full_name()
        ))
    })
}

/// A `--set` path split into segments; a segment in backticks may hold
/// dots (a map key: ``metadata.labels.`app.kubernetes.io/name` ``).
fn split_path(path: &str) -> Result<Vec<String>, String> {
    let mut segments = Vec::new();
    let mut chars = path.chars().peekable();
    loop {
        let mut segment = String::new();
        if chars.peek() == Some(&'`') {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err(format!("{path:?} has an unterminated backtick")),
                    Some('`') if chars.peek() == Some(&'`') => {
                        chars.next();
                        segment.push('`');
                    }
                    Some('`') => break,
                    Some(c) => segment.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == '.' {
                    break;
                }
                segment.push(c);
                chars.next();
            }
            if segment.is_empty() {
                return Err(format!("{path:?} has an empty segment"));
            }
        }
        segments.push(segment);
        match chars.next() {
            None => return Ok(segments),
            Some('.') => {}
            Some(c) => return Err(format!("{path:?}: unexpected {c:?} after a quoted segment")),
        }
        if segments.len() > MAX_SEGMENTS {
            return Err(format!("{path:?} is longer than {MAX_SEGMENTS} segments"));
        }
    }
}

/// A map key as it appears in a field path (quoted when it holds a dot).
fn path_key(key: &str) -> String {
    if key.contains('.') || key.contains('`') || key.is_empty() {
        format!("`{}`", key.replace('`', "``"))
    } else {
        key.to_owned()
    }
}

/// Applies `path=value` to `root` (a JSON object of type `desc`) and
/// returns the field path it set, in proto names, for an update mask
/// (`metadata.labels.site`).
pub fn apply_set(
    root: &mut Json,
    desc: &MessageDescriptor,
    assignment: &str,
) -> Result<String, Error> {
    let usage = |message: String| Error::Usage(format!("--set {assignment}: {message}"));
    let Some((path, raw)) = assignment.split_once('=') else {
        return Err(usage("expected path=value".to_owned()));
    };
    let path = path.trim();
    let mut segments = split_path(path).map_err(usage)?;
    // `labels` is short for `metadata.labels`, as in filters.
    if segments.first().is_some_and(|s| s == "labels")
        && desc.get_field_by_name("labels").is_none()
        && desc.get_field_by_name("metadata").is_some_and(
            |m| matches!(m.kind(), Kind::Message(m) if m.get_field_by_name("labels").is_some()),
        )
    {
        segments.insert(0, "metadata".to_owned());
    }
    let mut message = desc.clone();
    let mut json_path: Vec<String> = Vec::new();
    let mut mask_path: Vec<String> = Vec::new();
    let mut i = 0;
    let value = loop {
        let Some(segment) = segments.get(i) else {
            return Err(usage("empty path".to_owned()));
        };
        let so_far = mask_path.join(".");
        let Some(field) = message
            .get_field_by_name(segment)
            .or_else(|| message.get_field_by_json_name(segment))
        else {
            return Err(usage(format!(
                "unknown field `{}`: {} has no field `{segment}` (its fields: {})",
                join(&so_far, segment),
                message.full_name(),
                known_fields(&message)
            )));
        };
        json_path.push(field.json_name().to_owned());
        mask_path.push(field.name().to_owned());
        let last = i + 1 == segments.len();
        if field.is_map() {
            let Kind::Message(entry) = field.kind() else {
                return Err(usage(format!("{} is not a well-formed map", field.name())));
            };
            if last {
                let object = parse_object(raw, &format!("the value of {path}"))?;
                let mut object = object;
                normalize_field(&mut object, &field, &mask_path.join("."))?;
                break object;
            }
            let key = &segments[i + 1];
            if i + 2 != segments.len() {
                return Err(usage(format!(
                    "{} is a map: the path must end at its key ({}.{})",
                    mask_path.join("."),
                    mask_path.join("."),
                    path_key(key)
                )));
            }
            check_map_key(key, &entry.map_entry_key_field().kind()).map_err(usage)?;
            json_path.push(key.clone());
            mask_path.push(path_key(key));
            break scalar(raw, &entry.map_entry_value_field().kind()).map_err(usage)?;
        }
        if last {
            break field_value(raw, &field).map_err(usage)?;
        }
        if field.is_list() {
            return Err(usage(format!(
                "{} is repeated: set the whole list ({}=a,b or {}='[…]')",
                mask_path.join("."),
                mask_path.join("."),
                mask_path.join(".")
            )));
        }
        match field.kind() {
            Kind::Message(next) if !is_well_known(&next) => message = next,
            _ => {
                return Err(usage(format!("{} has no fields", mask_path.join("."))));
            }
        }
        i += 1;
    };
    insert(root, &json_path, value);
    Ok(mask_path.join("."))
}

/// Puts `value` at `path` in `root`, creating objects on the way.
fn insert(root: &mut Json, path: &[String], value: Json) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut current = root;
    for key in parents {
        if !current.is_object() {
            *current = Json::Object(Map::new());
        }
        let Json::Object(map) = current else {
            return;
        };
        current = map
            .entry(key.clone())
            .or_insert_with(|| Json::Object(Map::new()));
    }
    if !current.is_object() {
        *current = Json::Object(Map::new());
    }
    if let Json::Object(map) = current {
        map.insert(last.clone(), value);
    }
}

fn check_map_key(key: &str, kind: &Kind) -> Result<(), String> {
    let ok = match kind {
        Kind::String => true,
        Kind::Bool => matches!(key, "true" | "false"),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => key.parse::<i32>().is_ok(),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => key.parse::<i64>().is_ok(),
        Kind::Uint32 | Kind::Fixed32 => key.parse::<u32>().is_ok(),
        Kind::Uint64 | Kind::Fixed64 => key.parse::<u64>().is_ok(),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("{key:?} is not a valid map key here"))
    }
}

/// The JSON of a `--set` value for `field` (a list: `a,b` or a JSON array).
fn field_value(raw: &str, field: &FieldDescriptor) -> Result<Json, String> {
    let kind = field.kind();
    if !field.is_list() {
        return scalar(raw, &kind);
    }
    if raw.trim_start().starts_with('[') {
        let value: Json = serde_json::from_str(raw)
            .or_else(|_| serde_yaml::from_str(raw))
            .map_err(|err| format!("not a list: {err}"))?;
        return Ok(value);
    }
    if raw.is_empty() {
        return Ok(Json::Array(Vec::new()));
    }
    raw.split(',')
        .map(|item| scalar(item.trim(), &kind))
        .collect::<Result<Vec<_>, _>>()
        .map(Json::Array)
}

/// The JSON of one `--set` value of `kind`, in the proto3 JSON mapping.
fn scalar(raw: &str, kind: &Kind) -> Result<Json, String> {
    fn int<T: std::str::FromStr + Into<Json>>(raw: &str, what: &str) -> Result<Json, String> {
        raw.trim()
            .parse::<T>()
            .map(Into::into)
            .map_err(|_| format!("{raw:?} is not {what}"))
    }
    fn long<T: std::str::FromStr + ToString>(raw: &str, what: &str) -> Result<Json, String> {
        raw.trim()
            .parse::<T>()
            .map(|n| Json::String(n.to_string()))
            .map_err(|_| format!("{raw:?} is not {what}"))
    }
    match kind {
        Kind::String | Kind::Bytes => Ok(Json::String(raw.to_owned())),
        Kind::Bool => match raw.trim() {
            "true" => Ok(Json::Bool(true)),
            "false" => Ok(Json::Bool(false)),
            other => Err(format!("{other:?} is not true or false")),
        },
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => int::<i32>(raw, "a 32-bit integer"),
        Kind::Uint32 | Kind::Fixed32 => int::<u32>(raw, "an unsigned 32-bit integer"),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => long::<i64>(raw, "a 64-bit integer"),
        Kind::Uint64 | Kind::Fixed64 => long::<u64>(raw, "an unsigned 64-bit integer"),
        Kind::Float | Kind::Double => {
            let text = raw.trim();
            match text {
                "NaN" | "Infinity" | "-Infinity" => Ok(Json::String(text.to_owned())),
                _ => text
                    .parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64)
                    .map(Json::Number)
                    .ok_or_else(|| format!("{raw:?} is not a number")),
            }
        }
        Kind::Enum(enumeration) => {
            let text = raw.trim();
            if let Some(value) = enumeration
                .get_value_by_name(text)
                .or_else(|| enumeration.get_value_by_name(&text.to_uppercase()))
            {
                return Ok(Json::String(value.name().to_owned()));
            }
            if let Ok(number) = text.parse::<i32>() {
                return Ok(Json::from(number));
            }
            let names: Vec<String> = enumeration.values().map(|v| v.name().to_owned()).collect();
            Err(format!(
                "{text:?} is not a value of {} ({})",
                enumeration.full_name(),
                names.join(", ")
            ))
        }
        Kind::Message(message) if is_well_known(message) => match message.name() {
            // Their JSON forms are strings: RFC 3339, "1.5s", "a.b,c".
            "Timestamp" | "Duration" | "FieldMask" => Ok(Json::String(raw.to_owned())),
            name if name.ends_with("Value") && name != "Value" => {
                match message.get_field_by_name("value") {
                    Some(inner) => scalar(raw, &inner.kind()),
                    None => Err(format!("cannot set a {name} from text")),
                }
            }
            _ => parse_inline(raw),
        },
        Kind::Message(_) => match parse_inline(raw)? {
            value @ Json::Object(_) => Ok(value),
            _ => Err("expected an object ({…} in JSON or YAML flow style)".to_owned()),
        },
    }
}

/// An inline JSON or YAML value.
fn parse_inline(raw: &str) -> Result<Json, String> {
    serde_json::from_str(raw)
        .or_else(|_| serde_yaml::from_str(raw))
        .map_err(|err| format!("not valid JSON or YAML: {err}"))
}

/// Sets a `google.protobuf.FieldMask` field of `message` to `paths`
/// verbatim (the JSON mapping would rewrite map keys as snake_case).
pub fn set_mask(message: &mut DynamicMessage, field: &str, paths: &[String]) -> Result<(), Error> {
    let desc = message.descriptor();
    let Some(field_desc) = desc.get_field_by_name(field) else {
        return Err(Error::Usage(format!("{} has no {field}", desc.full_name())));
    };
    let Kind::Message(mask_desc) = field_desc.kind() else {
        return Err(Error::Usage(format!(
            "{}.{field} is not a field mask",
            desc.full_name()
        )));
    };
    let mut mask = DynamicMessage::new(mask_desc);
    let list = Value::List(paths.iter().cloned().map(Value::String).collect());
    mask.try_set_field_by_name("paths", list)
        .map_err(|err| Error::Usage(format!("{}.{field}: {err}", desc.full_name())))?;
    message
        .try_set_field(&field_desc, Value::Message(mask))
        .map_err(|err| Error::Usage(format!("{}.{field}: {err}", desc.full_name())))
}

/// Trimmed, non-empty paths from a comma-separated flag.
pub fn mask_paths(paths: &[String]) -> Vec<String> {
    paths
        .iter()
        .flat_map(|p| p.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetlog_proto::DESCRIPTOR_POOL;

    fn desc(name: &str) -> MessageDescriptor {
        DESCRIPTOR_POOL
            .get_message_by_name(name)
            .unwrap_or_else(|| panic!("{name}"))
    }

    fn device() -> MessageDescriptor {
        desc("fleetlog.devices.v1.Device")
    }

    #[test]
    fn set_builds_json_and_mask_paths() {
        let mut body = Json::Object(Map::new());
        let d = device();
        let paths: Vec<String> = [
            "displayName=Gateway 1",
            "metadata.labels.site=berlin",
            "labels.`app.io/tier`=edge",
            "spec.logging_config.priority=5",
            "spec.loggingConfig.enableJournalExport=true",
            "spec.logging_config.units=a.service,b.service",
        ]
        .iter()
        .map(|a| apply_set(&mut body, &d, a).expect(a))
        .collect();
        assert_eq!(
            paths,
            [
                "display_name",
                "metadata.labels.site",
                "metadata.labels.`app.io/tier`",
                "spec.logging_config.priority",
                "spec.logging_config.enable_journal_export",
                "spec.logging_config.units",
            ]
        );
        assert_eq!(body["metadata"]["labels"]["app.io/tier"], "edge");
        assert_eq!(body["spec"]["loggingConfig"]["units"][1], "b.service");
        let message = decode(body, &d, "device").expect("decodes");
        let json = serde_json::to_value(&message).expect("serializes");
        assert_eq!(json["displayName"], "Gateway 1");
        assert_eq!(json["spec"]["loggingConfig"]["priority"], 5);
    }

    #[test]
    fn set_errors_name_the_field() {
        let mut body = Json::Object(Map::new());
        let d = device();
        for (assignment, expected) in [
            ("spec.nope=1", "unknown field `spec.nope`"),
            ("spec.logging_config.priority=high", "not a 32-bit integer"),
            (
                "spec.logging_config.enable_journal_export=yes",
                "not true or false",
            ),
            ("metadata.labels=x", "must hold an object"),
            ("metadata.labels.a.b=x", "must end at its key"),
            ("name", "expected path=value"),
            ("display_name.x=1", "has no fields"),
        ] {
            let err = apply_set(&mut body, &d, assignment).expect_err(assignment);
            let Error::Usage(message) = err else {
                panic!("{err:?}")
            };
            assert!(message.contains(expected), "{assignment}: {message}");
        }
        let policy = desc("fleetlog.devices.v1.ProvisioningPolicy");
        let err = apply_set(&mut body, &policy, "spec.mode=sometimes").expect_err("enum");
        assert!(format!("{err:?}").contains("UNATTENDED"), "{err:?}");
        apply_set(&mut body, &policy, "spec.mode=unattended").expect("case-insensitive enum");
    }

    #[test]
    fn documents_are_checked_and_normalized() {
        let d = device();
        let mut doc = parse_object(
            "display_name: x\nmetadata:\n  labels: {site: berlin}\nspec:\n  logging_config:\n    priority: 3\n",
            "test.yaml",
        )
        .expect("yaml");
        normalize(&mut doc, &d, "").expect("known fields");
        assert_eq!(doc["displayName"], "x");
        let mut paths = document_paths(&doc, &d, "");
        paths.sort();
        assert_eq!(
            paths,
            [
                "display_name",
                "metadata.labels",
                "spec.logging_config.priority"
            ]
        );
        assert_eq!(doc["spec"]["loggingConfig"]["priority"], 3);
        let mut bad =
            parse_object(r#"{"spec": {"loggingConfig": {"prio": 1}}}"#, "-d").expect("json");
        let err = normalize(&mut bad, &d, "").expect_err("unknown");
        assert!(
            format!("{err:?}").contains("unknown field `spec.loggingConfig.prio`"),
            "{err:?}"
        );
        assert_eq!(
            parse_documents("a: 1\n---\nb: 2\n", "x")
                .expect("two")
                .len(),
            2
        );
        assert!(parse_object("[1]", "x").is_err());
        assert!(parse_object("a: [", "x").is_err());
    }

    #[test]
    fn masks_keep_paths_verbatim() {
        let mut request = DynamicMessage::new(desc("fleetlog.devices.v1.UpdateDeviceRequest"));
        set_mask(
            &mut request,
            "update_mask",
            &["metadata.labels.siteName".to_owned()],
        )
        .expect("sets");
        let paths = request.get_field_by_name("update_mask").and_then(|m| {
            m.as_message()
                .and_then(|m| m.get_field_by_name("paths"))
                .map(|p| p.into_owned())
        });
        assert_eq!(
            paths,
            Some(Value::List(vec![Value::String(
                "metadata.labels.siteName".into()
            )]))
        );
        assert_eq!(
            mask_paths(&["a, b".into(), "".into(), "c".into()]),
            ["a", "b", "c"]
        );
    }
}
