//! `order_by`: a comma-separated list of field paths, each optionally
//! followed by `asc` or `desc` (AIP-132).
//!
//! A list sorts on [`SortKey`]s extracted once per resource. The key is plain
//! serializable data rather than borrowed protobuf values because the last
//! key of a page travels inside the page token, and the next page resumes
//! strictly after it.

use std::cmp::Ordering;
use std::fmt;

use prost_reflect::{DynamicMessage, Kind, MessageDescriptor, Value};

use super::InvalidArgument;
use super::field_path::{FieldPath, Shape, kind_name};

const FIELD: &str = "order_by";

/// A parsed ordering. Empty means "by name", which callers implement as a
/// streaming scan; they always append the name as the final tiebreaker.
#[derive(Clone, Debug, Default)]
pub struct OrderBy {
    keys: Vec<OrderKey>,
}

#[derive(Clone, Debug)]
struct OrderKey {
    path: FieldPath,
    descending: bool,
}

/// One resource's values for the ordering's fields, in order.
pub type SortKey = Vec<SortValue>;

/// A field value reduced to what sorting needs. Variants order as listed
/// (only relevant for corrupt data, as one key position always holds one
/// type); `Missing` sorts first ascending, last descending.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum SortValue {
    /// An unset message on the way, or an absent map key.
    Missing,
    Bool(bool),
    /// Signed integers and enum numbers.
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    /// Bytes fields, and timestamps/durations encoded so that byte order is
    /// time order (see [`sortable_seconds`]).
    Bytes(Vec<u8>),
}

