//! IAM (minimal): service accounts, their keys (stored as hashes only) and
//! role bindings per project, declared in `fleetlog_model::iam`.
//! Event-sourced on its own stream like every service; [`authorizer::IamAuthorizer`] reads its projection to
//! authenticate callers and is the engine's `Authorizer`.
//!
//! Writes here settle before they answer (the projection has applied them),
//! so a key works, a binding grants and a revocation refuses from the moment
//! the call returns.

use std::sync::Arc;

use fleetlog_events::ResourceName;
use fleetlog_proto::iam::v1::role_binding_service_server::RoleBindingService;
use fleetlog_proto::iam::v1::service_account_service_server::ServiceAccountService;
use fleetlog_proto::iam::v1::*;

pub mod authorizer;
pub mod keys;

use fleetlog_model::iam::names::{
    ServiceAccountKeyName, ServiceAccountKeyParent, ServiceAccountName,
};
use keys::IssuedKey;

use crate::engine::access::Access;
use crate::engine::{CreateRequest, DeleteRequest, Engine, ServiceContext};
use crate::error::ServiceError;

pub use fleetlog_model::iam::{SERVICE, V1, VERSIONS, converter, resources};

/// Service accounts and keys as other services make them for themselves
/// (a device's agent, a provisioning policy): fleetd acts, not the caller.
#[derive(Clone)]
pub struct Accounts {
    accounts: Engine<ServiceAccount>,
    keys: Engine<ServiceAccountKeyRecord>,
}

impl Accounts {
    pub fn new(iam: Arc<ServiceContext>) -> Self {
        Accounts {
            accounts: Engine::new(iam.clone()),
            keys: Engine::new(iam),
        }
    }

    /// Creates the service account `name` (or finds it, on a retry).
    pub async fn ensure_account(
        &self,
        name: &ServiceAccountName,
        display_name: String,
    ) -> Result<(), ServiceError> {
        let created = self
            .accounts
            .create(CreateRequest {
                parent: name.parent().to_string(),
                id: name.id().to_string(),
                resource: Some(ServiceAccount {
                    display_name,
                    ..Default::default()
                }),
                request_id: String::new(),
            })
            .await;
        match created {
            Ok(_) | Err(ServiceError::AlreadyExists(_)) => Ok(()),
            Err(other) => Err(other),
        }
    }

    /// A new key of `account`; its text exists only in the returned value.
    pub async fn issue_key(&self, account: &ServiceAccountName) -> Result<IssuedKey, ServiceError> {
        self.issue_key_with_id(account, keys::random_id("k", 16)?)
            .await
    }

    /// A new key of `account` with the key ID `id`: ALREADY_EXISTS when
    /// that key was made before (its secret is gone for good).
    pub async fn issue_key_with_id(
        &self,
        account: &ServiceAccountName,
        id: fleetlog_events::Id,
    ) -> Result<IssuedKey, ServiceError> {
        let key = IssuedKey::new(ServiceAccountKeyName {
            project: account.project.clone(),
            service_account: account.service_account.clone(),
            key: id,
        });
        self.keys
            .create(CreateRequest {
                parent: key.name.parent().to_string(),
                id: key.name.id().to_string(),
                resource: Some(ServiceAccountKeyRecord {
                    secret_sha256: key.sha256.clone(),
                    ..Default::default()
                }),
                request_id: String::new(),
            })
            .await?;
        Ok(key)
    }

    /// Deletes `account` and every key it has: its keys are refused from
    /// the moment this returns.
    pub async fn remove_account(&self, account: &ServiceAccountName) -> Result<(), ServiceError> {
        self.accounts
            .delete(DeleteRequest {
                name: account.to_string(),
                expected_revision: 0,
                allow_missing: true,
                request_id: String::new(),
            })
            .await?;
        let keys = fleetlog_model::stored::stored_under::<ServiceAccountKeyRecord>(
            &self.keys.projection(),
            &ServiceAccountKeyParent {
                project: account.project.clone(),
                service_account: account.service_account.clone(),
            },
        )?;
        for key in keys {
            self.keys
                .delete(DeleteRequest {
                    name: key.name,
                    expected_revision: 0,
                    allow_missing: true,
                    request_id: String::new(),
                })
                .await?;
        }
        Ok(())
    }
}

