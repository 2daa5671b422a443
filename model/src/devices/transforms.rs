//! The transforms between `fleetlog.devices.v1alpha2` and v1, the
//! storage version: in v1alpha2 a device is
//! `projects/{project}/devices/{device}` (not regional) and its logging
//! configuration is flat on the spec; policies and approval requests lose
//! the region segment and carry the device template's logging config flat
//! (they are stored in v1 form only, whichever version is current).
//!
//! A v1alpha2 name maps to v1 in the deployment's region; v1 maps back by
//! dropping the region segment (API.md, "Devices v1alpha2").

use fleetlog_events::Id;
use fleetlog_proto::devices::v1;
use fleetlog_proto::devices::v1alpha2::{
    Device, ProvisioningApprovalRequest, ProvisioningPolicy, ServiceAccountKey, device,
    provisioning_policy,
};

use super::names::v1alpha2::{
    ApprovalRequestName, ApprovalRequestParent, DeviceName, DeviceParent, ProvisioningPolicyName,
    ProvisioningPolicyParent,
};
use super::names::{
    ApprovalRequestName as V1RequestName, ApprovalRequestParent as V1RequestParent,
    DeviceName as V1DeviceName, DeviceParent as V1DeviceParent,
    ProvisioningPolicyName as V1PolicyName, ProvisioningPolicyParent as V1PolicyParent,
};
use crate::transform::Transform;

/// Field paths that moved: (v1alpha2, v1).
const MOVED_PATHS: &[(&str, &str)] = &[
    (
        "spec.journal_export_enabled",
        "spec.logging_config.enable_journal_export",
    ),
    ("spec.log_priority", "spec.logging_config.priority"),
    ("spec.log_units", "spec.logging_config.units"),
];

/// The v1 message that v1alpha2 flattened into three fields.
const SPLIT_MESSAGE: &str = "spec.logging_config";

/// v1alpha2 → v1, placing devices in the deployment's region. (v1alpha2
/// writes are validated as v1 after this transform.)
#[derive(Clone, Debug)]
pub struct DeviceToV1 {
    region: Id,
}

impl DeviceToV1 {
    pub fn new(region: Id) -> Self {
        DeviceToV1 { region }
    }
}

/// v1 → v1alpha2 for devices.
#[derive(Clone, Copy, Debug)]
pub struct DeviceToV1alpha2;

/// `Status` (and the log messages) have the same fields and numbers in both
/// versions: re-decoding the encoding converts them without listing every
/// nested field twice.
pub fn same_shape<A: prost::Message, B: prost::Message + Default>(a: &A) -> B {
    B::decode(a.encode_to_vec().as_slice()).unwrap_or_default()
}

impl Transform for DeviceToV1 {
    type From = Device;
    type To = v1::Device;

    fn resource(&self, old: Device) -> v1::Device {
        // A malformed (or empty) name stays as sent; the engine reports it.
        let name = match old.name.parse::<DeviceName>() {
            Ok(name) => self.name(&name).to_string(),
            Err(_) => old.name.clone(),
        };
        v1::Device {
            name,
            display_name: old.display_name,
            description: old.description,
            metadata: old.metadata,
            spec: old.spec.map(|spec| v1::device::Spec {
                service_account: spec.service_account,
                logging_config: Some(v1::device::spec::LoggingConfig {
                    enable_journal_export: spec.journal_export_enabled,
                    priority: spec.log_priority,
                    units: spec.log_units,
                }),
            }),
            status: old.status.as_ref().map(same_shape),
        }
    }

    fn name(&self, name: &DeviceName) -> V1DeviceName {
        V1DeviceName {
            project: name.project.clone(),
            region: self.region.clone(),
            device: name.device.clone(),
        }
    }

    fn parent(&self, parent: &DeviceParent) -> V1DeviceParent {
        V1DeviceParent {
            project: parent.project.clone(),
            region: self.region.clone(),
        }
    }

    fn paths(&self, path: &str) -> Vec<String> {
        let moved = MOVED_PATHS
            .iter()
            .find(|(old, _)| *old == path)
            .map(|(_, new)| *new);
        vec![moved.unwrap_or(path).to_owned()]
    }
}