impl SortValue {
    /// A total order: floats by [`f64::total_cmp`], so NaN cannot break
    /// sorting or paging.
    pub fn total_cmp(&self, other: &SortValue) -> Ordering {
        match (self, other) {
            (SortValue::Bool(a), SortValue::Bool(b)) => a.cmp(b),
            (SortValue::Int(a), SortValue::Int(b)) => a.cmp(b),
            (SortValue::UInt(a), SortValue::UInt(b)) => a.cmp(b),
            (SortValue::Float(a), SortValue::Float(b)) => a.total_cmp(b),
            (SortValue::Str(a), SortValue::Str(b)) => a.cmp(b),
            (SortValue::Bytes(a), SortValue::Bytes(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }

    fn rank(&self) -> u8 {
        match self {
            SortValue::Missing => 0,
            SortValue::Bool(_) => 1,
            SortValue::Int(_) => 2,
            SortValue::UInt(_) => 3,
            SortValue::Float(_) => 4,
            SortValue::Str(_) => 5,
            SortValue::Bytes(_) => 6,
        }
    }

    fn from_value(value: Option<&Value>) -> SortValue {
        match value {
            None => SortValue::Missing,
            Some(Value::Bool(b)) => SortValue::Bool(*b),
            Some(Value::I32(n)) => SortValue::Int(i64::from(*n)),
            Some(Value::I64(n)) => SortValue::Int(*n),
            Some(Value::EnumNumber(n)) => SortValue::Int(i64::from(*n)),
            Some(Value::U32(n)) => SortValue::UInt(u64::from(*n)),
            Some(Value::U64(n)) => SortValue::UInt(*n),
            Some(Value::F32(x)) => SortValue::Float(f64::from(*x)),
            Some(Value::F64(x)) => SortValue::Float(*x),
            Some(Value::String(s)) => SortValue::Str(s.clone()),
            Some(Value::Bytes(b)) => SortValue::Bytes(b.to_vec()),
            Some(Value::Message(m)) => {
                let seconds = m.get_field_by_name("seconds").and_then(|v| v.as_i64());
                let nanos = m.get_field_by_name("nanos").and_then(|v| v.as_i32());
                match (seconds, nanos) {
                    (Some(seconds), Some(nanos)) => {
                        SortValue::Bytes(sortable_seconds(seconds, nanos))
                    }
                    _ => SortValue::Missing,
                }
            }
            Some(Value::List(_) | Value::Map(_)) => SortValue::Missing,
        }
    }
}

/// Encodes (seconds, nanos) so that comparing the bytes compares the
/// instants: big-endian with the sign bit flipped, which maps i64 order
/// onto unsigned byte order. A single [`SortValue`] thus carries the full
/// nanosecond precision that an `f64` would lose.
fn sortable_seconds(seconds: i64, nanos: i32) -> Vec<u8> {
    let mut out = Vec::with_capacity(12);
    out.extend_from_slice(&((seconds as u64) ^ (1 << 63)).to_be_bytes());
    out.extend_from_slice(&((nanos as u32) ^ (1 << 31)).to_be_bytes());
    out
}

impl OrderBy {
    /// Parses `"a.b desc, c"`. Every path must name one scalar, enum,
    /// timestamp or duration value; repeated fields, maps and other
    /// messages have no natural order.
    pub fn parse(text: &str, descriptor: &MessageDescriptor) -> Result<OrderBy, InvalidArgument> {
        let invalid = |message: String| InvalidArgument::new(FIELD, message);
        if text.trim().is_empty() {
            return Ok(OrderBy::default());
        }
        let mut keys: Vec<OrderKey> = Vec::new();
        for item in text.split(',') {
            let words: Vec<&str> = item.split_whitespace().collect();
            let (path_text, descending) = match words.as_slice() {
                [] => {
                    return Err(invalid(format!(
                        "empty entry in {text:?}; remove the extra comma"
                    )));
                }
                [path] => (*path, false),
                [path, direction] if direction.eq_ignore_ascii_case("asc") => (*path, false),
                [path, direction] if direction.eq_ignore_ascii_case("desc") => (*path, true),
                [_, direction] => {
                    return Err(invalid(format!(
                        "unknown direction {direction:?}; use asc or desc"
                    )));
                }
                _ => {
                    return Err(invalid(format!(
                        "{:?} is not of the form `FIELD [asc|desc]`; separate fields with commas",
                        item.trim()
                    )));
                }
            };
            let path = FieldPath::parse(path_text, descriptor, FIELD)?;
            check_orderable(&path).map_err(invalid)?;
            if keys.iter().any(|k| k.path == path) {
                return Err(invalid(format!("{path} is listed twice")));
            }
            keys.push(OrderKey { path, descending });
        }
        Ok(OrderBy { keys })
    }

    /// True when no ordering was asked for.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The values `msg` sorts by.
    pub fn sort_key(&self, msg: &DynamicMessage) -> SortKey {
        self.keys
            .iter()
            .map(|k| SortValue::from_value(k.path.value(msg).as_deref()))
            .collect()
    }

    /// Compares two keys made by [`OrderBy::sort_key`], applying `desc`.
    /// Positions a key lacks (a hand-made or short key) count as `Missing`.
    pub fn compare(&self, a: &SortKey, b: &SortKey) -> Ordering {
        for (i, key) in self.keys.iter().enumerate() {
            let left = a.get(i).unwrap_or(&SortValue::Missing);
            let right = b.get(i).unwrap_or(&SortValue::Missing);
            let ordering = left.total_cmp(right);
            let ordering = if key.descending {
                ordering.reverse()
            } else {
                ordering
            };
            if ordering.is_ne() {
                return ordering;
            }
        }
        Ordering::Equal
    }

    /// The same ordering in another API version's paths (text to parse
    /// against that version's descriptor).
    pub fn translate(&self, translation: &dyn super::PathTranslation) -> Result<String, String> {
        let mut items = Vec::with_capacity(self.keys.len());
        for key in &self.keys {
            let path = translation.path(&key.path.to_string())?;
            items.push(if key.descending {
                format!("{path} desc")
            } else {
                path
            });
        }
        Ok(items.join(", "))
    }

    /// The normalized text (canonical paths, `desc` only when descending),
    /// so equivalent spellings share page tokens and different orders don't.
    pub fn canonical(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for OrderBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, key) in self.keys.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}", key.path)?;
            if key.descending {
                f.write_str(" desc")?;
            }
        }
        Ok(())
    }
}

