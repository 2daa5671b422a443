//! Provisioning's resources: `ProvisioningPolicy` and
//! `ProvisioningApprovalRequest` (they came with v1 and are stored in v1
//! form only; v1alpha2 sees them through the transforms), their validation,
//! and the decisions of an agent's registration that need no I/O
//! (reference: "Device Auto-registration Settings").
//!
//! The same hardware finds the same device: the device ID is derived from
//! the policy and the values of its identity fields, so the device's own
//! subject is the reservation — its create expects no event, and of two
//! agents registering one serial number at once exactly one creates it;
//! the other finds it (DESIGN §3, uniqueness claimed with expected
//! sequence 0).

use fleetlog_events::{Id, ResourceName};
use fleetlog_projections::query_lang::FieldPath;
use fleetlog_proto::devices::v1::device::Status as DeviceStatus;
use fleetlog_proto::devices::v1::provisioning_approval_request::spec::Conclusion;
use fleetlog_proto::devices::v1::provisioning_policy::spec::{Mode, Template};
use fleetlog_proto::devices::v1::{
    Device, ProvisioningApprovalRequest, ProvisioningPolicy, provisioning_policy,
};
use fleetlog_proto::devices::v1alpha2;
use prost_reflect::{ReflectMessage, Value};

use super::acts_as::keep_bound_account;
use super::names::v1alpha2::{
    ApprovalRequestName as V1alpha2RequestName, ProvisioningPolicyName as V1alpha2PolicyName,
};
use super::names::{ApprovalRequestName, DeviceName, ProvisioningPolicyName};
use super::{V1, V1ALPHA2};
use crate::Area;
use crate::error::ModelError;
use crate::{FieldViolation, Resource};

/// The default `device_name_format`.
const IDENTITY: &str = "{identity}";
const POLICY: &str = "{policy}";
/// Hex digits of the identity hash in a device ID.
pub const IDENTITY_DIGITS: usize = 16;

impl Resource for ProvisioningPolicy {
    type Name = ProvisioningPolicyName;
    const FIELD: &'static str = "provisioning_policy";
    const ID_FIELD: &'static str = "provisioning_policy_id";
    const API_VERSION: &'static str = V1;
    const ONE_VERSION: bool = true;
    const AREA: Area = Area::Devices;

    crate::resource_fields!();

    fn keep_output_only(&mut self, current: Option<&Self>) {
        keep_bound_account(self, current);
    }

    fn validate(&self) -> Result<(), FieldViolation> {
        // `spec.mode` must be set: declared in the proto (FieldRules).
        let spec = self.spec.clone().unwrap_or_default();
        let device = Device::default().descriptor();
        for (i, path) in spec.identity_field_paths.iter().enumerate() {
            FieldPath::parse(path, &device, "identity_field_paths").map_err(|e| {
                FieldViolation::new(
                    format!("spec.identity_field_paths[{i}]"),
                    format!("must be a Device field path: {}", e.message),
                )
            })?;
        }
        if let Ok(name) = self.name.parse::<ProvisioningPolicyName>() {
            let sample = "0".repeat(IDENTITY_DIGITS);
            device_id(&spec.device_name_format, &name, &sample)
                .map_err(|message| FieldViolation::new("spec.device_name_format", message))?;
        }
        if let Some(template) = &spec.template {
            let device = Device {
                spec: template.spec.clone(),
                ..Default::default()
            };
            device
                .validate()
                .map_err(|v| FieldViolation::new(format!("spec.template.{}", v.path), v.message))?;
        }
        Ok(())
    }
}

impl Resource for ProvisioningApprovalRequest {
    type Name = ApprovalRequestName;
    const FIELD: &'static str = "provisioning_approval_request";
    const ID_FIELD: &'static str = "provisioning_approval_request_id";
    const API_VERSION: &'static str = V1;
    const ONE_VERSION: bool = true;
    const AREA: Area = Area::Devices;

    crate::resource_fields!();

