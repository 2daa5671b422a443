//! The small languages of list and get requests: the AIP-160 `filter`, the
//! `order_by` list, field masks (`field_mask` on reads, `update_mask` on
//! updates) and sealed page tokens.
//!
//! Everything works on [`prost_reflect`] descriptors rather than on generated
//! types, so one implementation serves every resource. Parsing happens once
//! per request and resolves every field path against the resource's
//! descriptor up front: a typo in a request is reported as
//! [`InvalidArgument`] naming the request field, and evaluation afterwards
//! can neither fail nor panic, whatever the stored data looks like.

mod field_path;
mod filter;
mod mask;
mod order;
mod page_token;
mod translate;

pub use field_path::{FieldPath, Shape};
pub use filter::Filter;
pub use mask::FieldMask;
pub use order::{OrderBy, SortKey, SortValue};
pub use page_token::{Cursor, PageTokenKey};
pub use translate::PathTranslation;

/// A request field that cannot be used as given.
///
/// `field` is the request field's name (`filter`, `order_by`, `field_mask`,
/// `update_mask`, `page_token`) so the service layer can answer
/// `INVALID_ARGUMENT` naming it; `message` tells the caller what to fix.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid {field}: {message}")]
pub struct InvalidArgument {
    pub field: &'static str,
    pub message: String,
}

impl InvalidArgument {
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        InvalidArgument {
            field,
            message: message.into(),
        }
    }
}

/// Sample resources shared by the unit tests of this module tree.
#[cfg(test)]
pub(crate) mod testing {
    use fleetlog_proto::api::v1::Metadata;
    use fleetlog_proto::devices::v1::Device;
    use fleetlog_proto::devices::v1::device::spec::LoggingConfig;
    use fleetlog_proto::devices::v1::device::status::DeviceInfo;
    use fleetlog_proto::devices::v1::device::{Spec, Status};
    use prost_reflect::{DynamicMessage, MessageDescriptor, ReflectMessage};

    pub fn device_descriptor() -> MessageDescriptor {
        Device::default().descriptor()
    }

    /// A device with the fields the tests look at; everything else unset.
    #[derive(Clone, Default)]
    pub struct Sample {
        pub name: &'static str,
        pub priority: Option<i32>,
        pub online: Option<bool>,
        pub labels: &'static [(&'static str, &'static str)],
        pub units: &'static [&'static str],
        pub heartbeat: Option<&'static str>,
        pub os_version: Option<&'static str>,
    }

    impl Sample {
        pub fn typed(&self) -> Device {
            let metadata = Metadata {
                labels: self
                    .labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
                revision: 7,
                ..Metadata::default()
            };
            let spec = self.priority.map(|priority| Spec {
                service_account: "sa@example".to_owned(),
                logging_config: Some(LoggingConfig {
                    enable_journal_export: true,
                    priority,
                    units: self.units.iter().map(|u| (*u).to_owned()).collect(),
                }),
            });
            let status = self.online.map(|online| Status {
                online,
                device_info: self.os_version.map(|os| DeviceInfo {
                    os_version: os.to_owned(),
                    ..DeviceInfo::default()
                }),
                last_heartbeat_time: self
                    .heartbeat
                    .map(|t| t.parse().expect("test timestamps are valid RFC 3339")),
            });
            Device {
                name: self.name.to_owned(),
                display_name: format!("Display {}", self.name),
                description: String::new(),
                metadata: Some(metadata),
                spec,
                status,
            }
        }

        pub fn dynamic(&self) -> DynamicMessage {
            self.typed().transcode_to_dynamic()
        }
    }
}