fn check_orderable(path: &FieldPath) -> Result<(), String> {
    match path.shape() {
        Shape::Single(Kind::Message(message))
            if matches!(
                message.full_name(),
                "google.protobuf.Timestamp" | "google.protobuf.Duration"
            ) =>
        {
            Ok(())
        }
        Shape::Single(kind @ Kind::Message(_)) => Err(format!(
            "cannot order by {path}: it is a message ({}); order by one of its fields",
            kind_name(kind)
        )),
        Shape::Single(_) => Ok(()),
        Shape::Repeated(_) => Err(format!("cannot order by {path}: it is repeated")),
        Shape::Map { .. } => Err(format!(
            "cannot order by {path}: it is a map; order by one key, as in {path}.KEY"
        )),
    }
}

#[cfg(test)]
mod tests {
    use expect_test::{Expect, expect};

    use super::*;
    use crate::query_lang::testing::{Sample, device_descriptor};

    fn check(text: &str, expected: Expect) {
        let actual = match OrderBy::parse(text, &device_descriptor()) {
            Ok(order) => format!("{:?}", order.canonical()),
            Err(err) => err.to_string(),
        };
        expected.assert_eq(&actual);
    }

    fn order(text: &str) -> OrderBy {
        match OrderBy::parse(text, &device_descriptor()) {
            Ok(order) => order,
            Err(err) => panic!("{text:?} should parse: {err}"),
        }
    }

    /// Sorts the samples as a list call would (name as the final tiebreaker).
    fn sorted(text: &str, samples: &[Sample]) -> Vec<&'static str> {
        let order = order(text);
        let mut keyed: Vec<(SortKey, &'static str)> = samples
            .iter()
            .map(|s| (order.sort_key(&s.dynamic()), s.name))
            .collect();
        keyed.sort_by(|a, b| order.compare(&a.0, &b.0).then_with(|| a.1.cmp(b.1)));
        keyed.into_iter().map(|(_, name)| name).collect()
    }

