//! Authentication and authorization against a real nats-server: roles per
//! project, project isolation through every read path, IAM writes, keys.

use crate::common;

use common::{Sandbox, code};
use fleetlog_proto::devices::v1::device_service_client::DeviceServiceClient;
use fleetlog_proto::devices::v1::*;
use fleetlog_proto::iam::v1::role_binding_service_client::RoleBindingServiceClient;
use fleetlog_proto::iam::v1::service_account_service_client::ServiceAccountServiceClient;
use fleetlog_proto::iam::v1::{
    CreateRoleBindingRequest, DeleteServiceAccountKeyRequest, RoleBinding,
};
use fleetlog_proto::meta::v1::deployment_service_client::DeploymentServiceClient;
use fleetlog_proto::meta::v1::{BeginUpgradeRequest, GetDeploymentRequest};
use fleetlog_tests::Authed;
use tonic::Code;

const A: &str = "projects/a/regions/eu1";
const B: &str = "projects/b/regions/eu1";

/// A service account in `project` with `role` there; returns its key.
async fn member(sandbox: &Sandbox, project: &str, id: &str, role: &str) -> anyhow::Result<String> {
    common::member(
        fleetlog_tests::admin(sandbox.grpc_url()).await?,
        project,
        id,
        role,
    )
    .await
}

async fn devices_as(sandbox: &Sandbox, key: &str) -> anyhow::Result<common::Client> {
    sandbox.client_as(key).await
}

