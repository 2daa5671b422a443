//! `fleetlog.devices.v1.Device` (the storage version: it reads and writes
//! both versions' events) and `fleetlog.devices.v1alpha2.Device`: the
//! declarations the generic engine needs.

use fleetlog_events::StorageKey;
use fleetlog_proto::devices::v1::Device;
use fleetlog_proto::devices::v1alpha2;
use prost_reflect::ReflectMessage;

use super::acts_as::keep_bound_account;
use super::names::{DeviceName, v1alpha2::DeviceName as V1alpha2DeviceName};
use super::transforms::{DeviceToV1, DeviceToV1alpha2};
use super::{V1, V1ALPHA2};
use crate::Area;
use crate::error::ModelError;
use crate::transform::Transform;
use crate::{FieldViolation, Resource, Wire, decode_own_version};

impl Resource for Device {
    type Name = DeviceName;
    const FIELD: &'static str = "device";
    const ID_FIELD: &'static str = "device_id";
    const API_VERSION: &'static str = V1;
    const AREA: Area = Area::Devices;

    /// v1 is the storage version: it reads events of both versions.
    fn reads_type(type_name: &str) -> bool {
        type_name == Device::default().descriptor().full_name()
            || type_name == v1alpha2::Device::default().descriptor().full_name()
    }

    fn to_wire(&self, version: &str) -> Result<Wire, ModelError> {
        match version {
            V1 => Ok(Wire::of(self, self.name.clone())),
            V1ALPHA2 => {
                let old = DeviceToV1alpha2.resource(self.clone());
                Ok(Wire::of(&old, old.name.clone()))
            }
            other => Err(ModelError::Internal(format!(
                "devices have no API version {other}"
            ))),
        }
    }

    fn from_wire(any: &prost_types::Any, key: &StorageKey) -> Result<Self, ModelError> {
        let type_name = fleetlog_projections::projection::type_name_of(&any.type_url);
        if type_name == v1alpha2::Device::default().descriptor().full_name() {
            let old: v1alpha2::Device = decode_own_version(any)?;
            let (_, name) = StorageKey::parse::<DeviceName>(key.as_str())
                .map_err(|e| ModelError::Internal(format!("storage key {key}: {e}")))?;
            return Ok(DeviceToV1::new(name.region).resource(old));
        }
        decode_own_version(any)
    }

    crate::resource_fields!();

    fn keep_output_only(&mut self, current: Option<&Self>) {
        keep_bound_account(self, current);
    }

    fn acting_account(&self) -> Option<&str> {
        self.spec
            .as_ref()
            .map(|spec| spec.service_account.as_str())
            .filter(|account| !account.is_empty())
    }

    fn validate(&self) -> Result<(), FieldViolation> {
        // The priority's range is declared in the proto (FieldRules).
        let units = self
            .spec
            .as_ref()
            .and_then(|s| s.logging_config.as_ref())
            .map_or(&[][..], |logging| logging.units.as_slice());
        if let Some(i) = units.iter().position(|u| !is_unit_name(u)) {
            return Err(FieldViolation::new(
                format!("spec.logging_config.units[{i}]"),
                "must be a systemd unit name such as sshd.service",
            ));
        }
        Ok(())
    }
}

/// A permissive check of systemd unit names: non-empty, at most 256
/// characters, no whitespace or control characters, no `/`.
fn is_unit_name(unit: &str) -> bool {
    !unit.is_empty()
        && unit.len() <= 256
        && unit
            .chars()
            .all(|c| !c.is_whitespace() && !c.is_control() && c != '/')
}

impl Resource for v1alpha2::Device {
    type Name = V1alpha2DeviceName;
    const FIELD: &'static str = "device";
    const ID_FIELD: &'static str = "device_id";
    const API_VERSION: &'static str = V1ALPHA2;
    const AREA: Area = Area::Devices;

    crate::resource_fields!();

    fn acting_account(&self) -> Option<&str> {
        self.spec
            .as_ref()
            .map(|spec| spec.service_account.as_str())
            .filter(|account| !account.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetlog_proto::devices::v1::device::{Spec, spec::LoggingConfig};

    fn with_logging(priority: i32, units: &[&str]) -> Device {
        Device {
            spec: Some(Spec {
                logging_config: Some(LoggingConfig {
                    priority,
                    units: units.iter().map(|u| u.to_string()).collect(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn validates_priority_and_units() {
        assert_eq!(with_logging(0, &[]).validate(), Ok(()));
        assert_eq!(with_logging(7, &["sshd.service"]).validate(), Ok(()));
        for out_of_range in [8, -1] {
            let err = fleetlog_proto::rules::check(&with_logging(out_of_range, &[]))
                .expect_err("out of range");
            assert_eq!(err.path, "spec.logging_config.priority");
        }
        let err = with_logging(3, &["ok.service", "bad unit"])
            .validate()
            .expect_err("space");
        assert_eq!(err.path, "spec.logging_config.units[1]");
    }
}
