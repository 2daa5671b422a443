//! The constraints fields declare with the `fleetlog.api.v1.field` option
//! (`FieldRules`): ranges of numbers, enums that must be set, string
//! lengths. The engine checks resources and action requests with
//! [`check`]; the OpenAPI document declares the same [`rules_of`] each
//! field, so generated clients send only what the server accepts.

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use prost_reflect::{
    DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MapKey, MessageDescriptor,
    ReflectMessage, Value,
};

use crate::DESCRIPTOR_POOL;
use crate::api::v1::FieldRules;

const FIELD_OPTION: &str = "fleetlog.api.v1.field";

/// Every field's rules, read from the descriptors once.
static RULES: LazyLock<Rules> = LazyLock::new(|| Rules::new(&DESCRIPTOR_POOL));

/// A field that breaks its rules: `path` is in proto field names, with
/// list indexes and map keys (`entries[3].priority`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub path: String,
    pub message: String,
}

/// The rules `field` declares, if any.
pub fn rules_of(field: &FieldDescriptor) -> Option<&'static FieldRules> {
    RULES.by_field.get(field.full_name())
}

/// The first field of `message` (at any depth) that breaks its rules.
pub fn check(message: &impl ReflectMessage) -> Result<(), Violation> {
    let descriptor = message.descriptor();
    if !RULES.constrained.contains(descriptor.full_name()) {
        // Nothing to check: no transcoding on the hot path.
        return Ok(());
    }
    check_message(&message.transcode_to_dynamic(), "")
}

struct Rules {
    /// Field full name → its rules.
    by_field: HashMap<String, FieldRules>,
    /// Messages with a constrained field somewhere inside.
    constrained: HashSet<String>,
}

impl Rules {
    fn new(pool: &DescriptorPool) -> Rules {
        let mut by_field = HashMap::new();
        if let Some(option) = pool.get_extension_by_name(FIELD_OPTION) {
            for message in pool.all_messages() {
                for field in message.fields() {
                    let options = field.options();
                    if !options.has_extension(&option) {
                        continue;
                    }
                    if let Value::Message(rules) = options.get_extension(&option).into_owned()
                        && let Ok(rules) = rules.transcode_to::<FieldRules>()
                    {
                        by_field.insert(field.full_name().to_owned(), rules);
                    }
                }
            }
        }
        let mut constrained = HashSet::new();
        for message in pool.all_messages() {
            if reaches_rules(&message, &by_field, &mut HashSet::new()) {
                constrained.insert(message.full_name().to_owned());
            }
        }
        Rules {
            by_field,
            constrained,
        }
    }
}

fn reaches_rules(
    message: &MessageDescriptor,
    rules: &HashMap<String, FieldRules>,
    seen: &mut HashSet<String>,
) -> bool {
    if !seen.insert(message.full_name().to_owned()) {
        return false;
    }
    message.fields().any(|field| {
        rules.contains_key(field.full_name())
            || matches!(field.kind(), Kind::Message(inner) if reaches_rules(&inner, rules, seen))
    })
}

fn check_message(message: &DynamicMessage, prefix: &str) -> Result<(), Violation> {
    for field in message.descriptor().fields() {
        let rules = RULES.by_field.get(field.full_name());
        let nested = matches!(field.kind(), Kind::Message(ref m) if RULES.constrained.contains(m.full_name()));
        if rules.is_none() && !nested {
            continue;
        }
        // An absent optional scalar is not checked (unset means "no
        // constraint asked for"); a plain proto3 scalar always has its value
        // (0 included), and an absent message is its default, whose fields
        // are checked like any (an unset spec has an unspecified mode).
        let is_message = matches!(field.kind(), Kind::Message(_));
        if !is_message && field.supports_presence() && !message.has_field(&field) {
            continue;
        }
        let path = format!("{prefix}{}", field.name());
        let value = message.get_field(&field);
        match value.as_ref() {
            Value::List(items) => {
                for (i, item) in items.iter().enumerate() {
                    check_value(&field, rules, item, &format!("{path}[{i}]"))?;
                }
            }
            Value::Map(entries) => {
                for (key, item) in entries {
                    check_value(&field, rules, item, &format!("{path}[{}]", map_key(key)))?;
                }
            }
            single => check_value(&field, rules, single, &path)?,
        }
    }
    Ok(())
}

fn map_key(key: &MapKey) -> String {
    match key {
        MapKey::String(s) => format!("{s:?}"),
        other => format!("{other:?}"),
    }
}

