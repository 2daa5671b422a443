//! The flow an agent goes through to get its device and key (reference:
//! "Device Auto-registration Settings"): registering through a policy,
//! unattended or by an approval request an operator approves, and the
//! service accounts that act as devices and policies, made and removed
//! through IAM. Both API versions call these on v1 types with the caller
//! they authenticated.

use std::sync::Arc;

use fleetlog_events::ResourceName;
use fleetlog_proto::devices::v1::device::Status as DeviceStatus;
use fleetlog_proto::devices::v1::provisioning_policy::spec::Mode;
use fleetlog_proto::devices::v1::{
    Device, ProvisioningApprovalRequest, ProvisioningPolicy, ServiceAccountKey,
    provisioning_approval_request, provisioning_policy,
};

use crate::engine::access::{Access, Caller};
use crate::engine::{CreateRequest, Engine, ServiceContext};
use crate::error::ServiceError;
use crate::iam::Accounts;
use fleetlog_model::Area;
use fleetlog_model::Resource;
use fleetlog_model::devices::acts_as::ActsAs;
use fleetlog_model::devices::names::{ApprovalRequestName, DeviceName, ProvisioningPolicyName};
use fleetlog_model::devices::provisioning::{
    IDENTITY_DIGITS, approval_request_name, approved_status, check_mode, device_name, identity_of,
    registered_device,
};
use fleetlog_model::iam::names::ServiceAccountName;

const ACTION_PROVISION_SERVICE_ACCOUNT: &str = "ProvisionServiceAccount";
const ACTION_REMOVE_SERVICE_ACCOUNT: &str = "RemoveServiceAccount";
const ACTION_PROVISIONED: &str = "ProvisionDevice";

/// The agent flows, shared by the three services that expose them.
#[derive(Clone)]
pub struct Provisioning {
    pub devices: Engine<Device>,
    pub policies: Engine<ProvisioningPolicy>,
    pub requests: Engine<ProvisioningApprovalRequest>,
    pub accounts: Accounts,
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
    async fn policy_for_agent(
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
    async fn agent_request(
        &self,
        caller: &Caller,
        text: &str,
        mode: Mode,
        status: Option<DeviceStatus>,
    ) -> Result<(ProvisioningPolicyName, ProvisioningPolicy, DeviceStatus), ServiceError> {
        let (name, policy) = self.policy_for_agent(caller, "name", text).await?;
        check_mode(&name, &policy, mode)?;
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
    /// device in the same event (an agent's reported status). No wait for
    /// the projection here: IAM settles the key, and every query waits for
    /// the writes its server acknowledged, so the new key finds the device
    /// from the answer on.
    pub async fn provision_account(
        &self,
        device: &DeviceName,
        request_id: &str,
        also: impl Fn(&mut Device) + Send + Sync,
    ) -> Result<Provisioned, ServiceError> {
        let (updated, key) = self
            .bind_new_account(&self.devices, device, "dev-", request_id, also)
            .await?;
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
        self.unbind_account(&self.devices, device, request_id).await
    }

    /// Gives the policy `text` names a new service account and key
    /// (replacing the one it had), for a caller with write access to it.
    pub async fn provision_policy_account(
        &self,
        caller: &Caller,
        text: &str,
        request_id: &str,
    ) -> Result<(ProvisioningPolicy, ServiceAccountKey), ServiceError> {
        let policy = self.policy_for_writer(caller, text)?;
        self.bind_new_account(&self.policies, &policy, "pol-", request_id, |_| {})
            .await
    }

    /// Removes the service account of the policy `text` names, for a
    /// caller with write access to it: its agents' keys are refused at once.
    pub async fn remove_policy_account(
        &self,
        caller: &Caller,
        text: &str,
        request_id: &str,
    ) -> Result<ProvisioningPolicy, ServiceError> {
        let policy = self.policy_for_writer(caller, text)?;
        self.unbind_account(&self.policies, &policy, request_id)
            .await
    }

    fn policy_for_writer(
        &self,
        caller: &Caller,
        text: &str,
    ) -> Result<ProvisioningPolicyName, ServiceError> {
        self.context()
            .authorize_name::<ProvisioningPolicy>(caller, Access::Write, "name", text)
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

    /// An agent's unattended registration through the policy `text` names.
    pub async fn provision_via_policy(
        &self,
        caller: &Caller,
        text: &str,
        status: Option<DeviceStatus>,
        request_id: &str,
    ) -> Result<Provisioned, ServiceError> {
        let (name, policy, status) = self
            .agent_request(caller, text, Mode::Unattended, status)
            .await?;
        self.register(&name, &policy, &status, request_id).await
    }

    /// An agent asking, through the policy `text` names, for an operator to
    /// approve its hardware: files (or finds) the approval request.
    pub async fn request_approval(
        &self,
        caller: &Caller,
        text: &str,
        status: Option<DeviceStatus>,
    ) -> Result<ProvisioningApprovalRequest, ServiceError> {
        let (name, policy, status) = self
            .agent_request(caller, text, Mode::ManualApproval, status)
            .await?;
        self.file_request(&name, &policy, &status).await
    }

    /// The device the hardware in `status` has under `policy`: created from
    /// the template, or the one the same identity made before (its
    /// reported status updated); then a new key for its agent.
    async fn register(
        &self,
        policy_name: &ProvisioningPolicyName,
        policy: &ProvisioningPolicy,
        status: &DeviceStatus,
        request_id: &str,
    ) -> Result<Provisioned, ServiceError> {
        let spec = policy.spec.clone().unwrap_or_default();
        let identity = identity(policy_name, &spec, status)?;
        let name = device_name(policy_name, &spec.device_name_format, &identity)?;
        let created = self
            .devices
            .create(CreateRequest {
                parent: name.parent().to_string(),
                id: name.id().to_string(),
                resource: Some(registered_device(&name, spec.template, status)),
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
    async fn file_request(
        &self,
        policy_name: &ProvisioningPolicyName,
        policy: &ProvisioningPolicy,
        status: &DeviceStatus,
    ) -> Result<ProvisioningApprovalRequest, ServiceError> {
        let spec = policy.spec.clone().unwrap_or_default();
        let name = approval_request_name(policy_name, &identity(policy_name, &spec, status)?)?;
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
        let status = approved_status(&name, &request)?;
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
}

/// The identity of the hardware in `status` under the policy.
fn identity(
    policy: &ProvisioningPolicyName,
    spec: &provisioning_policy::Spec,
    status: &DeviceStatus,
) -> Result<String, ServiceError> {
    match identity_of(policy, spec, status)? {
        Some(identity) => Ok(identity),
        // Nothing recognises the hardware again: a new device each time.
        None => Ok(crate::iam::keys::random_id("", IDENTITY_DIGITS)?.to_string()),
    }
}
