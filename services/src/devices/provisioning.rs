//! Provisioning: `ProvisioningPolicy` and `ProvisioningApprovalRequest`
//! (v1 only; they came with v1), and the flow an agent goes through to get
//! its device and key (reference: "Device Auto-registration Settings").
//!
//! The same hardware finds the same device: the device ID is derived from
//! the policy and the values of its identity fields, so the device's own
//! subject is the reservation — its create expects no event, and of two
//! agents registering one serial number at once exactly one creates it;
//! the other finds it (DESIGN §3, uniqueness claimed with expected
//! sequence 0).

use std::sync::Arc;

use fleetlog_events::{Id, ResourceName, resource_name};
use fleetlog_projections::query_lang::FieldPath;
use fleetlog_proto::devices::v1::device::Status as DeviceStatus;
use fleetlog_proto::devices::v1::provisioning_approval_request::spec::Conclusion;
use fleetlog_proto::devices::v1::provisioning_approval_request_service_server::ProvisioningApprovalRequestService;
use fleetlog_proto::devices::v1::provisioning_policy::spec::Mode;
use fleetlog_proto::devices::v1::provisioning_policy_service_server::ProvisioningPolicyService;
use fleetlog_proto::devices::v1::*;
use prost_reflect::{ReflectMessage, Value};

use super::device::DeviceName;
use crate::engine::access::{Access, Area, Caller};
use crate::engine::{CreateRequest, Engine, FieldViolation, Resource, ServiceContext};
use crate::error::ServiceError;
use crate::iam::Accounts;
use crate::iam::names::ServiceAccountName;

resource_name! {
    /// `projects/{project}/regions/{region}/provisioningPolicies/{provisioning_policy}`
    pub struct ProvisioningPolicyName {
        parent ProvisioningPolicyParent { projects: project, regions: region }
        provisioningPolicies: provisioning_policy
    }
}

resource_name! {
    /// `…/provisioningPolicies/{provisioning_policy}/provisioningApprovalRequests/{provisioning_approval_request}`
    pub struct ApprovalRequestName {
        parent ApprovalRequestParent { projects: project, regions: region, provisioningPolicies: provisioning_policy }
        provisioningApprovalRequests: provisioning_approval_request
    }
}

impl ApprovalRequestName {
    pub fn policy(&self) -> ProvisioningPolicyName {
        ProvisioningPolicyName {
            project: self.project.clone(),
            region: self.region.clone(),
            provisioning_policy: self.provisioning_policy.clone(),
        }
    }
}

const ACTION_PROVISION_SERVICE_ACCOUNT: &str = "ProvisionServiceAccount";
const ACTION_REMOVE_SERVICE_ACCOUNT: &str = "RemoveServiceAccount";
const ACTION_PROVISIONED: &str = "ProvisionDevice";
/// The default `device_name_format`.
const IDENTITY: &str = "{identity}";
const POLICY: &str = "{policy}";
/// Hex digits of the identity hash in a device ID.
const IDENTITY_DIGITS: usize = 16;

