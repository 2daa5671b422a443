//! IAM's [`Authorizer`]: authenticates the `authorization: Bearer <key>`
//! header against the IAM projection and checks the caller's role in the
//! project of what it asks for.
//!
//! The configured bootstrap admin key is any string, compared by hash in
//! memory; account keys are looked up by the key name they carry and
//! compared by hash in constant time. The rule itself, which role may do
//! what where, is the pure [`decide`].

use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;
use fleetlog_events::Id;
use fleetlog_projections::Projection;
use fleetlog_proto::iam::v1::{RoleBinding, ServiceAccount, ServiceAccountKeyRecord};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::codegen::http::HeaderValue;

use super::keys::{hex, key_name_of};
use crate::engine::access::{Access, Authorizer, Caller};
use crate::error::ServiceError;
use fleetlog_model::Area;
use fleetlog_model::iam::Role;
use fleetlog_model::iam::names::{
    BOOTSTRAP_ACCOUNT, RoleBindingParent, SYSTEM_PROJECT, ServiceAccountName,
};

/// Why an account may not do something.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Denial {
    /// No role binding in the project asked about.
    NoRole,
    /// Meta is written by the bootstrap admin only.
    MetaIsAdminOnly,
    /// The role it has is too weak for this area.
    TooWeak,
}

/// Whether an account holding `role` (its strongest in the project that
/// matters) may `access` a resource of `area`.
pub fn decide(role: Option<Role>, area: Area, access: Access) -> Result<(), Denial> {
    match (role, access, area) {
        (None, _, _) => Err(Denial::NoRole),
        (Some(_), Access::Read, _) => Ok(()),
        (Some(_), Access::Write, Area::Meta) => Err(Denial::MetaIsAdminOnly),
        (Some(role), Access::Write, Area::Devices) if role >= Role::DeviceOperator => Ok(()),
        (Some(role), Access::Write, Area::Iam) if role >= Role::Admin => Ok(()),
        (Some(_), Access::Write, _) => Err(Denial::TooWeak),
    }
}

/// Authenticates callers and checks their rights, reading the IAM projection.
pub struct IamAuthorizer {
    iam: Arc<ArcSwap<Projection>>,
    /// SHA-256 of the configured bootstrap admin key.
    bootstrap_sha256: Option<[u8; 32]>,
}

impl IamAuthorizer {
    pub fn new(iam: Arc<ArcSwap<Projection>>, bootstrap_key: Option<&str>) -> Self {
        IamAuthorizer {
            iam,
            bootstrap_sha256: bootstrap_key.map(|key| Sha256::digest(key.as_bytes()).into()),
        }
    }

    pub fn authenticate_key(&self, key: &str) -> Result<Caller, ServiceError> {
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        if let Some(bootstrap) = &self.bootstrap_sha256
            && bool::from(bootstrap.ct_eq(&digest))
        {
            return Ok(Caller::Admin);
        }
        let unknown = || ServiceError::Unauthenticated("unknown or revoked key".into());
        let name = key_name_of(key).ok_or_else(unknown)?;
        let iam = self.iam.load();
        let record =
            fleetlog_model::stored::stored::<ServiceAccountKeyRecord>(&iam, &name.to_string())?
                .ok_or_else(unknown)?;
        let presented = hex(&digest);
        if !bool::from(presented.as_bytes().ct_eq(record.secret_sha256.as_bytes())) {
            return Err(unknown());
        }
        let account = name.service_account();
        if fleetlog_model::stored::stored::<ServiceAccount>(&iam, &account.to_string())?.is_none() {
            return Err(unknown());
        }
        if account.project.as_str() == SYSTEM_PROJECT
            && account.service_account.as_str() == BOOTSTRAP_ACCOUNT
        {
            return Ok(Caller::Admin);
        }
        Ok(Caller::Account(account.to_string()))
    }

    /// The strongest role `account` holds in `project`.
    pub fn role(&self, account: &str, project: &Id) -> Result<Option<Role>, ServiceError> {
        let iam = self.iam.load();
        let bindings = fleetlog_model::stored::stored_under::<RoleBinding>(
            &iam,
            &RoleBindingParent {
                project: project.clone(),
            },
        )?;
        Ok(bindings
            .iter()
            .filter(|b| b.member == account)
            .filter_map(|b| Role::parse(&b.role))
            .max())
    }
}