impl Transform for DeviceToV1alpha2 {
    type From = v1::Device;
    type To = Device;

    fn resource(&self, new: v1::Device) -> Device {
        let name = match new.name.parse::<V1DeviceName>() {
            Ok(name) => self.name(&name).to_string(),
            Err(_) => new.name.clone(),
        };
        Device {
            name,
            display_name: new.display_name,
            description: new.description,
            metadata: new.metadata,
            spec: new.spec.map(|spec| {
                let logging = spec.logging_config.unwrap_or_default();
                device::Spec {
                    service_account: spec.service_account,
                    journal_export_enabled: logging.enable_journal_export,
                    log_priority: logging.priority,
                    log_units: logging.units,
                }
            }),
            status: new.status.as_ref().map(same_shape),
        }
    }

    fn name(&self, name: &V1DeviceName) -> DeviceName {
        DeviceName {
            project: name.project.clone(),
            device: name.device.clone(),
        }
    }

    fn parent(&self, parent: &V1DeviceParent) -> DeviceParent {
        DeviceParent {
            project: parent.project.clone(),
        }
    }

    fn paths(&self, path: &str) -> Vec<String> {
        if path == SPLIT_MESSAGE {
            return MOVED_PATHS
                .iter()
                .map(|(old, _)| (*old).to_owned())
                .collect();
        }
        let moved = MOVED_PATHS
            .iter()
            .find(|(_, new)| *new == path)
            .map(|(old, _)| *old);
        vec![moved.unwrap_or(path).to_owned()]
    }
}

/// The agent's key as v1alpha2 carries it.
pub fn key_to_v1alpha2(key: v1::ServiceAccountKey) -> ServiceAccountKey {
    ServiceAccountKey {
        service_account: key.service_account,
        key_name: key.key_name,
        key: key.key,
    }
}

/// Where a device template's paths sit inside a policy.
const TEMPLATE: &str = "spec.template.";

/// v1alpha2 → v1 for policies, in the deployment's region.
#[derive(Clone, Debug)]
pub struct PolicyToV1 {
    region: Id,
    device: DeviceToV1,
}

impl PolicyToV1 {
    pub fn new(region: Id) -> Self {
        PolicyToV1 {
            device: DeviceToV1::new(region.clone()),
            region,
        }
    }

    fn device_paths(&self, path: &str) -> Vec<String> {
        self.device.paths(path)
    }
}

/// v1 → v1alpha2 for policies.
#[derive(Clone, Copy, Debug)]
pub struct PolicyToV1alpha2;

/// A path of the policy: template paths move with the device's.
fn policy_paths(path: &str, device_paths: impl Fn(&str) -> Vec<String>) -> Vec<String> {
    match path.strip_prefix(TEMPLATE) {
        Some(inner) => device_paths(inner)
            .into_iter()
            .map(|p| format!("{TEMPLATE}{p}"))
            .collect(),
        None => vec![path.to_owned()],
    }
}

impl Transform for PolicyToV1 {
    type From = ProvisioningPolicy;
    type To = v1::ProvisioningPolicy;

    fn resource(&self, old: ProvisioningPolicy) -> v1::ProvisioningPolicy {
        let name = match old.name.parse::<ProvisioningPolicyName>() {
            Ok(name) => self.name(&name).to_string(),
            Err(_) => old.name.clone(),
        };
        v1::ProvisioningPolicy {
            name,
            display_name: old.display_name,
            description: old.description,
            metadata: old.metadata,
            spec: old.spec.map(|spec| v1::provisioning_policy::Spec {
                mode: spec.mode,
                service_account: spec.service_account,
                device_name_format: spec.device_name_format,
                identity_field_paths: spec
                    .identity_field_paths
                    .iter()
                    .flat_map(|p| self.device_paths(p))
                    .collect(),
                template: spec
                    .template
                    .map(|t| v1::provisioning_policy::spec::Template {
                        metadata: t.metadata,
                        spec: self
                            .device
                            .resource(Device {
                                spec: t.spec,
                                ..Default::default()
                            })
                            .spec,
                    }),
            }),
        }
    }