impl Resource for ProvisioningPolicy {
    type Name = ProvisioningPolicyName;
    const FIELD: &'static str = "provisioning_policy";
    const ID_FIELD: &'static str = "provisioning_policy_id";
    const API_VERSION: &'static str = super::V1;
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
    const API_VERSION: &'static str = super::V1;
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
fn identity_values(paths: &[String], status: &DeviceStatus) -> Result<Vec<String>, ServiceError> {
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
                .map_err(|e| ServiceError::Internal(format!("a stored policy: {}", e.message)))?;
            let value = parsed.value(&reported).map(|v| match v.as_ref() {
                Value::String(s) => s.clone(),
                other => format!("{other:?}"),
            });
            match value {
                Some(v) if !v.is_empty() => Ok(v),
                _ => Err(ServiceError::invalid(
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

/// The agent flows, shared by the three services that expose them.
#[derive(Clone)]
pub struct Provisioning {
    pub devices: Engine<Device>,
    pub policies: Engine<ProvisioningPolicy>,
    pub requests: Engine<ProvisioningApprovalRequest>,
    pub accounts: Accounts,
}

/// A resource a service account acts for (a device's agent, a policy's
/// registering agents): `spec.service_account` names it.
pub trait ActsAs: Resource {
    fn bound_account(&self) -> &str;
    fn bound_account_mut(&mut self) -> &mut String;
}

impl ActsAs for Device {
    fn bound_account(&self) -> &str {
        self.spec
            .as_ref()
            .map_or("", |s| s.service_account.as_str())
    }

    fn bound_account_mut(&mut self) -> &mut String {
        &mut self
            .spec
            .get_or_insert_with(Default::default)
            .service_account
    }
}

impl ActsAs for ProvisioningPolicy {
    fn bound_account(&self) -> &str {
        self.spec
            .as_ref()
            .map_or("", |s| s.service_account.as_str())
    }

    fn bound_account_mut(&mut self) -> &mut String {
        &mut self
            .spec
            .get_or_insert_with(Default::default)
            .service_account
    }
}

/// Only the provisioning actions bind a service account: Create and Update
/// keep the one `current` has (none on create).
pub fn keep_bound_account<R: ActsAs>(resource: &mut R, current: Option<&R>) {
    let kept = current
        .map(|c| c.bound_account().to_owned())
        .unwrap_or_default();
    if kept != resource.bound_account() {
        *resource.bound_account_mut() = kept;
    }
}

/// Who may call a device's custom action.
#[derive(Clone, Copy, Debug)]
pub enum Who {
    /// The device's own agent only.
    Agent,
    /// A caller with this access in the device's project.
    Role(Access),
    /// Either.
    AgentOrRole(Access),
}

/// A device and its agent's new key.
pub struct Provisioned {
    pub device: Device,
    pub key: ServiceAccountKey,
}

impl Provisioning {
    pub fn new(devices: Arc<ServiceContext>, iam: Arc<ServiceContext>) -> Self {
        Provisioning {
            devices: Engine::new(devices.clone()),
            policies: Engine::new(devices.clone()),
            requests: Engine::new(devices),
            accounts: Accounts::new(iam),
        }
    }

    fn context(&self) -> &ServiceContext {
        self.devices.context()
    }

    /// The policy `text` names, for an agent presenting the policy's key.
    /// Anyone else — and any name that does not exist — is refused alike.
    pub async fn policy_for_agent(
        &self,
        caller: &Caller,
        field: &str,
        text: &str,
    ) -> Result<(ProvisioningPolicyName, ProvisioningPolicy), ServiceError> {
        let name: ProvisioningPolicyName = text
            .parse()
            .map_err(|e: fleetlog_events::NameError| ServiceError::invalid(field, e.to_string()))?;
        let denied = || {
            ServiceError::PermissionDenied(format!(
                "only the key of {name}'s service account may register devices through it"
            ))
        };
        let Some(account) = caller.account() else {
            return Err(denied());
        };
        let policy = self.policies.current(&name).await?.ok_or_else(denied)?;
        let bound = policy.spec.as_ref().map(|s| s.service_account.as_str());
        if bound != Some(account.to_string().as_str()) {
            return Err(denied());
        }
        Ok((name, policy))
    }

    /// An agent's registration through the policy `text` names: its key
    /// must be the policy's, the policy in `mode`, and the agent must say
    /// what hardware it runs on.
    pub async fn agent_request(
        &self,
        caller: &Caller,
        text: &str,
        mode: Mode,
        status: Option<DeviceStatus>,
    ) -> Result<(ProvisioningPolicyName, ProvisioningPolicy, DeviceStatus), ServiceError> {
        let (name, policy) = self.policy_for_agent(caller, "name", text).await?;
        let actual =
            Mode::try_from(policy.spec.as_ref().map_or(0, |s| s.mode)).unwrap_or(Mode::Unspecified);
        if actual != mode {
            let instead = match actual {
                Mode::ManualApproval => "ask with RequestProvisioningApproval",
                _ => "register with ProvisionDeviceViaPolicy",
            };
            return Err(ServiceError::FailedPrecondition(format!(
                "{name} is {}, not {}: {instead}",
                actual.as_str_name(),
                mode.as_str_name()
            )));
        }
        let status = status.ok_or_else(|| {
            ServiceError::invalid(
                "device_status",
                "is required: what the agent knows of its hardware",
            )
        })?;
        Ok((name, policy, status))
    }

    /// The device `text` names, read from the log, for `who`. Anyone
    /// else — and any name that does not exist — is refused alike.
    pub async fn device_for(
        &self,
        caller: &Caller,
        who: Who,
        text: &str,
    ) -> Result<(DeviceName, Device), ServiceError> {
        let name: DeviceName = text.parse().map_err(|e: fleetlog_events::NameError| {
            ServiceError::invalid("name", e.to_string())
        })?;
        let by_role = match who {
            Who::Agent => Err(ServiceError::PermissionDenied(format!(
                "only {name}'s own agent (its device key) may do this"
            ))),
            Who::Role(access) | Who::AgentOrRole(access) => {
                self.context()
                    .auth
                    .check(caller, Area::Devices, access, name.project(), &name)
            }
        };
        let agent_allowed = matches!(who, Who::Agent | Who::AgentOrRole(_));
        match by_role {
            Ok(()) => {
                let device = self
                    .devices
                    .current(&name)
                    .await?
                    .ok_or_else(|| ServiceError::NotFound(name.to_string()))?;
                Ok((name, device))
            }
            Err(denied) if agent_allowed => {
                let account = caller.account().map(ToString::to_string);
                match self.devices.current(&name).await? {
                    Some(device)
                        if account.is_some() && device.acting_account() == account.as_deref() =>
                    {
                        Ok((name, device))
                    }
                    _ => Err(denied),
                }
            }
            Err(denied) => Err(denied),
        }
    }

    /// Gives `device` a new service account and key; the account it had
    /// before is removed, so its keys stop working. `also` changes the
    /// device in the same event (an agent's reported status).
    pub async fn provision_account(
        &self,
        device: &DeviceName,
        request_id: &str,
        also: impl Fn(&mut Device) + Send + Sync,
    ) -> Result<Provisioned, ServiceError> {
        let (updated, key) = self
            .bind_new_account(&self.devices, device, "dev-", request_id, also)
            .await?;
        self.settle(&updated).await?;
        Ok(Provisioned {
            device: updated,
            key,
        })
    }

    /// Removes the device's service account: its keys are refused at once.
    pub async fn remove_device_account(
        &self,
        device: &DeviceName,
        request_id: &str,
    ) -> Result<Device, ServiceError> {
        let updated = self
            .unbind_account(&self.devices, device, request_id)
            .await?;
        self.settle(&updated).await?;
        Ok(updated)
    }

    /// Gives the policy a new service account and key (replacing the one
    /// it had).
    pub async fn provision_policy_account(
        &self,
        policy: &ProvisioningPolicyName,
        request_id: &str,
    ) -> Result<(ProvisioningPolicy, ServiceAccountKey), ServiceError> {
        self.bind_new_account(&self.policies, policy, "pol-", request_id, |_| {})
            .await
    }

    pub async fn remove_policy_account(
        &self,
        policy: &ProvisioningPolicyName,
        request_id: &str,
    ) -> Result<ProvisioningPolicy, ServiceError> {
        self.unbind_account(&self.policies, policy, request_id)
            .await
    }

    /// Makes a service account (ID `prefix` + random hex) with a key in the
    /// resource's project, names it in the resource (with `also`'s changes,
    /// in one event) and removes the account the resource named before.
    async fn bind_new_account<R: ActsAs>(
        &self,
        engine: &Engine<R>,
        name: &R::Name,
        prefix: &str,
        request_id: &str,
        also: impl Fn(&mut R) + Send + Sync,
    ) -> Result<(R, ServiceAccountKey), ServiceError> {
        let project = name.project().ok_or_else(|| {
            ServiceError::Internal(format!("{name} has no project for its service account"))
        })?;
        let account = ServiceAccountName {
            project: project.clone(),
            service_account: crate::iam::keys::random_id(prefix, 12)?,
        };
        self.accounts
            .ensure_account(&account, format!("acts as {name}"))
            .await?;
        let key = self.accounts.issue_key(&account).await?;
        let (updated, replaced) = self
            .swap_account(
                engine,
                name,
                ACTION_PROVISION_SERVICE_ACCOUNT,
                request_id,
                |r| {
                    also(r);
                    Ok(account.to_string())
                },
            )
            .await?;
        self.retire_account(&replaced, &account.to_string()).await;
        Ok((
            updated,
            ServiceAccountKey {
                service_account: account.to_string(),
                key_name: key.name.to_string(),
                key: key.text,
            },
        ))
    }

    /// Clears the resource's service account and removes the account.
    async fn unbind_account<R: ActsAs>(
        &self,
        engine: &Engine<R>,
        name: &R::Name,
        request_id: &str,
    ) -> Result<R, ServiceError> {
        let (updated, replaced) = self
            .swap_account(
                engine,
                name,
                ACTION_REMOVE_SERVICE_ACCOUNT,
                request_id,
                |r| {
                    if r.bound_account().is_empty() {
                        return Err(ServiceError::FailedPrecondition(format!(
                            "{name} has no service account"
                        )));
                    }
                    Ok(String::new())
                },
            )
            .await?;
        self.retire_account(&replaced, "").await;
        Ok(updated)
    }

    /// Sets the resource's service account to what `next` decides, in one
    /// action event; returns the resource and the account it replaced.
    async fn swap_account<R: ActsAs>(
        &self,
        engine: &Engine<R>,
        name: &R::Name,
        action: &str,
        request_id: &str,
        next: impl Fn(&mut R) -> Result<String, ServiceError> + Send + Sync,
    ) -> Result<(R, String), ServiceError> {
        // `act` may re-run its closure on newer state; what the written
        // event replaced is what its last run saw.
        let replaced = std::sync::Mutex::new(String::new());
        let updated = engine
            .act(&name.to_string(), action, 0, request_id, |r| {
                let account = next(r)?;
                let before = std::mem::replace(r.bound_account_mut(), account);
                if let Ok(mut replaced) = replaced.lock() {
                    *replaced = before;
                }
                Ok(())
            })
            .await?;
        Ok((updated, replaced.into_inner().unwrap_or_default()))
    }

    /// Removes an account a resource no longer names. Its keys are already
    /// refused (authorization follows the resource), so a failure here
    /// only leaves an unused account behind.
    async fn retire_account(&self, previous: &str, current: &str) {
        if previous.is_empty() || previous == current {
            return;
        }
        match previous.parse::<ServiceAccountName>() {
            Ok(old) => {
                if let Err(e) = self.accounts.remove_account(&old).await {
                    tracing::warn!(account = %old, error = %e, "could not remove a replaced service account");
                }
            }
            Err(e) => {
                tracing::warn!(account = previous, error = %e, "a resource named a malformed service account")
            }
        }
    }

    /// The device the hardware in `status` has under `policy`: created from
    /// the template, or the one the same identity made before (its
    /// reported status updated); then a new key for its agent.
    pub async fn register(
        &self,
        policy_name: &ProvisioningPolicyName,
        policy: &ProvisioningPolicy,
        status: &DeviceStatus,
        request_id: &str,
    ) -> Result<Provisioned, ServiceError> {
        let spec = policy.spec.clone().unwrap_or_default();
        let identity = if spec.identity_field_paths.is_empty() {
            // Nothing recognises the hardware again: a new device each time.
            crate::iam::keys::random_id("", IDENTITY_DIGITS)?.to_string()
        } else {
            let values = identity_values(&spec.identity_field_paths, status)?;
            identity_hash(policy_name, &values)
        };
        let id = device_id(&spec.device_name_format, policy_name, &identity).map_err(|m| {
            ServiceError::FailedPrecondition(format!("{policy_name}: device_name_format {m}"))
        })?;
        let name = DeviceName {
            project: policy_name.project.clone(),
            region: policy_name.region.clone(),
            device: id,
        };
        let template = spec.template.unwrap_or_default();
        let metadata = template.metadata.unwrap_or_default();
        let created = self
            .devices
            .create(CreateRequest {
                parent: name.parent().to_string(),
                id: name.id().to_string(),
                resource: Some(Device {
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
                }),
                request_id: String::new(),
            })
            .await;
        match created {
            // A new device, or the one this hardware (or a racing agent with
            // the same identity) made before: either way it gets a new key.
            Ok(_) | Err(ServiceError::AlreadyExists(_)) => {}
            Err(other) => return Err(other),
        }
        let reported = status.device_info.clone();
        self.provision_account(&name, request_id, |d| {
            d.status.get_or_insert_with(Default::default).device_info = reported.clone();
        })
        .await
    }

    /// Files (or finds) the approval request of the hardware in `status`.
    pub async fn request_approval(
        &self,
        policy_name: &ProvisioningPolicyName,
        policy: &ProvisioningPolicy,
        status: &DeviceStatus,
    ) -> Result<ProvisioningApprovalRequest, ServiceError> {
        let spec = policy.spec.clone().unwrap_or_default();
        let identity = if spec.identity_field_paths.is_empty() {
            crate::iam::keys::random_id("", IDENTITY_DIGITS)?.to_string()
        } else {
            identity_hash(
                policy_name,
                &identity_values(&spec.identity_field_paths, status)?,
            )
        };
        let name = ApprovalRequestName {
            project: policy_name.project.clone(),
            region: policy_name.region.clone(),
            provisioning_policy: policy_name.provisioning_policy.clone(),
            provisioning_approval_request: Id::parse(&identity)
                .map_err(|e| ServiceError::Internal(format!("an identity hash: {e}")))?,
        };
        let created = self
            .requests
            .create(CreateRequest {
                parent: name.parent().to_string(),
                id: name.id().to_string(),
                resource: Some(ProvisioningApprovalRequest {
                    status: Some(provisioning_approval_request::Status {
                        device_status: Some(status.clone()),
                        device: String::new(),
                    }),
                    ..Default::default()
                }),
                request_id: String::new(),
            })
            .await;
        match created {
            Ok(request) => Ok(request),
            Err(ServiceError::AlreadyExists(_)) => {
                self.requests.current(&name).await?.ok_or_else(|| {
                    ServiceError::Aborted(format!("{name} was deleted meanwhile; retry"))
                })
            }
            Err(other) => Err(other),
        }
    }

    /// The device of an approved request, for the policy's agent.
    pub async fn collect(
        &self,
        caller: &Caller,
        text: &str,
        request_id: &str,
    ) -> Result<Provisioned, ServiceError> {
        let name: ApprovalRequestName = text.parse().map_err(|e: fleetlog_events::NameError| {
            ServiceError::invalid("name", e.to_string())
        })?;
        let (policy_name, policy) = self
            .policy_for_agent(caller, "name", &name.policy().to_string())
            .await?;
        let request = self
            .requests
            .current(&name)
            .await?
            .ok_or_else(|| ServiceError::NotFound(name.to_string()))?;
        let conclusion = request.spec.as_ref().map_or(0, |s| s.conclusion);
        match Conclusion::try_from(conclusion) {
            Ok(Conclusion::Approved) => {}
            Ok(Conclusion::Revoked) => {
                return Err(ServiceError::FailedPrecondition(format!(
                    "{name} was revoked by an operator"
                )));
            }
            _ => {
                return Err(ServiceError::FailedPrecondition(format!(
                    "{name} is waiting for an operator to approve it (spec.conclusion = APPROVED)"
                )));
            }
        }
        let status = request
            .status
            .as_ref()
            .and_then(|s| s.device_status.clone())
            .unwrap_or_default();
        let provisioned = self
            .register(&policy_name, &policy, &status, request_id)
            .await?;
        let device = provisioned.device.name.clone();
        let account = provisioned.key.service_account.clone();
        self.requests
            .act(&name.to_string(), ACTION_PROVISIONED, 0, "", |r| {
                r.spec.get_or_insert_with(Default::default).service_account = account.clone();
                r.status.get_or_insert_with(Default::default).device = device.clone();
                Ok(())
            })
            .await?;
        Ok(provisioned)
    }

    /// Waits until the active projection shows `device` (so a query with
    /// the new key finds it at once).
    async fn settle(&self, device: &Device) -> Result<(), ServiceError> {
        let revision = device.metadata.as_ref().map_or(0, |m| m.revision);
        self.devices
            .projection()
            .wait_for(
                fleetlog_events::Revision::from_wire(revision),
                self.context().read_wait,
            )
            .await?;
        Ok(())
    }
}

/// The gRPC `fleetlog.devices.v1.ProvisioningPolicyService`.
pub struct ProvisioningPolicyApi {
    engine: Engine<ProvisioningPolicy>,
    flow: Provisioning,
}

impl ProvisioningPolicyApi {
    pub fn new(flow: Provisioning) -> Self {
        ProvisioningPolicyApi {
            engine: flow.policies.clone(),
            flow,
        }
    }
}

crate::standard_service! {
    impl ProvisioningPolicyService for ProvisioningPolicyApi {
        resource: ProvisioningPolicy,
        field: provisioning_policy,
        plural: provisioning_policies,
        id_field: provisioning_policy_id,
        change: ProvisioningPolicyChange,
        get: get_provisioning_policy(GetProvisioningPolicyRequest),
        batch_get: batch_get_provisioning_policies(BatchGetProvisioningPoliciesRequest) -> BatchGetProvisioningPoliciesResponse,
        list: list_provisioning_policies(ListProvisioningPoliciesRequest) -> ListProvisioningPoliciesResponse,
        watch_one: watch_provisioning_policy(WatchProvisioningPolicyRequest) -> WatchProvisioningPolicyResponse, stream WatchProvisioningPolicyStream,
        watch: watch_provisioning_policies(WatchProvisioningPoliciesRequest) -> WatchProvisioningPoliciesResponse, stream WatchProvisioningPoliciesStream,
        create: create_provisioning_policy(CreateProvisioningPolicyRequest),
        update: update_provisioning_policy(UpdateProvisioningPolicyRequest),
        delete: delete_provisioning_policy(DeleteProvisioningPolicyRequest),
    }

    async fn provision_service_account_to_provisioning_policy(
        &self,
        request: tonic::Request<ProvisionServiceAccountToProvisioningPolicyRequest>,
    ) -> Result<tonic::Response<ProvisionServiceAccountToProvisioningPolicyResponse>, tonic::Status> {
        let ctx = self.engine.context();
        let caller = ctx.caller(&request)?;
        let r = request.into_inner();
        let name = ctx.authorize_name::<ProvisioningPolicy>(&caller, Access::Write, "name", &r.name)?;
        let (policy, key) = self.flow.provision_policy_account(&name, &r.request_id)
            .await?;
        Ok(tonic::Response::new(ProvisionServiceAccountToProvisioningPolicyResponse {
            provisioning_policy: Some(policy),
            service_account_key: Some(key),
        }))
    }

    async fn remove_service_account_from_provisioning_policy(
        &self,
        request: tonic::Request<RemoveServiceAccountFromProvisioningPolicyRequest>,
    ) -> Result<tonic::Response<ProvisioningPolicy>, tonic::Status> {
        let ctx = self.engine.context();
        let caller = ctx.caller(&request)?;
        let r = request.into_inner();
        let name = ctx.authorize_name::<ProvisioningPolicy>(&caller, Access::Write, "name", &r.name)?;
        let policy = self.flow.remove_policy_account(&name, &r.request_id)
            .await?;
        Ok(tonic::Response::new(policy))
    }

    async fn provision_device_via_policy(
        &self,
        request: tonic::Request<ProvisionDeviceViaPolicyRequest>,
    ) -> Result<tonic::Response<ProvisionedDevice>, tonic::Status> {
        let caller = self.engine.context().caller(&request)?;
        let r = request.into_inner();
        let (name, policy, status) = self
            .flow
            .agent_request(&caller, &r.name, Mode::Unattended, r.device_status)
            .await?;
        let done = self.flow.register(&name, &policy, &status, &r.request_id)
            .await?;
        Ok(tonic::Response::new(ProvisionedDevice {
            device: Some(done.device),
            service_account_key: Some(done.key),
        }))
    }

    async fn request_provisioning_approval(
        &self,
        request: tonic::Request<RequestProvisioningApprovalRequest>,
    ) -> Result<tonic::Response<ProvisioningApprovalRequest>, tonic::Status> {
        let caller = self.engine.context().caller(&request)?;
        let r = request.into_inner();
        let (name, policy, status) = self
            .flow
            .agent_request(&caller, &r.name, Mode::ManualApproval, r.device_status)
            .await?;
        let filed = self.flow.request_approval(&name, &policy, &status)
            .await?;
        Ok(tonic::Response::new(filed))
    }
}

/// The gRPC `fleetlog.devices.v1.ProvisioningApprovalRequestService`.
pub struct ProvisioningApprovalRequestApi {
    engine: Engine<ProvisioningApprovalRequest>,
    flow: Provisioning,
}

impl ProvisioningApprovalRequestApi {
    pub fn new(flow: Provisioning) -> Self {
        ProvisioningApprovalRequestApi {
            engine: flow.requests.clone(),
            flow,
        }
    }
}

crate::standard_service! {
    impl ProvisioningApprovalRequestService for ProvisioningApprovalRequestApi {
        resource: ProvisioningApprovalRequest,
        field: provisioning_approval_request,
        plural: provisioning_approval_requests,
        id_field: provisioning_approval_request_id,
        change: ProvisioningApprovalRequestChange,
        get: get_provisioning_approval_request(GetProvisioningApprovalRequestRequest),
        batch_get: batch_get_provisioning_approval_requests(BatchGetProvisioningApprovalRequestsRequest) -> BatchGetProvisioningApprovalRequestsResponse,
        list: list_provisioning_approval_requests(ListProvisioningApprovalRequestsRequest) -> ListProvisioningApprovalRequestsResponse,
        watch_one: watch_provisioning_approval_request(WatchProvisioningApprovalRequestRequest) -> WatchProvisioningApprovalRequestResponse, stream WatchProvisioningApprovalRequestStream,
        watch: watch_provisioning_approval_requests(WatchProvisioningApprovalRequestsRequest) -> WatchProvisioningApprovalRequestsResponse, stream WatchProvisioningApprovalRequestsStream,
        create: create_provisioning_approval_request(CreateProvisioningApprovalRequestRequest),
        update: update_provisioning_approval_request(UpdateProvisioningApprovalRequestRequest),
        delete: delete_provisioning_approval_request(DeleteProvisioningApprovalRequestRequest),
    }

    async fn provision_device_for_approved_request(
        &self,
        request: tonic::Request<ProvisionDeviceForApprovedRequestRequest>,
    ) -> Result<tonic::Response<ProvisionedDevice>, tonic::Status> {
        let caller = self.engine.context().caller(&request)?;
        let r = request.into_inner();
        let done = self.flow.collect(&caller, &r.name, &r.request_id)
            .await?;
        Ok(tonic::Response::new(ProvisionedDevice {
            device: Some(done.device),
            service_account_key: Some(done.key),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            matches!(err, ServiceError::InvalidArgument { ref field, .. } if field == "device_status.device_info.hardware_information.system.serial_number")
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
}
