//! Who is calling, and what they may do: authentication of the
//! `authorization: Bearer <key>` metadata against the IAM projection, and
//! the per-project role check every call passes before it touches the log
//! or a projection.
//!
//! Keys are `fl1:{key name}:{secret}`: the key name makes the lookup one
//! point read, and only the SHA-256 of the whole key is stored (in the
//! `ServiceAccountKeyRecord` the IAM stream holds). The configured bootstrap
//! admin key is any string; it is compared by hash, in memory.

use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;
use fleetlog_events::{Id, resource_name};
use fleetlog_projections::Projection;
use fleetlog_proto::iam::v1::{RoleBinding, ServiceAccount, ServiceAccountKeyRecord};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::ServiceError;

resource_name! {
    /// `projects/{project}/serviceAccounts/{service_account}`
    pub struct ServiceAccountName {
        parent ServiceAccountParent { projects: project }
        serviceAccounts: service_account
    }
}

resource_name! {
    /// `projects/{project}/serviceAccounts/{service_account}/keys/{key}`
    pub struct ServiceAccountKeyName {
        parent ServiceAccountKeyParent { projects: project, serviceAccounts: service_account }
        keys: key
    }
}

impl ServiceAccountKeyName {
    pub fn service_account(&self) -> ServiceAccountName {
        ServiceAccountName {
            project: self.project.clone(),
            service_account: self.service_account.clone(),
        }
    }
}

resource_name! {
    /// `projects/{project}/roleBindings/{role_binding}`
    pub struct RoleBindingName {
        parent RoleBindingParent { projects: project }
        roleBindings: role_binding
    }
}

/// The project of fleetd's own identities.
pub const SYSTEM_PROJECT: &str = "fleetlog-system";
/// The service account of the bootstrap admin key fleetd makes on first start.
pub const BOOTSTRAP_ACCOUNT: &str = "bootstrap-admin";
const KEY_PREFIX: &str = "fl1";

/// A role a RoleBinding grants in its project.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Reads everything in the project.
    Viewer,
    /// Reads the project; writes devices, policies and approval requests.
    DeviceOperator,
    /// Everything in the project.
    Admin,
}

impl Role {
    pub const NAMES: &'static [&'static str] = &["admin", "device-operator", "viewer"];

    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "admin" => Some(Role::Admin),
            "device-operator" => Some(Role::DeviceOperator),
            "viewer" => Some(Role::Viewer),
            _ => None,
        }
    }
}

/// Which part of the system a resource belongs to; writes need a different
/// role in each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Area {
    /// Devices, provisioning policies, approval requests: device-operator.
    Devices,
    /// Service accounts and role bindings: admin.
    Iam,
    /// Regions, services, deployments (no project): the bootstrap admin.
    Meta,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// fleetd itself (bootstrap, the upgrade controller).
    System,
    /// The bootstrap admin: everything everywhere.
    Admin,
    /// A service account's key.
    Account(ServiceAccountName),
}

impl Caller {
    /// The service account, when the caller is one.
    pub fn account(&self) -> Option<&ServiceAccountName> {
        match self {
            Caller::Account(name) => Some(name),
            _ => None,
        }
    }

    /// What events record as their actor.
    pub fn actor(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Caller::System => f.write_str("system:fleetd"),
            Caller::Admin => f.write_str("system:bootstrap-admin"),
            Caller::Account(name) => write!(f, "{name}"),
        }
    }
}

tokio::task_local! {
    /// The caller of the command being executed, for the events' `actor`.
    pub static ACTOR: String;
}

/// A freshly made key: its text is returned once; the record keeps its hash.
pub struct IssuedKey {
    pub name: ServiceAccountKeyName,
    pub text: String,
    pub sha256: String,
}

impl IssuedKey {
    /// A new 256-bit secret for the key `name`.
    pub fn new(name: ServiceAccountKeyName) -> Self {
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut secret);
        let text = format!("{KEY_PREFIX}:{name}:{}", hex(&secret));
        let sha256 = hex(&Sha256::digest(text.as_bytes()));
        IssuedKey { name, text, sha256 }
    }
}

