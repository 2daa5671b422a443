//! Rendering of any response, known only by its descriptor: a table of
//! resources (name, display name if the type has one, revision, update time,
//! labels), a table of the elements of a response's one list, or the set
//! fields as `path   value` lines. JSON and YAML are the proto3 JSON mapping.
//!
//! Nothing here trusts the shape of a message: every field is looked up by
//! descriptor and a missing one renders as `-`.

use prost_reflect::{DynamicMessage, Kind, MapKey, MessageDescriptor, ReflectMessage, Value};

use crate::cli::Output;
use crate::error::{Error, stderr_line};
use crate::output;

/// Placeholder for an absent or empty value, so every column is one word.
const NONE: &str = "-";

/// How deep nested messages are flattened into `a.b.c` rows before the
/// rest is shown as JSON.
const MAX_DEPTH: usize = 8;

/// Well-known types render as their JSON form (`2026-01-02T03:04:05Z`,
/// `1.5s`, `a,b`), not field by field.
fn is_well_known(desc: &MessageDescriptor) -> bool {
    desc.package_name() == "google.protobuf"
}

/// A resource: a message with a string `name` and a `metadata` message
/// (every type the catalog lists has both).
pub fn is_resource(desc: &MessageDescriptor) -> bool {
    let name = desc
        .get_field_by_name("name")
        .is_some_and(|f| f.kind() == Kind::String && !f.is_list());
    let metadata = desc
        .get_field_by_name("metadata")
        .is_some_and(|f| matches!(f.kind(), Kind::Message(_)) && !f.is_list());
    name && metadata
}

/// A message's JSON form as one line; a JSON string without its quotes.
fn message_text(message: &DynamicMessage) -> String {
    match serde_json::to_value(message) {
        Ok(serde_json::Value::String(text)) => text,
        Ok(value) => value.to_string(),
        Err(_) => format!("<{}>", message.descriptor().name()),
    }
}

/// One value as table text. `kind` is the field's kind (for a map, the
/// entry message's).
pub fn value_text(value: &Value, kind: &Kind) -> String {
    match value {
        Value::Bool(b) => b.to_string(),
        Value::I32(n) => n.to_string(),
        Value::I64(n) => n.to_string(),
        Value::U32(n) => n.to_string(),
        Value::U64(n) => n.to_string(),
        Value::F32(n) => n.to_string(),
        Value::F64(n) => n.to_string(),
        Value::String(s) => s.clone(),
        Value::Bytes(bytes) => match std::str::from_utf8(bytes) {
            Ok(text) if !text.chars().any(char::is_control) => text.to_owned(),
            _ => format!("<{} bytes>", bytes.len()),
        },
        Value::EnumNumber(number) => match kind {
            Kind::Enum(enumeration) => enumeration
                .get_value(*number)
                .map_or_else(|| number.to_string(), |v| v.name().to_owned()),
            _ => number.to_string(),
        },
        Value::Message(message) => message_text(message),
        Value::List(items) => items
            .iter()
            .map(|item| value_text(item, kind))
            .collect::<Vec<_>>()
            .join(","),
        Value::Map(map) => {
            let (key_kind, value_kind) = map_kinds(kind);
            let mut entries: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{}={}", key_text(k, &key_kind), value_text(v, &value_kind)))
                .collect();
            entries.sort();
            entries.join(",")
        }
    }
}

fn map_kinds(kind: &Kind) -> (Kind, Kind) {
    match kind {
        Kind::Message(entry) if entry.is_map_entry() => (
            entry.map_entry_key_field().kind(),
            entry.map_entry_value_field().kind(),
        ),
        other => (Kind::String, other.clone()),
    }
}

fn key_text(key: &MapKey, _kind: &Kind) -> String {
    match key {
        MapKey::Bool(b) => b.to_string(),
        MapKey::I32(n) => n.to_string(),
        MapKey::I64(n) => n.to_string(),
        MapKey::U32(n) => n.to_string(),
        MapKey::U64(n) => n.to_string(),
        MapKey::String(s) => s.clone(),
    }
}

fn or_none(text: String) -> String {
    if text.is_empty() {
        NONE.to_owned()
    } else {
        text
    }
}

/// The text of the (set) field at `path` of `message`, if any.
fn field_text(message: &DynamicMessage, path: &[&str]) -> Option<String> {
    let (first, rest) = path.split_first()?;
    let field = message.descriptor().get_field_by_name(first)?;
    if !message.has_field(&field) {
        return None;
    }
    let value = message.get_field(&field);
    if rest.is_empty() {
        return Some(value_text(&value, &field.kind()));
    }
    match value.as_ref() {
        Value::Message(inner) => field_text(inner, rest),
        _ => None,
    }
}