fn check_value(
    field: &FieldDescriptor,
    rules: Option<&FieldRules>,
    value: &Value,
    path: &str,
) -> Result<(), Violation> {
    if let Value::Message(inner) = value {
        return check_message(inner, &format!("{path}."));
    }
    let Some(rules) = rules else { return Ok(()) };
    let violation = |message: String| Violation {
        path: path.to_owned(),
        message,
    };
    let number = match value {
        Value::I32(n) => Some(i64::from(*n)),
        Value::I64(n) => Some(*n),
        Value::U32(n) => Some(i64::from(*n)),
        Value::U64(n) => Some(i64::try_from(*n).unwrap_or(i64::MAX)),
        _ => None,
    };
    if let Some(n) = number {
        let too_small = rules.minimum.is_some_and(|min| n < min);
        let too_large = rules.maximum.is_some_and(|max| n > max);
        if too_small || too_large {
            return Err(violation(format!("{}, got {n}", describe_range(rules))));
        }
    }
    if let (Value::EnumNumber(n), Kind::Enum(descriptor)) = (value, field.kind())
        && rules.specified
        && (*n == 0 || descriptor.get_value(*n).is_none())
    {
        let allowed: Vec<String> = descriptor
            .values()
            .filter(|v| v.number() != 0)
            .map(|v| v.name().to_owned())
            .collect();
        return Err(violation(format!("must be one of {}", allowed.join(", "))));
    }
    if let (Value::String(text), Some(max)) = (value, rules.max_length)
        && text.chars().count() > max as usize
    {
        return Err(violation(format!("must be at most {max} characters")));
    }
    Ok(())
}

/// "must be 0 to 7", "must be at least 1", "must be at most 9".
fn describe_range(rules: &FieldRules) -> String {
    match (rules.minimum, rules.maximum) {
        (Some(min), Some(max)) => format!("must be {min} to {max}"),
        (Some(min), None) => format!("must be at least {min}"),
        (None, Some(max)) => format!("must be at most {max}"),
        (None, None) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::v1::device::{Spec, spec::LoggingConfig};
    use crate::devices::v1::provisioning_policy::Spec as PolicySpec;
    use crate::devices::v1::provisioning_policy::spec::{Mode, Template};
    use crate::devices::v1::{Device, LogEntry, ProvisioningPolicy, UploadDeviceLogsRequest};

    fn device(priority: i32) -> Device {
        Device {
            spec: Some(Spec {
                logging_config: Some(LoggingConfig {
                    priority,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn numbers_stay_in_their_declared_range() {
        assert_eq!(check(&device(0)), Ok(()));
        assert_eq!(check(&device(7)), Ok(()));
        assert_eq!(
            check(&device(8)),
            Err(Violation {
                path: "spec.logging_config.priority".into(),
                message: "must be 0 to 7, got 8".into(),
            })
        );
        assert!(check(&device(-1)).is_err());
    }

    #[test]
    fn list_items_are_named_by_index() {
        let request = UploadDeviceLogsRequest {
            entries: vec![
                LogEntry {
                    priority: 3,
                    ..Default::default()
                },
                LogEntry {
                    priority: 9,
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        assert_eq!(
            check(&request).map_err(|v| v.path),
            Err("entries[1].priority".to_owned())
        );
    }

    #[test]
    fn specified_enums_refuse_their_zero_value_and_nested_messages_are_checked() {
        let policy = |mode: Mode, priority: i32| ProvisioningPolicy {
            spec: Some(PolicySpec {
                mode: mode as i32,
                template: Some(Template {
                    spec: device(priority).spec,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(check(&policy(Mode::Unattended, 3)), Ok(()));
        assert_eq!(
            check(&ProvisioningPolicy::default()).map_err(|v| v.path),
            Err("spec.mode".to_owned()),
            "no spec is a spec with no mode"
        );
        assert_eq!(
            check(&policy(Mode::Unspecified, 3)),
            Err(Violation {
                path: "spec.mode".into(),
                message: "must be one of UNATTENDED, MANUAL_APPROVAL".into(),
            })
        );
        assert_eq!(
            check(&policy(Mode::ManualApproval, 12)).map_err(|v| v.path),
            Err("spec.template.spec.logging_config.priority".to_owned())
        );
    }

    #[test]
    fn rules_are_read_from_the_descriptors() {
        let descriptor = LoggingConfig::default().descriptor();
        let priority = descriptor.get_field_by_name("priority").expect("field");
        let rules = rules_of(&priority).expect("declared");
        assert_eq!((rules.minimum, rules.maximum), (Some(0), Some(7)));
        let name = Device::default()
            .descriptor()
            .get_field_by_name("name")
            .expect("field");
        assert!(rules_of(&name).is_none());
        assert!(
            !RULES.constrained.contains("fleetlog.meta.v1.Region"),
            "a message without rules is not transcoded"
        );
    }
}