    /// The agent's account and the device it collected are the collect
    /// action's to set.
    fn keep_output_only(&mut self, current: Option<&Self>) {
        let account = current
            .and_then(|c| c.spec.as_ref())
            .map(|s| s.service_account.clone())
            .unwrap_or_default();
        let device = current
            .and_then(|c| c.status.as_ref())
            .map(|s| s.device.clone())
            .unwrap_or_default();
        if let Some(spec) = self.spec.as_mut() {
            spec.service_account = account;
        } else if !account.is_empty() {
            self.spec
                .get_or_insert_with(Default::default)
                .service_account = account;
        }
        if let Some(status) = self.status.as_mut() {
            status.device = device;
        } else if !device.is_empty() {
            self.status.get_or_insert_with(Default::default).device = device;
        }
    }

    fn validate(&self) -> Result<(), FieldViolation> {
        let conclusion = self.spec.as_ref().map_or(0, |s| s.conclusion);
        if Conclusion::try_from(conclusion).is_err() {
            return Err(FieldViolation::new(
                "spec.conclusion",
                "must be CONCLUSION_NOT_SPECIFIED, APPROVED or REVOKED",
            ));
        }
        Ok(())
    }
}

impl Resource for v1alpha2::ProvisioningPolicy {
    type Name = V1alpha2PolicyName;
    const FIELD: &'static str = "provisioning_policy";
    const ID_FIELD: &'static str = "provisioning_policy_id";
    const API_VERSION: &'static str = V1ALPHA2;
    const AREA: Area = Area::Devices;

    crate::resource_fields!();
}

impl Resource for v1alpha2::ProvisioningApprovalRequest {
    type Name = V1alpha2RequestName;
    const FIELD: &'static str = "provisioning_approval_request";
    const ID_FIELD: &'static str = "provisioning_approval_request_id";
    const API_VERSION: &'static str = V1ALPHA2;
    const AREA: Area = Area::Devices;

    crate::resource_fields!();
}

/// A device's ID under `format` (see `Spec.device_name_format`).
fn device_id(format: &str, policy: &ProvisioningPolicyName, identity: &str) -> Result<Id, String> {
    let format = if format.is_empty() { IDENTITY } else { format };
    if !format.contains(IDENTITY) {
        return Err(format!(
            "must contain {IDENTITY}, which tells devices apart"
        ));
    }
    let id = format
        .replace(IDENTITY, identity)
        .replace(POLICY, policy.provisioning_policy.as_str());
    Id::parse(&id).map_err(|e| format!("makes an invalid device ID {id:?}: {e}"))
}