/// Resources as a table: NAME, DISPLAY NAME (when the type has one),
/// REVISION, UPDATED, LABELS.
pub fn resource_table(resources: &[DynamicMessage]) -> String {
    let display = resources
        .first()
        .is_some_and(|r| r.descriptor().get_field_by_name("display_name").is_some());
    let mut headers = vec!["NAME"];
    if display {
        headers.push("DISPLAY NAME");
    }
    headers.extend(["REVISION", "UPDATED", "LABELS"]);
    let rows: Vec<Vec<String>> = resources
        .iter()
        .map(|resource| {
            let text = |path: &[&str]| or_none(field_text(resource, path).unwrap_or_default());
            let mut row = vec![text(&["name"])];
            if display {
                row.push(text(&["display_name"]));
            }
            row.push(text(&["metadata", "revision"]));
            row.push(text(&["metadata", "update_time"]));
            row.push(text(&["metadata", "labels"]));
            row
        })
        .collect();
    output::format_table(&headers, &rows)
}

/// The set fields of `message` as `(path, text)`, nested messages flattened
/// into dotted paths, list elements as `path[i]`, map entries as `path.key`.
pub fn key_values(message: &DynamicMessage) -> Vec<(String, String)> {
    let mut rows = Vec::new();
    flatten(message, "", 0, &mut rows);
    rows
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{prefix}.{name}")
    }
}

fn flatten(message: &DynamicMessage, prefix: &str, depth: usize, rows: &mut Vec<(String, String)>) {
    for (field, value) in message.fields() {
        let path = join(prefix, field.name());
        let kind = field.kind();
        match value {
            Value::Message(inner) if !is_well_known(&inner.descriptor()) && depth < MAX_DEPTH => {
                let before = rows.len();
                flatten(inner, &path, depth + 1, rows);
                if rows.len() == before {
                    // Present but empty: say so rather than print nothing.
                    rows.push((path, "{}".to_owned()));
                }
            }
            Value::List(items)
                if matches!(&kind, Kind::Message(m) if !is_well_known(m)) && depth < MAX_DEPTH =>
            {
                for (i, item) in items.iter().enumerate() {
                    let item_path = format!("{path}[{i}]");
                    match item {
                        Value::Message(inner) => {
                            let before = rows.len();
                            flatten(inner, &item_path, depth + 1, rows);
                            if rows.len() == before {
                                rows.push((item_path, "{}".to_owned()));
                            }
                        }
                        other => rows.push((item_path, value_text(other, &kind))),
                    }
                }
            }
            Value::Map(map) => {
                let (key_kind, value_kind) = map_kinds(&kind);
                let mut entries: Vec<(String, String)> = map
                    .iter()
                    .map(|(k, v)| {
                        (
                            join(&path, &key_text(k, &key_kind)),
                            value_text(v, &value_kind),
                        )
                    })
                    .collect();
                entries.sort();
                rows.extend(entries);
            }
            other => rows.push((path, value_text(other, &kind))),
        }
    }
}

/// `path   value` lines, the paths padded to one width.
pub fn key_value_text(rows: &[(String, String)]) -> String {
    let width = rows
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    rows.iter()
        .map(|(key, value)| {
            let pad = width.saturating_sub(key.chars().count());
            let line = format!("{key}{}   {value}", " ".repeat(pad));
            format!("{}\n", line.trim_end())
        })
        .collect()
}

/// The elements of a list of messages as a table, one column per field of
/// the element type.
fn element_table(element: &MessageDescriptor, items: &[Value]) -> String {
    let fields: Vec<_> = element.fields().collect();
    let headers: Vec<String> = fields
        .iter()
        .map(|f| f.name().replace('_', " ").to_uppercase())
        .collect();
    let header_refs: Vec<&str> = headers.iter().map(String::as_str).collect();
    let rows: Vec<Vec<String>> = items
        .iter()
        .filter_map(Value::as_message)
        .map(|item| {
            fields
                .iter()
                .map(|f| {
                    if item.has_field(f) {
                        or_none(value_text(&item.get_field(f), &f.kind()))
                    } else {
                        NONE.to_owned()
                    }
                })
                .collect()
        })
        .collect();
    output::format_table(&header_refs, &rows)
}

/// A message rendered for people: the table for stdout, and notes for
/// stderr (more pages).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Rendered {
    pub text: String,
    pub notes: Vec<String>,
}

