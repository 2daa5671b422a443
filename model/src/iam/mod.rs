//! IAM's resources (minimal): service accounts, their keys (stored as
//! hashes only) and role bindings per project, and the roles a binding
//! grants. Authentication and the authorizer are the server's
//! (`fleetlog_services::iam`).

pub mod names;

use fleetlog_proto::iam::v1::{RoleBinding, ServiceAccount, ServiceAccountKeyRecord};

use crate::convert::VersionConverter;
use crate::registry::Registry;
use crate::{Area, FieldViolation, Resource};
use names::{RoleBindingName, ServiceAccountKeyName, ServiceAccountName};

/// The service token in stream names and subjects.
pub const SERVICE: &str = "iam";
pub const V1: &str = "v1";
pub const VERSIONS: &[&str] = &[V1];

/// Every IAM resource type.
pub fn resources() -> Registry {
    Registry::new()
        .stored::<ServiceAccount>()
        // A key's hash: made and revoked by ServiceAccount actions.
        .internal::<ServiceAccountKeyRecord>()
        .stored::<RoleBinding>()
}

/// What the IAM projection holds.
pub fn converter() -> VersionConverter {
    resources().converter(V1)
}

const MAX_DISPLAY_NAME: usize = 256;

impl Resource for ServiceAccount {
    type Name = ServiceAccountName;
    const FIELD: &'static str = "service_account";
    const ID_FIELD: &'static str = "service_account_id";
    const API_VERSION: &'static str = V1;
    const AREA: Area = Area::Iam;

    crate::resource_fields!();

    fn validate(&self) -> Result<(), FieldViolation> {
        if self.display_name.chars().count() > MAX_DISPLAY_NAME {
            return Err(FieldViolation::new(
                "display_name",
                format!("must be at most {MAX_DISPLAY_NAME} characters"),
            ));
        }
        Ok(())
    }
}

impl Resource for ServiceAccountKeyRecord {
    type Name = ServiceAccountKeyName;
    const FIELD: &'static str = "key";
    const ID_FIELD: &'static str = "key_id";
    const API_VERSION: &'static str = V1;
    const AREA: Area = Area::Iam;

    crate::resource_fields!();

    fn validate(&self) -> Result<(), FieldViolation> {
        let is_sha256 = self.secret_sha256.len() == 64
            && self
                .secret_sha256
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !is_sha256 {
            return Err(FieldViolation::new(
                "secret_sha256",
                "must be a lowercase hex SHA-256",
            ));
        }
        Ok(())
    }
}

impl Resource for RoleBinding {
    type Name = RoleBindingName;
    const FIELD: &'static str = "role_binding";
    const ID_FIELD: &'static str = "role_binding_id";
    const API_VERSION: &'static str = V1;
    const AREA: Area = Area::Iam;

    crate::resource_fields!();

    fn validate(&self) -> Result<(), FieldViolation> {
        if let Err(e) = self.member.parse::<ServiceAccountName>() {
            return Err(FieldViolation::new(
                "member",
                format!("must be a service account name: {e}"),
            ));
        }
        if Role::parse(&self.role).is_none() {
            return Err(FieldViolation::new(
                "role",
                format!("must be one of {}", Role::NAMES.join(", ")),
            ));
        }
        Ok(())
    }
}

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