    #[test]
    fn parses_and_normalizes() {
        check("", expect![[r#""""#]]);
        check("  ", expect![[r#""""#]]);
        check("name", expect![[r#""name""#]]);
        check(
            "  spec.logging_config.priority   DESC ,name asc",
            expect![[r#""spec.logging_config.priority desc, name""#]],
        );
        check(
            "labels.env desc, displayName",
            expect![[r#""metadata.labels.env desc, display_name""#]],
        );
        check(
            "status.last_heartbeat_time",
            expect![[r#""status.last_heartbeat_time""#]],
        );
    }

    #[test]
    fn rejects_bad_orders() {
        check(
            "spec.foo",
            expect![[
                r#"invalid order_by: unknown field path "spec.foo" (known fields of fleetlog.devices.v1.Device.Spec: service_account, logging_config)"#
            ]],
        );
        check(
            "name,",
            expect![[r#"invalid order_by: empty entry in "name,"; remove the extra comma"#]],
        );
        check(
            "name descending",
            expect![[r#"invalid order_by: unknown direction "descending"; use asc or desc"#]],
        );
        check(
            "name desc display_name",
            expect![[
                r#"invalid order_by: "name desc display_name" is not of the form `FIELD [asc|desc]`; separate fields with commas"#
            ]],
        );
        check(
            "spec",
            expect![[
                r#"invalid order_by: cannot order by spec: it is a message (fleetlog.devices.v1.Device.Spec); order by one of its fields"#
            ]],
        );
        check(
            "spec.logging_config.units",
            expect![[
                r#"invalid order_by: cannot order by spec.logging_config.units: it is repeated"#
            ]],
        );
        check(
            "labels",
            expect![[
                r#"invalid order_by: cannot order by metadata.labels: it is a map; order by one key, as in metadata.labels.KEY"#
            ]],
        );
        check(
            "name, name desc",
            expect![[r#"invalid order_by: name is listed twice"#]],
        );
        check(
            "labels.env, metadata.labels.env",
            expect![[r#"invalid order_by: metadata.labels.env is listed twice"#]],
        );
    }

    fn samples() -> Vec<Sample> {
        vec![
            Sample {
                name: "d1",
                priority: Some(5),
                labels: &[("env", "prod")],
                ..Sample::default()
            },
            Sample {
                name: "d2",
                priority: Some(3),
                labels: &[("env", "dev")],
                ..Sample::default()
            },
            Sample {
                name: "d3",
                priority: Some(5),
                labels: &[("env", "dev")],
                ..Sample::default()
            },
            // No spec: priority missing.
            Sample {
                name: "d4",
                ..Sample::default()
            },
            Sample {
                name: "d0",
                priority: Some(3),
                labels: &[("env", "prod")],
                ..Sample::default()
            },
        ]
    }

    #[test]
    fn sorts_ascending_with_missing_first_and_name_ties() {
        assert_eq!(
            sorted("spec.logging_config.priority", &samples()),
            ["d4", "d0", "d2", "d1", "d3"]
        );
        assert_eq!(
            sorted("spec.logging_config.priority asc", &samples()),
            ["d4", "d0", "d2", "d1", "d3"]
        );
    }

    #[test]
    fn sorts_descending_with_missing_last() {
        assert_eq!(
            sorted("spec.logging_config.priority desc", &samples()),
            ["d1", "d3", "d0", "d2", "d4"]
        );
        assert_eq!(
            sorted("name desc", &samples()),
            ["d4", "d3", "d2", "d1", "d0"]
        );
    }

    #[test]
    fn sorts_by_several_keys() {
        assert_eq!(
            sorted("labels.env, spec.logging_config.priority desc", &samples()),
            ["d4", "d3", "d2", "d1", "d0"]
        );
        assert_eq!(
            sorted("labels.env desc, spec.logging_config.priority", &samples()),
            ["d0", "d1", "d2", "d3", "d4"]
        );
    }

    #[test]
    fn sorts_timestamps_by_instant() {
        let samples = vec![
            Sample {
                name: "late",
                online: Some(true),
                heartbeat: Some("2024-05-01T12:00:00.000000002Z"),
                ..Sample::default()
            },
            Sample {
                name: "early",
                online: Some(true),
                heartbeat: Some("1969-12-31T23:59:59Z"),
                ..Sample::default()
            },
            Sample {
                name: "mid",
                online: Some(true),
                heartbeat: Some("2024-05-01T12:00:00.000000001Z"),
                ..Sample::default()
            },
            Sample {
                name: "never",
                online: Some(true),
                ..Sample::default()
            },
        ];
        assert_eq!(
            sorted("status.last_heartbeat_time", &samples),
            ["never", "early", "mid", "late"]
        );
        assert_eq!(
            sorted("status.last_heartbeat_time desc", &samples),
            ["late", "mid", "early", "never"]
        );
    }

    #[test]
    fn sort_values_have_a_total_order() {
        use SortValue::*;
        let ascending = [
            Missing,
            Bool(false),
            Bool(true),
            Int(-5),
            Int(3),
            UInt(0),
            Float(f64::NEG_INFINITY),
            Float(-0.0),
            Float(0.0),
            Float(f64::NAN),
            Str(String::new()),
            Str("a".into()),
            Bytes(vec![0]),
        ];
        for (i, a) in ascending.iter().enumerate() {
            for (j, b) in ascending.iter().enumerate() {
                assert_eq!(a.total_cmp(b), i.cmp(&j), "{a:?} vs {b:?}");
            }
        }
    }

    #[test]
    fn compare_treats_short_keys_as_missing() {
        let order = order("spec.logging_config.priority desc, name");
        assert_eq!(
            order.compare(
                &vec![SortValue::Int(1)],
                &vec![SortValue::Int(1), SortValue::Str("a".into())]
            ),
            Ordering::Less
        );
        assert_eq!(
            order.compare(&vec![SortValue::Int(2)], &vec![SortValue::Int(1)]),
            Ordering::Less
        );
        assert!(
            OrderBy::parse("", &device_descriptor())
                .expect("empty")
                .is_empty()
        );
        assert!(!order.is_empty());
    }

    #[test]
    fn sort_key_reads_each_field() {
        let order = order("name, spec.logging_config.priority, labels.env, status.online");
        let key = order.sort_key(
            &Sample {
                name: "d1",
                priority: Some(4),
                ..Sample::default()
            }
            .dynamic(),
        );
        assert_eq!(
            key,
            vec![
                SortValue::Str("d1".into()),
                SortValue::Int(4),
                SortValue::Missing,
                SortValue::Missing
            ]
        );
    }
}