/// Renders any message as a table (see the module docs).
pub fn table(message: &DynamicMessage) -> Rendered {
    let desc = message.descriptor();
    if is_resource(&desc) {
        return Rendered {
            text: resource_table(std::slice::from_ref(message)),
            notes: Vec::new(),
        };
    }
    // A list or batch response: its one repeated field of resources.
    let resource_lists: Vec<_> = desc
        .fields()
        .filter(|f| f.is_list() && matches!(f.kind(), Kind::Message(m) if is_resource(&m)))
        .collect();
    if let [list] = resource_lists.as_slice() {
        let value = message.get_field(list);
        let items: Vec<DynamicMessage> = value
            .as_list()
            .unwrap_or_default()
            .iter()
            .filter_map(|v| v.as_message().cloned())
            .collect();
        let mut text = resource_table(&items);
        if items.is_empty()
            && let Kind::Message(element) = list.kind()
        {
            // The header alone, with the right columns for the type.
            text = resource_table(&[DynamicMessage::new(element)]);
            text = text
                .lines()
                .next()
                .map(|l| format!("{l}\n"))
                .unwrap_or_default();
        }
        let mut notes = Vec::new();
        if let Some(token) = field_text(message, &["next_page_token"]).filter(|t| !t.is_empty()) {
            notes.push(format!(
                "more: continue with --page-token '{token}', or pass --all"
            ));
        }
        return Rendered { text, notes };
    }
    // A response that is one list of messages (log entries): a table of it.
    let set: Vec<_> = message.fields().map(|(f, _)| f).collect();
    if let [only] = set.as_slice()
        && only.is_list()
        && let Kind::Message(element) = only.kind()
        && !is_well_known(&element)
    {
        let value = message.get_field(only);
        let items = value.as_list().unwrap_or_default();
        return Rendered {
            text: element_table(&element, items),
            notes: Vec::new(),
        };
    }
    Rendered {
        text: key_value_text(&key_values(message)),
        notes: Vec::new(),
    }
}

/// Prints one response in the chosen format.
pub fn print(message: &DynamicMessage, out: Output) -> Result<(), Error> {
    match out {
        Output::Table => {
            let rendered = table(message);
            output::write_stdout(&rendered.text)?;
            for note in rendered.notes {
                stderr_line(&note);
            }
            Ok(())
        }
        out => output::print_document(message, out),
    }
}

/// Prints one message of a stream: a table (or the watch lines), a compact
/// JSON line, or a YAML document.
pub fn print_stream_item(message: &DynamicMessage, out: Output) -> Result<(), Error> {
    match out {
        Output::Table => {
            if let Some(lines) = watch_lines(message) {
                for line in lines {
                    output::write_line(&line)?;
                }
                Ok(())
            } else {
                print(message, out)
            }
        }
        out => output::print_stream_item(message, out),
    }
}

/// The `TYPE  REVISION  NAME` lines of a watch response (`changes`,
/// `is_current`, `revision`); `None` when the message is not one.
pub fn watch_lines(message: &DynamicMessage) -> Option<Vec<String>> {
    let desc = message.descriptor();
    let changes = desc.get_field_by_name("changes")?;
    if !changes.is_list() || !matches!(changes.kind(), Kind::Message(_)) {
        return None;
    }
    let mut lines = Vec::new();
    let value = message.get_field(&changes);
    for change in value
        .as_list()
        .unwrap_or_default()
        .iter()
        .filter_map(Value::as_message)
    {
        let kind = field_text(change, &["type"]).unwrap_or_else(|| "CHANGE".to_owned());
        let revision = int_field(change, "revision").unwrap_or(0);
        // The name, else the name of the resource the change carries.
        let name = field_text(change, &["name"])
            .filter(|n| !n.is_empty())
            .or_else(|| {
                change.fields().find_map(|(f, v)| match v {
                    Value::Message(inner) if matches!(f.kind(), Kind::Message(m) if is_resource(&m)) => {
                        field_text(inner, &["name"])
                    }
                    _ => None,
                })
            })
            .unwrap_or_else(|| NONE.to_owned());
        lines.push(output::watch_line(&kind, revision, &name));
    }
    let is_current = desc
        .get_field_by_name("is_current")
        .is_some_and(|f| message.get_field(&f).as_bool() == Some(true));
    if is_current {
        let revision = int_field(message, "revision").unwrap_or(0);
        lines.push(output::watch_current_line(revision));
    }
    Some(lines)
}