/// The gRPC `fleetlog.iam.v1.ServiceAccountService`.
pub struct ServiceAccountApi {
    engine: Engine<ServiceAccount>,
    accounts: Accounts,
}

impl ServiceAccountApi {
    pub fn new(iam: Arc<ServiceContext>) -> Self {
        ServiceAccountApi {
            engine: Engine::new(iam.clone()),
            accounts: Accounts::new(iam),
        }
    }
}

crate::standard_service! {
    impl ServiceAccountService for ServiceAccountApi {
        resource: ServiceAccount,
        field: service_account,
        plural: service_accounts,
        id_field: service_account_id,
        change: ServiceAccountChange,
        get: get_service_account(GetServiceAccountRequest),
        batch_get: batch_get_service_accounts(BatchGetServiceAccountsRequest) -> BatchGetServiceAccountsResponse,
        list: list_service_accounts(ListServiceAccountsRequest) -> ListServiceAccountsResponse,
        watch_one: watch_service_account(WatchServiceAccountRequest) -> WatchServiceAccountResponse, stream WatchServiceAccountStream,
        watch: watch_service_accounts(WatchServiceAccountsRequest) -> WatchServiceAccountsResponse, stream WatchServiceAccountsStream,
        create: create_service_account(CreateServiceAccountRequest),
        update: update_service_account(UpdateServiceAccountRequest),
        delete: delete_service_account(DeleteServiceAccountRequest),
    }

    async fn create_service_account_key(
        &self,
        request: tonic::Request<CreateServiceAccountKeyRequest>,
    ) -> Result<tonic::Response<CreateServiceAccountKeyResponse>, tonic::Status> {
        let ctx = self.engine.context();
        let caller = ctx.caller(&request)?;
        let r = request.into_inner();
        let account = ctx.authorize_name::<ServiceAccount>(&caller, Access::Write, "name", &r.name)?;
        // From the log, as every action reads its resource: only a missing
        // account is NOT_FOUND; an unreachable log is UNAVAILABLE.
        if self.engine.current(&account).await?.is_none() {
            return Err(ServiceError::NotFound(r.name).into());
        }
        let key = self.accounts.issue_key(&account).await?;
        Ok(tonic::Response::new(CreateServiceAccountKeyResponse {
            key_name: key.name.to_string(),
            key: key.text,
        }))
    }

    async fn delete_service_account_key(
        &self,
        request: tonic::Request<DeleteServiceAccountKeyRequest>,
    ) -> Result<tonic::Response<()>, tonic::Status> {
        let ctx = self.engine.context();
        let caller = ctx.caller(&request)?;
        let r = request.into_inner();
        let key = ctx.authorize_name::<ServiceAccountKeyRecord>(&caller, Access::Write, "name", &r.name)?;
        self.accounts.keys.delete(DeleteRequest {
                    name: key.to_string(),
                    expected_revision: 0,
                    allow_missing: false,
                    request_id: r.request_id,
                })
            .await?;
        Ok(tonic::Response::new(()))
    }
}

/// The gRPC `fleetlog.iam.v1.RoleBindingService`.
pub struct RoleBindingApi {
    engine: Engine<RoleBinding>,
}

impl RoleBindingApi {
    pub fn new(iam: Arc<ServiceContext>) -> Self {
        RoleBindingApi {
            engine: Engine::new(iam),
        }
    }
}

crate::standard_service! {
    impl RoleBindingService for RoleBindingApi {
        resource: RoleBinding,
        field: role_binding,
        plural: role_bindings,
        id_field: role_binding_id,
        change: RoleBindingChange,
        get: get_role_binding(GetRoleBindingRequest),
        batch_get: batch_get_role_bindings(BatchGetRoleBindingsRequest) -> BatchGetRoleBindingsResponse,
        list: list_role_bindings(ListRoleBindingsRequest) -> ListRoleBindingsResponse,
        watch_one: watch_role_binding(WatchRoleBindingRequest) -> WatchRoleBindingResponse, stream WatchRoleBindingStream,
        watch: watch_role_bindings(WatchRoleBindingsRequest) -> WatchRoleBindingsResponse, stream WatchRoleBindingsStream,
        create: create_role_binding(CreateRoleBindingRequest),
        update: update_role_binding(UpdateRoleBindingRequest),
        delete: delete_role_binding(DeleteRoleBindingRequest),
    }
}