impl Authorizer for IamAuthorizer {
    fn authenticate(&self, authorization: Option<&HeaderValue>) -> Result<Caller, ServiceError> {
        let Some(value) = authorization else {
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

    fn check(
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
        // Meta has no project: accounts read it with any role in their own.
        let own_project = || {
            account
                .parse::<ServiceAccountName>()
                .map(|name| name.project)
                .ok()
        };
        let role = match (area, project) {
            (Area::Meta, _) | (_, None) => match own_project() {
                Some(own) => self.role(account, &own)?,
                None => None,
            },
            (_, Some(project)) => self.role(account, project)?,
        };
        let Err(denial) = decide(role, area, access) else {
            return Ok(());
        };
        let verb = match access {
            Access::Read => "read",
            Access::Write => "change",
        };
        let why = match denial {
            Denial::MetaIsAdminOnly => {
                " (only the bootstrap admin changes regions, services and deployments)".to_owned()
            }
            Denial::NoRole => format!(
                " (no role binding in project {})",
                project.map_or("-", |p| p.as_str())
            ),
            Denial::TooWeak if area == Area::Devices => {
                " (needs the device-operator or admin role)".to_owned()
            }
            Denial::TooWeak => " (needs the admin role)".to_owned(),
        };
        Err(ServiceError::PermissionDenied(format!(
            "{account} may not {verb} {target}{why}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_order_by_power() {
        assert!(Role::Admin > Role::DeviceOperator);
        assert!(Role::DeviceOperator > Role::Viewer);
        for name in Role::NAMES {
            assert!(Role::parse(name).is_some());
        }
        assert_eq!(Role::parse("owner"), None);
    }

    #[test]
    fn every_role_reads_and_writes_only_its_areas() {
        use Access::{Read, Write};
        use Area::{Devices, Iam, Meta};
        let (viewer, operator, admin) = (
            Some(Role::Viewer),
            Some(Role::DeviceOperator),
            Some(Role::Admin),
        );
        let table = [
            // role, area, access, allowed
            (viewer, Devices, Read, Ok(())),
            (viewer, Devices, Write, Err(Denial::TooWeak)),
            (viewer, Iam, Read, Ok(())),
            (viewer, Meta, Read, Ok(())),
            (operator, Devices, Write, Ok(())),
            (operator, Iam, Write, Err(Denial::TooWeak)),
            (admin, Devices, Write, Ok(())),
            (admin, Iam, Write, Ok(())),
            (admin, Meta, Write, Err(Denial::MetaIsAdminOnly)),
            (None, Devices, Read, Err(Denial::NoRole)),
            (None, Meta, Read, Err(Denial::NoRole)),
        ];
        for (role, area, access, expected) in table {
            assert_eq!(
                decide(role, area, access),
                expected,
                "{role:?} {area:?} {access:?}"
            );
        }
    }

    #[test]
    fn the_header_must_be_a_bearer_key() {
        let dir = tempfile::tempdir().expect("temp dir");
        let projection = Projection::open(dir.path(), "v1").expect("opens");
        let auth = IamAuthorizer::new(Arc::new(ArcSwap::new(projection)), Some("admin-key"));
        let header = |text: &str| HeaderValue::from_str(text).expect("header");
        assert!(matches!(
            auth.authenticate(Some(&header("Bearer admin-key"))),
            Ok(Caller::Admin)
        ));
        assert!(
            matches!(
                auth.authenticate(Some(&header("bearer  admin-key "))),
                Ok(Caller::Admin)
            ),
            "the scheme in any case, the key trimmed"
        );
        for refused in [
            None,
            Some(header("admin-key")),
            Some(header("Basic abc")),
            Some(header("Bearer ")),
            Some(header("Bearer fl1:projects/p/serviceAccounts/a/keys/k:00")),
        ] {
            assert!(
                matches!(
                    auth.authenticate(refused.as_ref()),
                    Err(ServiceError::Unauthenticated(_))
                ),
                "{refused:?}"
            );
        }
    }
}