    fn name(&self, name: &ProvisioningPolicyName) -> V1PolicyName {
        V1PolicyName {
            project: name.project.clone(),
            region: self.region.clone(),
            provisioning_policy: name.provisioning_policy.clone(),
        }
    }

    fn parent(&self, parent: &ProvisioningPolicyParent) -> V1PolicyParent {
        V1PolicyParent {
            project: parent.project.clone(),
            region: self.region.clone(),
        }
    }

    fn paths(&self, path: &str) -> Vec<String> {
        policy_paths(path, |p| self.device_paths(p))
    }
}

impl Transform for PolicyToV1alpha2 {
    type From = v1::ProvisioningPolicy;
    type To = ProvisioningPolicy;

    fn resource(&self, new: v1::ProvisioningPolicy) -> ProvisioningPolicy {
        let name = match new.name.parse::<V1PolicyName>() {
            Ok(name) => self.name(&name).to_string(),
            Err(_) => new.name.clone(),
        };
        ProvisioningPolicy {
            name,
            display_name: new.display_name,
            description: new.description,
            metadata: new.metadata,
            spec: new.spec.map(|spec| provisioning_policy::Spec {
                mode: spec.mode,
                service_account: spec.service_account,
                device_name_format: spec.device_name_format,
                identity_field_paths: spec
                    .identity_field_paths
                    .iter()
                    .flat_map(|p| DeviceToV1alpha2.paths(p))
                    .collect(),
                template: spec.template.map(|t| provisioning_policy::spec::Template {
                    metadata: t.metadata,
                    spec: DeviceToV1alpha2
                        .resource(v1::Device {
                            spec: t.spec,
                            ..Default::default()
                        })
                        .spec,
                }),
            }),
        }
    }

    fn name(&self, name: &V1PolicyName) -> ProvisioningPolicyName {
        ProvisioningPolicyName {
            project: name.project.clone(),
            provisioning_policy: name.provisioning_policy.clone(),
        }
    }

    fn parent(&self, parent: &V1PolicyParent) -> ProvisioningPolicyParent {
        ProvisioningPolicyParent {
            project: parent.project.clone(),
        }
    }

    fn paths(&self, path: &str) -> Vec<String> {
        policy_paths(path, |p| DeviceToV1alpha2.paths(p))
    }
}

/// v1alpha2 → v1 for approval requests, in the deployment's region.
#[derive(Clone, Debug)]
pub struct ApprovalRequestToV1 {
    region: Id,
}

impl ApprovalRequestToV1 {
    pub fn new(region: Id) -> Self {
        ApprovalRequestToV1 { region }
    }
}

/// v1 → v1alpha2 for approval requests.
#[derive(Clone, Copy, Debug)]
pub struct ApprovalRequestToV1alpha2;

impl Transform for ApprovalRequestToV1 {
    type From = ProvisioningApprovalRequest;
    type To = v1::ProvisioningApprovalRequest;

    fn resource(&self, old: ProvisioningApprovalRequest) -> v1::ProvisioningApprovalRequest {
        let mut new: v1::ProvisioningApprovalRequest = same_shape(&old);
        new.name = match old.name.parse::<ApprovalRequestName>() {
            Ok(name) => self.name(&name).to_string(),
            Err(_) => old.name,
        };
        new
    }

    fn name(&self, name: &ApprovalRequestName) -> V1RequestName {
        V1RequestName {
            project: name.project.clone(),
            region: self.region.clone(),
            provisioning_policy: name.provisioning_policy.clone(),
            provisioning_approval_request: name.provisioning_approval_request.clone(),
        }
    }

    fn parent(&self, parent: &ApprovalRequestParent) -> V1RequestParent {
        V1RequestParent {
            project: parent.project.clone(),
            region: self.region.clone(),
            provisioning_policy: parent.provisioning_policy.clone(),
        }
    }

    fn paths(&self, path: &str) -> Vec<String> {
        vec![path.to_owned()]
    }
}

impl Transform for ApprovalRequestToV1alpha2 {
    type From = v1::ProvisioningApprovalRequest;
    type To = ProvisioningApprovalRequest;