/// An integer field's value.
pub fn int_field(message: &DynamicMessage, name: &str) -> Option<i64> {
    let field = message.descriptor().get_field_by_name(name)?;
    match message.get_field(&field).as_ref() {
        Value::I64(n) => Some(*n),
        Value::I32(n) => Some(i64::from(*n)),
        Value::U32(n) => Some(i64::from(*n)),
        Value::U64(n) => i64::try_from(*n).ok(),
        _ => None,
    }
}

/// A string field's value.
#[cfg(test)]
pub fn string_field(message: &DynamicMessage, name: &str) -> Option<String> {
    let field = message.descriptor().get_field_by_name(name)?;
    message.get_field(&field).as_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetlog_proto::DESCRIPTOR_POOL;
    use serde::de::DeserializeSeed;

    fn message(type_name: &str, json: &str) -> DynamicMessage {
        let desc = DESCRIPTOR_POOL
            .get_message_by_name(type_name)
            .unwrap_or_else(|| panic!("{type_name} in the pool"));
        let mut de = serde_json::Deserializer::from_str(json);
        desc.deserialize(&mut de).expect("valid JSON")
    }

    #[test]
    fn resources_render_as_rows() {
        let device = message(
            "fleetlog.devices.v1.Device",
            r#"{"name":"projects/p/regions/r/devices/d","displayName":"Gateway",
                "metadata":{"revision":"7","labels":{"site":"berlin","env":"prod"},
                "updateTime":"2026-01-02T03:04:05Z"}}"#,
        );
        let rendered = table(&device);
        assert_eq!(
            rendered.text,
            "\
NAME                             DISPLAY NAME   REVISION   UPDATED                LABELS
projects/p/regions/r/devices/d   Gateway        7          2026-01-02T03:04:05Z   env=prod,site=berlin
"
        );
        let binding = message(
            "fleetlog.iam.v1.RoleBinding",
            r#"{"name":"projects/p/roleBindings/b"}"#,
        );
        assert_eq!(
            table(&binding).text,
            "NAME                        REVISION   UPDATED   LABELS\nprojects/p/roleBindings/b   -          -         -\n"
        );
    }

    #[test]
    fn lists_render_their_resources_and_notes() {
        let list = message(
            "fleetlog.devices.v1.ListDevicesResponse",
            r#"{"devices":[{"name":"a"},{"name":"b"}],"nextPageToken":"tok","revision":"3"}"#,
        );
        let rendered = table(&list);
        assert_eq!(rendered.text.lines().count(), 3);
        assert!(rendered.notes[0].contains("--page-token 'tok'"));
        let empty = message("fleetlog.devices.v1.ListDevicesResponse", "{}");
        assert_eq!(
            table(&empty).text,
            "NAME   DISPLAY NAME   REVISION   UPDATED   LABELS\n"
        );
    }

    #[test]
    fn other_messages_render_as_paths_and_values() {
        let key = message(
            "fleetlog.devices.v1.ProvisionServiceAccountToDeviceResponse",
            r#"{"device":{"name":"d","metadata":{"labels":{"a.b":"c"}}},
                "serviceAccountKey":{"keyName":"k","key":"secret"}}"#,
        );
        assert_eq!(
            table(&key).text,
            "\
device.name                    d
device.metadata.labels.a.b     c
service_account_key.key_name   k
service_account_key.key        secret
"
        );
        let logs = message(
            "fleetlog.devices.v1.QueryDeviceLogsResponse",
            r#"{"entries":[{"time":"2026-01-02T03:04:05Z","priority":3,"unit":"sshd.service","message":"hi"}]}"#,
        );
        assert_eq!(
            table(&logs).text,
            "TIME                   PRIORITY   UNIT           MESSAGE\n2026-01-02T03:04:05Z   3          sshd.service   hi\n"
        );
        let empty = message("google.protobuf.Empty", "{}");
        assert_eq!(table(&empty).text, "");
    }

    #[test]
    fn watch_responses_render_as_change_lines() {
        let watch = message(
            "fleetlog.devices.v1.WatchDevicesResponse",
            r#"{"changes":[{"type":"ADDED","name":"n1","revision":"4"},
                           {"type":"REMOVED","revision":"5","device":{"name":"n2"}}],
                "isCurrent":true,"revision":"5"}"#,
        );
        assert_eq!(
            watch_lines(&watch).expect("a watch response"),
            [
                "ADDED     4           n1",
                "REMOVED   5           n2",
                "-- current state complete at revision 5 --"
            ]
        );
        let device = message("fleetlog.devices.v1.Device", "{}");
        assert!(watch_lines(&device).is_none());
    }
}
