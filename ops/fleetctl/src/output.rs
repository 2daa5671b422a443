//! Rendering of responses: aligned tables for people, proto3 JSON (or the
//! same as YAML) for programs.

use std::io::{self, Write};

use prost_reflect::ReflectMessage;

use crate::cli::Output;
use crate::error::Error;

/// Column separator of tables.
const GAP: &str = "   ";

/// Renders `rows` under `headers` as left-aligned columns, one line per row.
/// Widths are counted in characters; the last column is not padded.
pub fn format_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header_row: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header_row).chain(rows) {
        let mut line = String::new();
        let last = row.len().saturating_sub(1);
        for (i, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if i < last {
                let width = widths.get(i).copied().unwrap_or(0);
                let pad = width.saturating_sub(cell.chars().count());
                line.extend(std::iter::repeat_n(' ', pad));
                line.push_str(GAP);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Column layout of watch output; every line is written as it arrives, so widths
/// are fixed rather than measured.
const WATCH_TYPE_WIDTH: usize = 8;
const WATCH_REVISION_WIDTH: usize = 10;

/// The header line printed once before watch changes.
pub fn watch_header() -> String {
    format!(
        "{:<tw$}  {:<rw$}  NAME",
        "TYPE",
        "REVISION",
        tw = WATCH_TYPE_WIDTH,
        rw = WATCH_REVISION_WIDTH
    )
}

/// One watch line: `TYPE  REVISION  NAME`, in fixed-width columns.
pub fn watch_line(kind: &str, revision: i64, name: &str) -> String {
    format!(
        "{kind:<tw$}  {revision:<rw$}  {name}",
        tw = WATCH_TYPE_WIDTH,
        rw = WATCH_REVISION_WIDTH
    )
}

/// The line marking the end of the initial state of a watch.
pub fn watch_current_line(revision: i64) -> String {
    format!("-- current state complete at revision {revision} --")
}

/// The message in the proto3 JSON mapping (lowerCamelCase names, default values
/// omitted, 64-bit integers as strings, timestamps in RFC 3339).
pub fn to_json<M: ReflectMessage>(message: &M, pretty: bool) -> Result<String, serde_json::Error> {
    let dynamic = message.transcode_to_dynamic();
    if pretty {
        serde_json::to_string_pretty(&dynamic)
    } else {
        serde_json::to_string(&dynamic)
    }
}

/// The message in the proto3 JSON mapping, as YAML.
pub fn to_yaml<M: ReflectMessage>(message: &M) -> Result<String, serde_yaml::Error> {
    serde_yaml::to_string(&message.transcode_to_dynamic())
}

/// Prints `message` as one JSON (pretty) or YAML document; `Table` callers
/// render their own tables, and get JSON here.
pub fn print_document<M: ReflectMessage>(message: &M, out: Output) -> Result<(), Error> {
    match out {
        Output::Yaml => write_stdout(&yaml_document(&to_yaml(message)?))?,
        Output::Json | Output::Table => write_line(&to_json(message, true)?)?,
    }
    Ok(())
}

/// Prints one item of a stream: a compact JSON line, or a YAML document
/// after `---`, so a reader can take each as it comes.
pub fn print_stream_item<M: ReflectMessage>(message: &M, out: Output) -> Result<(), Error> {
    match out {
        Output::Yaml => write_stdout(&format!("---\n{}", yaml_document(&to_yaml(message)?)))?,
        Output::Json | Output::Table => write_line(&to_json(message, false)?)?,
    }
    Ok(())
}

/// Prints a JSON value as JSON (pretty) or YAML.
pub fn print_value(value: &serde_json::Value, out: Output) -> Result<(), Error> {
    match out {
        Output::Yaml => write_stdout(&yaml_document(&serde_yaml::to_string(value)?))?,
        Output::Json | Output::Table => write_line(&serde_json::to_string_pretty(value)?)?,
    }
    Ok(())
}

/// `text` ending in exactly one newline.
fn yaml_document(text: &str) -> String {
    format!("{}\n", text.trim_end_matches('\n'))
}

/// Writes `text` to stdout and flushes it.
pub fn write_stdout(text: &str) -> io::Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()
}

/// Writes `line` and a newline to stdout and flushes it.
pub fn write_line(line: &str) -> io::Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(line.as_bytes())?;
    out.write_all(b"\n")?;
    out.flush()
}

pub use fleetlog_proto::status::code_name;

#[cfg(test)]
mod tests {
    use super::*;
    use fleetlog_proto::api::v1::Metadata;
    use fleetlog_proto::devices::v1::Device;
    use fleetlog_proto::devices::v1::device::{Spec, Status, spec::LoggingConfig};

    fn sample_device() -> Device {
        Device {
            name: "projects/p/regions/r/devices/gateway-1".into(),
            display_name: "Gateway 1".into(),
            description: "in the basement".into(),
            metadata: Some(Metadata {
                labels: [("site", "berlin"), ("env", "prod")]
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect(),
                revision: 42,
                ..Default::default()
            }),
            spec: Some(Spec {
                logging_config: Some(LoggingConfig {
                    enable_journal_export: true,
                    priority: 5,
                    units: vec!["sshd.service".into()],
                }),
                ..Default::default()
            }),
            status: Some(Status {
                online: true,
                ..Default::default()
            }),
        }
    }

    #[test]
    fn tables_align_columns() {
        let rows = vec![
            vec![
                "gateway-1".to_owned(),
                "Gateway 1".to_owned(),
                "42".to_owned(),
            ],
            vec!["d".to_owned(), "-".to_owned(), "-".to_owned()],
        ];
        let expected = "\
NAME        DISPLAY NAME   REVISION
gateway-1   Gateway 1      42
d           -              -
";
        assert_eq!(
            format_table(&["NAME", "DISPLAY NAME", "REVISION"], &rows),
            expected
        );
        assert_eq!(format_table(&["NAME", "LABELS"], &[]), "NAME   LABELS\n");
    }

    #[test]
    fn json_uses_lower_camel_case() {
        let json = to_json(&sample_device(), true).expect("serializes");
        let value: serde_json::Value = serde_json::from_str(&json).expect("valid json");
        assert_eq!(value["displayName"], "Gateway 1");
        assert_eq!(value["spec"]["loggingConfig"]["enableJournalExport"], true);
        assert_eq!(value["spec"]["loggingConfig"]["priority"], 5);
        assert_eq!(value["metadata"]["revision"], "42");
        assert_eq!(value["metadata"]["labels"]["site"], "berlin");
    }

    #[test]
    fn yaml_is_the_json_mapping() {
        let yaml = to_yaml(&sample_device()).expect("serializes");
        let value: serde_json::Value = serde_yaml::from_str(&yaml).expect("valid yaml");
        assert_eq!(value["displayName"], "Gateway 1");
        assert_eq!(value["metadata"]["revision"], "42");
    }

    #[test]
    fn watch_lines() {
        assert_eq!(
            watch_line("MODIFIED", 17, "projects/p/regions/r/devices/d"),
            "MODIFIED  17          projects/p/regions/r/devices/d"
        );
        assert_eq!(watch_header(), "TYPE      REVISION    NAME");
        assert_eq!(
            watch_current_line(17),
            "-- current state complete at revision 17 --"
        );
    }
}