    fn resource(&self, new: v1::ProvisioningApprovalRequest) -> ProvisioningApprovalRequest {
        let mut old: ProvisioningApprovalRequest = same_shape(&new);
        if let Ok(name) = new.name.parse::<V1RequestName>() {
            old.name = self.name(&name).to_string();
        }
        if let Some(status) = old.status.as_mut()
            && let Ok(device) = status.device.parse::<V1DeviceName>()
        {
            status.device = DeviceToV1alpha2.name(&device).to_string();
        }
        old
    }

    fn name(&self, name: &V1RequestName) -> ApprovalRequestName {
        ApprovalRequestName {
            project: name.project.clone(),
            provisioning_policy: name.provisioning_policy.clone(),
            provisioning_approval_request: name.provisioning_approval_request.clone(),
        }
    }

    fn parent(&self, parent: &V1RequestParent) -> ApprovalRequestParent {
        ApprovalRequestParent {
            project: parent.project.clone(),
            provisioning_policy: parent.provisioning_policy.clone(),
        }
    }

    fn paths(&self, path: &str) -> Vec<String> {
        vec![path.to_owned()]
    }
}

#[cfg(test)]
mod tests {
    //! Snapshot tests of every transform, both ways: the expected text is
    //! the snapshot.

    use super::*;
    use crate::transform::{translate_filter, translate_mask, translate_order};
    use fleetlog_proto::api::v1::Metadata;
    use fleetlog_proto::devices::v1::device::spec::LoggingConfig;

    fn eu1() -> DeviceToV1 {
        DeviceToV1::new(Id::parse("eu1").expect("valid"))
    }

    fn old_device() -> Device {
        Device {
            name: "projects/p0/devices/d7".into(),
            display_name: "Gate 7".into(),
            description: "north entrance".into(),
            metadata: Some(Metadata {
                labels: [("site".to_owned(), "berlin".to_owned())].into(),
                generation: 3,
                ..Default::default()
            }),
            spec: Some(device::Spec {
                service_account: "projects/p0/serviceAccounts/gate".into(),
                journal_export_enabled: true,
                log_priority: 4,
                log_units: vec!["sshd.service".into(), "agent.service".into()],
            }),
            status: Some(device::Status {
                online: true,
                device_info: Some(device::status::DeviceInfo {
                    hardware_information: Some(device::status::device_info::HardwareInformation {
                        system: Some(device::status::device_info::hardware_information::System {
                            serial_number: "SN-1".into(),
                            manufacturer: "Acme".into(),
                            product_name: "Edge 2".into(),
                        }),
                    }),
                    os_version: "6.1".into(),
                    agent_version: "1.4".into(),
                }),
                last_heartbeat_time: None,
            }),
        }
    }

    #[test]
    fn resource_up_and_down() {
        let new = eu1().resource(old_device());
        assert_eq!(new.name, "projects/p0/regions/eu1/devices/d7");
        assert_eq!(
            new.spec.as_ref().and_then(|s| s.logging_config.clone()),
            Some(LoggingConfig {
                enable_journal_export: true,
                priority: 4,
                units: vec!["sshd.service".into(), "agent.service".into()],
            })
        );
        assert_eq!(
            new.status
                .as_ref()
                .and_then(|s| s.device_info.as_ref())
                .and_then(|i| i.hardware_information.as_ref())
                .and_then(|h| h.system.as_ref())
                .map(|s| s.serial_number.as_str()),
            Some("SN-1")
        );
        assert_eq!(new.metadata, old_device().metadata);
        // And back: nothing lost.
        assert_eq!(DeviceToV1alpha2.resource(new), old_device());
    }