/// FNV-1a 64 of the policy and the identity values: the same hardware
/// under the same policy always hashes the same.
fn identity_hash(policy: &ProvisioningPolicyName, values: &[String]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let policy = policy.to_string();
    for part in std::iter::once(policy.as_str()).chain(values.iter().map(String::as_str)) {
        for byte in part.bytes().chain(std::iter::once(0)) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    format!("{hash:016x}")
}

/// The values of the policy's identity fields in what an agent reported;
/// every one must be set.
fn identity_values(paths: &[String], status: &DeviceStatus) -> Result<Vec<String>, ModelError> {
    let reported = Device {
        status: Some(status.clone()),
        ..Default::default()
    }
    .transcode_to_dynamic();
    let descriptor = Device::default().descriptor();
    paths
        .iter()
        .map(|path| {
            let parsed = FieldPath::parse(path, &descriptor, "identity_field_paths")
                .map_err(|e| ModelError::Internal(format!("a stored policy: {}", e.message)))?;
            let value = parsed.value(&reported).map(|v| match v.as_ref() {
                Value::String(s) => s.clone(),
                other => format!("{other:?}"),
            });
            match value {
                Some(v) if !v.is_empty() => Ok(v),
                _ => Err(ModelError::invalid(
                    format!(
                        "device_status.{}",
                        path.strip_prefix("status.").unwrap_or(path)
                    ),
                    "is required: the policy recognises devices by it",
                )),
            }
        })
        .collect()
}

/// The identity by which `spec` recognises the hardware in `status`; none
/// when the policy has no identity fields (nothing recognises the hardware
/// again).
pub fn identity_of(
    policy: &ProvisioningPolicyName,
    spec: &provisioning_policy::Spec,
    status: &DeviceStatus,
) -> Result<Option<String>, ModelError> {
    if spec.identity_field_paths.is_empty() {
        return Ok(None);
    }
    let values = identity_values(&spec.identity_field_paths, status)?;
    Ok(Some(identity_hash(policy, &values)))
}

/// The device the hardware of `identity` has under `policy`, named by the
/// policy's `device_name_format`.
pub fn device_name(
    policy: &ProvisioningPolicyName,
    format: &str,
    identity: &str,
) -> Result<DeviceName, ModelError> {
    let id = device_id(format, policy, identity)
        .map_err(|m| ModelError::FailedPrecondition(format!("{policy}: device_name_format {m}")))?;
    Ok(DeviceName {
        project: policy.project.clone(),
        region: policy.region.clone(),
        device: id,
    })
}

/// A new device from the policy's template, with what its agent reported
/// (offline until it sends a heartbeat).
pub fn registered_device(
    name: &DeviceName,
    template: Option<Template>,
    status: &DeviceStatus,
) -> Device {
    let template = template.unwrap_or_default();
    let metadata = template.metadata.unwrap_or_default();
    Device {
        display_name: name.id().to_string(),
        metadata: Some(fleetlog_proto::api::v1::Metadata {
            labels: metadata.labels,
            annotations: metadata.annotations,
            ..Default::default()
        }),
        spec: template.spec,
        status: Some(DeviceStatus {
            online: false,
            ..status.clone()
        }),
        ..Default::default()
    }
}

/// The approval request the hardware of `identity` files under `policy`.
pub fn approval_request_name(
    policy: &ProvisioningPolicyName,
    identity: &str,
) -> Result<ApprovalRequestName, ModelError> {
    Ok(ApprovalRequestName {
        project: policy.project.clone(),
        region: policy.region.clone(),
        provisioning_policy: policy.provisioning_policy.clone(),
        provisioning_approval_request: Id::parse(identity)
            .map_err(|e| ModelError::Internal(format!("an identity hash: {e}")))?,
    })
}

/// Whether an agent may register through `policy` the way `mode` does;
/// the refusal says which call the policy's mode wants instead.
pub fn check_mode(
    name: &ProvisioningPolicyName,
    policy: &ProvisioningPolicy,
    mode: Mode,
) -> Result<(), ModelError> {
    let actual =
        Mode::try_from(policy.spec.as_ref().map_or(0, |s| s.mode)).unwrap_or(Mode::Unspecified);
    if actual != mode {
        let instead = match actual {
            Mode::ManualApproval => "ask with RequestProvisioningApproval",
            _ => "register with ProvisionDeviceViaPolicy",
        };
        return Err(ModelError::FailedPrecondition(format!(
            "{name} is {}, not {}: {instead}",
            actual.as_str_name(),
            mode.as_str_name()
        )));
    }
    Ok(())
}

/// What the agent collecting `request` registers: the hardware the request
/// reported, once an operator approved it.
pub fn approved_status(
    name: &ApprovalRequestName,
    request: &ProvisioningApprovalRequest,
) -> Result<DeviceStatus, ModelError> {
    let conclusion = request.spec.as_ref().map_or(0, |s| s.conclusion);
    match Conclusion::try_from(conclusion) {
        Ok(Conclusion::Approved) => {}
        Ok(Conclusion::Revoked) => {
            return Err(ModelError::FailedPrecondition(format!(
                "{name} was revoked by an operator"
            )));
        }
        _ => {
            return Err(ModelError::FailedPrecondition(format!(
                "{name} is waiting for an operator to approve it (spec.conclusion = APPROVED)"
            )));
        }
    }
    Ok(request
        .status
        .as_ref()
        .and_then(|s| s.device_status.clone())
        .unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetlog_proto::devices::v1::{device, provisioning_approval_request};

    fn policy() -> ProvisioningPolicyName {
        "projects/p/regions/eu1/provisioningPolicies/pi"
            .parse()
            .expect("valid")
    }

    #[test]
    fn same_identity_same_device_id() {
        let serial = vec!["SN-1".to_owned()];
        let a = identity_hash(&policy(), &serial);
        assert_eq!(a, identity_hash(&policy(), &serial));
        assert_ne!(a, identity_hash(&policy(), &["SN-2".to_owned()]));
        let other: ProvisioningPolicyName = "projects/p/regions/eu1/provisioningPolicies/other"
            .parse()
            .expect("valid");
        assert_ne!(a, identity_hash(&other, &serial));
        assert_eq!(a.len(), IDENTITY_DIGITS);
    }

    #[test]
    fn device_name_format_makes_valid_ids() {
        let id = device_id("", &policy(), "0123456789abcdef").expect("default");
        assert_eq!(id.as_str(), "0123456789abcdef");
        let id =
            device_id("{policy}-{identity}", &policy(), "0123456789abcdef").expect("with policy");
        assert_eq!(id.as_str(), "pi-0123456789abcdef");
        assert!(
            device_id("fixed", &policy(), "0").is_err(),
            "needs {{identity}}"
        );
        assert!(device_id("UPPER-{identity}", &policy(), "0").is_err());
        assert!(
            device_id(
                "a-very-long-prefix-that-overflows-{identity}",
                &policy(),
                "0123456789abcdef"
            )
            .is_err()
        );
    }

    #[test]
    fn identity_fields_must_be_reported() {
        let paths = vec!["status.device_info.hardware_information.system.serial_number".to_owned()];
        let err = identity_values(&paths, &DeviceStatus::default()).expect_err("missing serial");
        assert!(
            matches!(err, ModelError::InvalidArgument { ref field, .. } if field == "device_status.device_info.hardware_information.system.serial_number")
        );
        let status = DeviceStatus {
            device_info: Some(device::status::DeviceInfo {
                hardware_information: Some(device::status::device_info::HardwareInformation {
                    system: Some(device::status::device_info::hardware_information::System {
                        serial_number: "SN-9".into(),
                        ..Default::default()
                    }),
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            identity_values(&paths, &status).expect("set"),
            vec!["SN-9".to_owned()]
        );
    }

    #[test]
    fn policies_need_a_mode_and_device_paths() {
        let mut policy = ProvisioningPolicy {
            name: "projects/p/regions/eu1/provisioningPolicies/pi".into(),
            ..Default::default()
        };
        assert_eq!(
            fleetlog_proto::rules::check(&policy)
                .expect_err("no mode")
                .path,
            "spec.mode"
        );
        policy.spec = Some(provisioning_policy::Spec {
            mode: Mode::Unattended as i32,
            identity_field_paths: vec!["status.nope".into()],
            ..Default::default()
        });
        assert_eq!(
            policy.validate().expect_err("bad path").path,
            "spec.identity_field_paths[0]"
        );
        policy.spec = Some(provisioning_policy::Spec {
            mode: Mode::ManualApproval as i32,
            identity_field_paths: vec![
                "status.device_info.hardware_information.system.serial_number".into(),
            ],
            ..Default::default()
        });
        assert_eq!(policy.validate(), Ok(()));
    }

    #[test]
    fn agents_use_the_policy_by_its_mode() {
        let manual = ProvisioningPolicy {
            spec: Some(provisioning_policy::Spec {
                mode: Mode::ManualApproval as i32,
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(check_mode(&policy(), &manual, Mode::ManualApproval).is_ok());
        let err = check_mode(&policy(), &manual, Mode::Unattended).expect_err("wrong mode");
        assert!(
            matches!(err, ModelError::FailedPrecondition(ref m) if m.contains("RequestProvisioningApproval")),
            "{err:?}"
        );
    }

    #[test]
    fn only_approved_requests_are_collected() {
        let name: ApprovalRequestName =
            "projects/p/regions/eu1/provisioningPolicies/pi/provisioningApprovalRequests/r"
                .parse()
                .expect("valid");
        let with = |conclusion: Conclusion| ProvisioningApprovalRequest {
            spec: Some(provisioning_approval_request::Spec {
                conclusion: conclusion as i32,
                ..Default::default()
            }),
            status: Some(provisioning_approval_request::Status {
                device_status: Some(DeviceStatus {
                    online: true,
                    ..Default::default()
                }),
                device: String::new(),
            }),
            ..Default::default()
        };
        let status = approved_status(&name, &with(Conclusion::Approved)).expect("approved");
        assert!(status.online);
        for refused in [Conclusion::Revoked, Conclusion::NotSpecified] {
            assert!(matches!(
                approved_status(&name, &with(refused)),
                Err(ModelError::FailedPrecondition(_))
            ));
        }
    }
}
