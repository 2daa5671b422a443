//! IAM's custom actions answer by what happened: a missing account is
//! NOT_FOUND, an unreachable log UNAVAILABLE (never NOT_FOUND).

use crate::common;

use std::time::Duration;

use common::{Sandbox, code};
use fleetlog_proto::iam::v1::service_account_service_client::ServiceAccountServiceClient;
use fleetlog_proto::iam::v1::{
    CreateServiceAccountKeyRequest, CreateServiceAccountRequest, ServiceAccount,
};
use tonic::Code;

#[tokio::test]
async fn a_key_for_an_account_is_not_found_only_when_the_account_is_missing() -> anyhow::Result<()>
{
    let mut sandbox = Sandbox::start_with(|c| {
        c.read_wait_ms = 500;
        c.nats_retry_ms = 1_000;
    })
    .await?;
    let mut accounts =
        ServiceAccountServiceClient::new(fleetlog_tests::admin(sandbox.grpc_url()).await?);
    accounts
        .create_service_account(CreateServiceAccountRequest {
            parent: "projects/p0".into(),
            service_account_id: "ops".into(),
            service_account: Some(ServiceAccount::default()),
            ..Default::default()
        })
        .await?;
    let key_of = |name: &str| CreateServiceAccountKeyRequest {
        name: name.into(),
        ..Default::default()
    };
    assert_eq!(
        code(
            accounts
                .create_service_account_key(key_of("projects/p0/serviceAccounts/nobody"))
                .await
        ),
        Code::NotFound
    );

    // The log goes away: the account cannot be looked up.
    sandbox.nats.kill9();
    let answered = tokio::time::timeout(
        Duration::from_secs(20),
        accounts.create_service_account_key(key_of("projects/p0/serviceAccounts/ops")),
    )
    .await?;
    assert_eq!(code(answered), Code::Unavailable);
    sandbox.nats.restart()?;
    sandbox.stop().await
}