    #[test]
    fn partial_resources_stay_partial() {
        let masked = v1::Device {
            spec: Some(v1::device::Spec {
                logging_config: Some(LoggingConfig {
                    priority: 6,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let old = DeviceToV1alpha2.resource(masked);
        assert_eq!(old.name, "");
        assert_eq!(old.spec.map(|s| s.log_priority), Some(6));
        assert_eq!(eu1().resource(Device::default()), v1::Device::default());
    }

    #[test]
    fn names_and_parents() {
        let old: DeviceName = "projects/p0/devices/d7".parse().expect("valid");
        assert_eq!(
            eu1().name(&old).to_string(),
            "projects/p0/regions/eu1/devices/d7"
        );
        let new: V1DeviceName = "projects/p0/regions/us2/devices/d7".parse().expect("valid");
        assert_eq!(
            DeviceToV1alpha2.name(&new).to_string(),
            "projects/p0/devices/d7"
        );
        let parent: DeviceParent = "projects/p0".parse().expect("valid");
        assert_eq!(eu1().parent(&parent).to_string(), "projects/p0/regions/eu1");
        assert_eq!(
            DeviceToV1alpha2.parent(&eu1().parent(&parent)).to_string(),
            "projects/p0"
        );
    }

    fn mask(paths: &[&str]) -> Option<prost_types::FieldMask> {
        Some(prost_types::FieldMask {
            paths: paths.iter().map(|p| (*p).to_owned()).collect(),
        })
    }

    #[test]
    fn masks_both_ways() {
        let up = translate_mask(
            &eu1(),
            mask(&[
                "spec.log_priority",
                "spec.log_units",
                "display_name",
                "status",
            ]),
            "field_mask",
        )
        .expect("valid");
        assert_eq!(
            up.map(|m| m.paths),
            Some(vec![
                "spec.logging_config.priority".to_owned(),
                "spec.logging_config.units".to_owned(),
                "display_name".to_owned(),
                "status".to_owned(),
            ])
        );
        let down = translate_mask(
            &DeviceToV1alpha2,
            mask(&[
                "spec.logging_config",
                "spec.logging_config.enable_journal_export",
            ]),
            "update_mask",
        )
        .expect("valid");
        assert_eq!(
            down.map(|m| m.paths),
            Some(vec![
                "spec.journal_export_enabled".to_owned(),
                "spec.log_priority".to_owned(),
                "spec.log_units".to_owned(),
                "spec.journal_export_enabled".to_owned(),
            ])
        );
        let err = translate_mask(&eu1(), mask(&["spec.logging_config"]), "field_mask")
            .expect_err("v1alpha2 has no logging_config");
        assert!(err.to_string().contains("field_mask"), "{err}");
    }

    #[test]
    fn filters_both_ways() {
        let up = translate_filter(
            &eu1(),
            r#"labels.site = "berlin" AND (spec.log_priority >= 5 OR NOT spec.journal_export_enabled = true) AND spec.log_units:"sshd.service" AND name = "projects/p0/devices/d7""#,
        )
        .expect("valid");
        assert_eq!(
            up,
            r#"metadata.labels.site = "berlin" AND (spec.logging_config.priority >= 5 OR NOT spec.logging_config.enable_journal_export = true) AND spec.logging_config.units:"sshd.service" AND name = "projects/p0/regions/eu1/devices/d7""#
        );
        let down = translate_filter(
            &DeviceToV1alpha2,
            r#"spec.logging_config.priority IN (1, 2) AND status.online = true AND name != "projects/p0/regions/eu1/devices/x""#,
        )
        .expect("valid");
        assert_eq!(
            down,
            r#"spec.log_priority IN (1, 2) AND status.online = true AND name != "projects/p0/devices/x""#
        );
        let err = translate_filter(&DeviceToV1alpha2, "spec.logging_config:*")
            .expect_err("split message");
        assert!(err.to_string().contains("no single counterpart"), "{err}");
        assert_eq!(translate_filter(&eu1(), "").expect("empty"), "");
    }

    #[test]
    fn orders_both_ways() {
        assert_eq!(
            translate_order(&eu1(), "spec.log_priority desc, display_name").expect("valid"),
            "spec.logging_config.priority desc, display_name"
        );
        assert_eq!(
            translate_order(
                &DeviceToV1alpha2,
                "spec.logging_config.priority, metadata.create_time desc"
            )
            .expect("valid"),
            "spec.log_priority, metadata.create_time desc"
        );
        assert_eq!(translate_order(&DeviceToV1alpha2, "").expect("empty"), "");
    }
}