/// A random ID of `len` hex characters (at most 32), for keys and the
/// service accounts fleetd makes.
pub fn random_id(prefix: &str, len: usize) -> Result<Id, ServiceError> {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    let mut text = hex(&bytes);
    text.truncate(len);
    Id::parse(&format!("{prefix}{text}"))
        .map_err(|e| ServiceError::Internal(format!("a generated ID: {e}")))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Authenticates callers and checks their rights, reading the IAM projection.
pub struct Authorizer {
    iam: Arc<ArcSwap<Projection>>,
    /// SHA-256 of the configured bootstrap admin key.
    bootstrap_sha256: Option<[u8; 32]>,
}

impl Authorizer {
    pub fn new(iam: Arc<ArcSwap<Projection>>, bootstrap_key: Option<&str>) -> Self {
        Authorizer {
            iam,
            bootstrap_sha256: bootstrap_key.map(|key| Sha256::digest(key.as_bytes()).into()),
        }
    }

    /// The caller a request's `authorization` metadata names.
    pub fn authenticate(
        &self,
        metadata: &tonic::metadata::MetadataMap,
    ) -> Result<Caller, ServiceError> {
        let Some(value) = metadata.get("authorization") else {
            return Err(ServiceError::Unauthenticated(
                "no credentials: send `authorization: Bearer <key>` metadata".into(),
            ));
        };
        let key = value
            .to_str()
            .ok()
            .and_then(|v| {
                let (scheme, key) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| key.trim())
            })
            .filter(|key| !key.is_empty())
            .ok_or_else(|| {
                ServiceError::Unauthenticated(
                    "malformed authorization metadata: expected `Bearer <key>`".into(),
                )
            })?;
        self.authenticate_key(key)
    }

    pub fn authenticate_key(&self, key: &str) -> Result<Caller, ServiceError> {
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        if let Some(bootstrap) = &self.bootstrap_sha256
            && bool::from(bootstrap.ct_eq(&digest))
        {
            return Ok(Caller::Admin);
        }
        let unknown = || ServiceError::Unauthenticated("unknown or revoked key".into());
        let mut parts = key.splitn(3, ':');
        let (Some(KEY_PREFIX), Some(name), Some(_secret)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(unknown());
        };
        let name: ServiceAccountKeyName = name.parse().map_err(|_| unknown())?;
        let iam = self.iam.load();
        let record = crate::engine::stored::<ServiceAccountKeyRecord>(&iam, &name.to_string())?
            .ok_or_else(unknown)?;
        let presented = hex(&digest);
        if !bool::from(presented.as_bytes().ct_eq(record.secret_sha256.as_bytes())) {
            return Err(unknown());
        }
        let account = name.service_account();
        if crate::engine::stored::<ServiceAccount>(&iam, &account.to_string())?.is_none() {
            return Err(unknown());
        }
        if account.project.as_str() == SYSTEM_PROJECT
            && account.service_account.as_str() == BOOTSTRAP_ACCOUNT
        {
            return Ok(Caller::Admin);
        }
        Ok(Caller::Account(account))
    }

    /// The strongest role `account` holds in `project`.
    pub fn role(
        &self,
        account: &ServiceAccountName,
        project: &Id,
    ) -> Result<Option<Role>, ServiceError> {
        let iam = self.iam.load();
        let member = account.to_string();
        let bindings = crate::engine::stored_under::<RoleBinding>(
            &iam,
            &RoleBindingParent {
                project: project.clone(),
            },
        )?;
        Ok(bindings
            .iter()
            .filter(|b| b.member == member)
            .filter_map(|b| Role::parse(&b.role))
            .max())
    }

    /// Whether `caller` may `access` a resource of `area` in `project`
    /// (None: a resource outside projects). `target` names what was asked
    /// for, for the message.
    pub fn check(
        &self,
        caller: &Caller,
        area: Area,
        access: Access,
        project: Option<&Id>,
        target: &dyn fmt::Display,
    ) -> Result<(), ServiceError> {
        let Caller::Account(account) = caller else {
            return Ok(());
        };
        let role = match (area, project) {
            // Meta has no project: accounts read it with any role in their own.
            (Area::Meta, _) | (_, None) => match access {
                Access::Read => self.role(account, &account.project)?,
                Access::Write => None,
            },
            (_, Some(project)) => self.role(account, project)?,
        };
        let allowed = match (role, access, area) {
            (None, _, _) => false,
            (Some(_), Access::Read, _) => true,
            (Some(_), Access::Write, Area::Meta) => false,
            (Some(role), Access::Write, Area::Devices) => role >= Role::DeviceOperator,
            (Some(role), Access::Write, Area::Iam) => role >= Role::Admin,
        };
        if allowed {
            return Ok(());
        }
        let verb = match access {
            Access::Read => "read",
            Access::Write => "change",
        };
        Err(ServiceError::PermissionDenied(format!(
            "{account} may not {verb} {target}{}",
            match (area, role) {
                (Area::Meta, _) =>
                    " (only the bootstrap admin changes regions, services and deployments)"
                        .to_owned(),
                (_, None) => format!(
                    " (no role binding in project {})",
                    project.map_or("-", |p| p.as_str())
                ),
                (Area::Devices, Some(_)) => " (needs the device-operator or admin role)".to_owned(),
                (Area::Iam, Some(_)) => " (needs the admin role)".to_owned(),
            }
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_carry_their_name_and_a_256_bit_secret() {
        let name: ServiceAccountKeyName = "projects/p/serviceAccounts/sa/keys/k1"
            .parse()
            .expect("valid");
        let key = IssuedKey::new(name.clone());
        let (prefix, rest) = key.text.split_once(':').expect("prefix");
        assert_eq!(prefix, KEY_PREFIX);
        let (named, secret) = rest.rsplit_once(':').expect("secret");
        assert_eq!(named, name.to_string());
        assert_eq!(secret.len(), 64);
        assert_eq!(key.sha256, hex(&Sha256::digest(key.text.as_bytes())));
        assert!(!key.sha256.contains(secret));
        assert_ne!(IssuedKey::new(name).text, key.text);
    }

    #[test]
    fn roles_order_by_power() {
        assert!(Role::Admin > Role::DeviceOperator);
        assert!(Role::DeviceOperator > Role::Viewer);
        for name in Role::NAMES {
            assert!(Role::parse(name).is_some());
        }
        assert_eq!(Role::parse("owner"), None);
    }
}