#[tokio::test]
async fn roles_decide_reads_and_writes_per_project() -> anyhow::Result<()> {
    let sandbox = Sandbox::start().await?;
    let mut admin = sandbox.client().await?;
    let in_a = admin
        .create_device(CreateDeviceRequest {
            parent: A.into(),
            device_id: "da".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let in_b = admin
        .create_device(CreateDeviceRequest {
            parent: B.into(),
            device_id: "db".into(),
            ..Default::default()
        })
        .await?
        .into_inner();

    let viewer = member(&sandbox, "a", "viewer", "viewer").await?;
    let operator = member(&sandbox, "a", "operator", "device-operator").await?;
    let mut viewer = devices_as(&sandbox, &viewer).await?;
    let mut operator = devices_as(&sandbox, &operator).await?;

    // A viewer reads its project and cannot write.
    viewer
        .get_device(GetDeviceRequest {
            name: in_a.name.clone(),
            ..Default::default()
        })
        .await?;
    let write = viewer
        .create_device(CreateDeviceRequest {
            parent: A.into(),
            device_id: "nope".into(),
            ..Default::default()
        })
        .await;
    assert_eq!(code(write), Code::PermissionDenied);
    let delete = viewer
        .delete_device(DeleteDeviceRequest {
            name: in_a.name.clone(),
            ..Default::default()
        })
        .await;
    assert_eq!(code(delete), Code::PermissionDenied);

    // An operator of A writes devices in A ...
    operator
        .create_device(CreateDeviceRequest {
            parent: A.into(),
            device_id: "by-operator".into(),
            ..Default::default()
        })
        .await?;
    // ... and sees nothing of B, existing or not, through any read path.
    let reads = [
        code(
            operator
                .get_device(GetDeviceRequest {
                    name: in_b.name.clone(),
                    ..Default::default()
                })
                .await,
        ),
        code(
            operator
                .get_device(GetDeviceRequest {
                    name: format!("{B}/devices/absent"),
                    ..Default::default()
                })
                .await,
        ),
        code(
            operator
                .batch_get_devices(BatchGetDevicesRequest {
                    names: vec![in_a.name.clone(), in_b.name.clone()],
                    ..Default::default()
                })
                .await,
        ),
        code(
            operator
                .list_devices(ListDevicesRequest {
                    parent: B.into(),
                    ..Default::default()
                })
                .await,
        ),
        code(
            operator
                .watch_devices(WatchDevicesRequest {
                    parent: B.into(),
                    ..Default::default()
                })
                .await,
        ),
        code(
            operator
                .watch_device(WatchDeviceRequest {
                    name: in_b.name.clone(),
                    ..Default::default()
                })
                .await,
        ),
        code(
            operator
                .create_device(CreateDeviceRequest {
                    parent: B.into(),
                    device_id: "intruder".into(),
                    ..Default::default()
                })
                .await,
        ),
    ];
    assert_eq!(reads, [Code::PermissionDenied; 7]);
    let own = operator
        .list_devices(ListDevicesRequest {
            parent: A.into(),
            min_revision: common::revision(&in_b),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(own.devices.len(), 2);
    assert!(own.devices.iter().all(|d| d.name.starts_with(A)));

    // IAM and Meta writes need more than device-operator.
    let operator_key = member(&sandbox, "a", "operator2", "device-operator").await?;
    let as_operator = fleetlog_tests::connect_as(sandbox.grpc_url(), &operator_key).await?;
    let binding = RoleBindingServiceClient::new(as_operator.clone())
        .create_role_binding(CreateRoleBindingRequest {
            parent: "projects/a".into(),
            role_binding_id: "escalate".into(),
            role_binding: Some(RoleBinding {
                member: "projects/a/serviceAccounts/operator2".into(),
                role: "admin".into(),
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await;
    assert_eq!(code(binding), Code::PermissionDenied);
    let mut deployments = DeploymentServiceClient::new(as_operator);
    deployments
        .get_deployment(GetDeploymentRequest {
            name: "services/devices.fleetlog.io/deployments/eu1".into(),
            ..Default::default()
        })
        .await?;
    let upgrade = deployments
        .begin_upgrade(BeginUpgradeRequest {
            name: "services/devices.fleetlog.io/deployments/eu1".into(),
            request_id: String::new(),
        })
        .await;
    assert_eq!(code(upgrade), Code::PermissionDenied);
    sandbox.stop().await
}

#[tokio::test]
async fn calls_without_a_valid_key_are_unauthenticated() -> anyhow::Result<()> {
    let sandbox = Sandbox::start().await?;
    let channel = tonic::transport::Endpoint::from_shared(sandbox.grpc_url())?
        .connect()
        .await?;
    let mut anonymous =
        fleetlog_proto::devices::v1::device_service_client::DeviceServiceClient::new(channel);
    let anonymous = anonymous
        .list_devices(ListDevicesRequest {
            parent: A.into(),
            ..Default::default()
        })
        .await;
    assert_eq!(code(anonymous), Code::Unauthenticated);
    for key in [
        "garbage",
        "fl1:projects/a/serviceAccounts/x/keys/k:00",
        "fl1:not a name:00",
    ] {
        let mut client = sandbox.client_as(key).await?;
        let result = client
            .list_devices(ListDevicesRequest {
                parent: A.into(),
                ..Default::default()
            })
            .await;
        assert_eq!(code(result), Code::Unauthenticated, "{key}");
    }

    // A deleted key is refused from the moment the delete answers.
    let key = member(&sandbox, "a", "temp", "viewer").await?;
    let mut client = sandbox.client_as(&key).await?;
    client
        .list_devices(ListDevicesRequest {
            parent: A.into(),
            ..Default::default()
        })
        .await?;
    let key_name = key
        .strip_prefix("fl1:")
        .and_then(|rest| rest.rsplit_once(':'))
        .map(|(name, _)| name.to_owned())
        .expect("key format");
    ServiceAccountServiceClient::<Authed>::new(fleetlog_tests::admin(sandbox.grpc_url()).await?)
        .delete_service_account_key(DeleteServiceAccountKeyRequest {
            name: key_name,
            request_id: String::new(),
        })
        .await?;
    let refused = client
        .list_devices(ListDevicesRequest {
            parent: A.into(),
            ..Default::default()
        })
        .await;
    assert_eq!(code(refused), Code::Unauthenticated);
    sandbox.stop().await
}

#[tokio::test]
async fn a_device_key_touches_only_its_own_device() -> anyhow::Result<()> {
    let sandbox = Sandbox::start().await?;
    let mut admin = sandbox.client().await?;
    let mine = common::create(&mut admin, "mine", common::device(&[], 3)).await?;
    let theirs = common::create(&mut admin, "theirs", common::device(&[], 3)).await?;
    let key = admin
        .provision_service_account_to_device(ProvisionServiceAccountToDeviceRequest {
            name: mine.name.clone(),
            request_id: String::new(),
        })
        .await?
        .into_inner()
        .service_account_key
        .expect("key")
        .key;
    let mut agent = sandbox.client_as(&key).await?;
    agent
        .get_device(GetDeviceRequest {
            name: mine.name.clone(),
            ..Default::default()
        })
        .await?;
    let touches = [
        code(
            agent
                .get_device(GetDeviceRequest {
                    name: theirs.name.clone(),
                    ..Default::default()
                })
                .await,
        ),
        code(
            agent
                .get_device_config(GetDeviceConfigRequest {
                    name: theirs.name.clone(),
                })
                .await,
        ),
        code(
            agent
                .upload_device_logs(UploadDeviceLogsRequest {
                    name: theirs.name.clone(),
                    entries: vec![],
                })
                .await,
        ),
        code(
            agent
                .update_device(UpdateDeviceRequest {
                    device: Some(Device {
                        name: mine.name.clone(),
                        display_name: "renamed".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .await,
        ),
        code(
            agent
                .batch_get_devices(BatchGetDevicesRequest {
                    names: vec![mine.name.clone()],
                    ..Default::default()
                })
                .await,
        ),
    ];
    assert_eq!(touches, [Code::PermissionDenied; 5]);
    sandbox.stop().await
}

/// Without a configured key, the cluster's first fleetd makes the bootstrap
/// admin key and prints it once; later starts print nothing and the key
/// keeps working. Only its hash is in the log.
#[tokio::test]
async fn the_bootstrap_admin_key_is_made_once_and_shown_once() -> anyhow::Result<()> {
    let nats = fleetlog_tests::NatsServer::start()?;
    let data = tempfile::tempdir()?;
    let env = vec![
        ("FLEETLOG_NATS_URL", nats.url()),
        ("FLEETLOG_DATA_DIR", data.path().display().to_string()),
        ("FLEETLOG_REGION", "eu1".to_owned()),
        // Empty means unset.
        ("FLEETLOG_BOOTSTRAP_ADMIN_KEY", String::new()),
    ];
    let first = fleetlog_tests::FleetdProcess::start("all", &env)?;
    let key = first
        .printed_admin_key
        .clone()
        .ok_or_else(|| anyhow::anyhow!("the first start prints the bootstrap admin key"))?;
    let list = |url: String, key: String| async move {
        let mut client = DeviceServiceClient::new(fleetlog_tests::connect_as(url, &key).await?);
        let listed = client
            .list_devices(ListDevicesRequest {
                parent: A.into(),
                ..Default::default()
            })
            .await;
        anyhow::Ok(code(listed))
    };
    assert_eq!(list(first.grpc_url(), key.clone()).await?, Code::Ok);
    assert_eq!(
        list(first.grpc_url(), fleetlog_tests::ADMIN_KEY.into()).await?,
        Code::Unauthenticated,
        "no other key is an admin"
    );
    first.shut_down().await?;

    let second = fleetlog_tests::FleetdProcess::start("all", &env)?;
    assert_eq!(second.printed_admin_key, None, "shown once");
    assert_eq!(list(second.grpc_url(), key.clone()).await?, Code::Ok);

    // The IAM stream holds the key's hash, never the key.
    let client = nats.connect().await?;
    let stream = async_nats::jetstream::new(client)
        .get_stream("IAM_EU1")
        .await?;
    let secret = key.rsplit(':').next().unwrap_or_default().to_owned();
    let info = stream.get_info().await?;
    for sequence in 1..=info.state.last_sequence {
        let message = stream.get_raw_message(sequence).await?;
        let payload = String::from_utf8_lossy(&message.payload);
        assert!(
            !payload.contains(&secret),
            "event {sequence} holds the secret"
        );
    }
    Ok(())
}
