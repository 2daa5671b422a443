//! In-process fleetd on top of a real nats-server, for the suites.

#![allow(dead_code)] // each suite uses a different part

pub mod browser;

use std::time::{Duration, Instant};

use fleetlog_events::{EventLog, Id, StreamId};
use fleetlog_proto::api::v1::Metadata;
use fleetlog_proto::devices::v1::device::{Spec, spec::LoggingConfig};
use fleetlog_proto::devices::v1::device_service_client::DeviceServiceClient;
use fleetlog_proto::devices::v1::{CreateDeviceRequest, Device};
use fleetlog_proto::iam::v1::role_binding_service_client::RoleBindingServiceClient;
use fleetlog_proto::iam::v1::service_account_service_client::ServiceAccountServiceClient;
use fleetlog_proto::iam::v1::{
    CreateRoleBindingRequest, CreateServiceAccountKeyRequest, CreateServiceAccountRequest,
    RoleBinding, ServiceAccount,
};
use fleetlog_proto::meta::v1::deployment::Stage;
use fleetlog_proto::meta::v1::deployment_service_client::DeploymentServiceClient;
use fleetlog_proto::meta::v1::{
    BeginUpgradeRequest, Deployment, GetDeploymentRequest, SetAvailableUpgradeRequest,
};
use fleetlog_services::fleetd::{self, Config, Ready, Role};
use fleetlog_tests::{ADMIN_KEY, Authed, NatsServer, admin, connect_as};
use tokio_util::sync::CancellationToken;

pub const REGION: &str = "eu1";
/// The Devices deployment of [`REGION`], whose upgrades the suites drive.
pub const DEPLOYMENT: &str = "services/devices.fleetlog.io/deployments/eu1";

pub type Deployments = DeploymentServiceClient<Authed>;
pub const PARENT: &str = "projects/p0/regions/eu1";

pub type Client = DeviceServiceClient<Authed>;

/// A nats-server and a `fleetd all` running in this process.
pub struct Sandbox {
    pub nats: NatsServer,
    pub data: tempfile::TempDir,
    pub ready: Ready,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Sandbox {
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tune: impl FnOnce(&mut Config)) -> anyhow::Result<Self> {
        Self::start_on(NatsServer::start()?, tempfile::tempdir()?, tune).await
    }

    /// Starts fleetd on an existing nats-server and data dir (a restart
    /// after [`Sandbox::stop_keeping`]).
    pub async fn start_on(
        nats: NatsServer,
        data: tempfile::TempDir,
        tune: impl FnOnce(&mut Config),
    ) -> anyhow::Result<Self> {
        let mut config = Config {
            nats_url: Some(nats.url()),
            listen: "127.0.0.1:0".parse()?,
            http_listen: "127.0.0.1:0".parse()?,
            data_dir: data.path().to_owned(),
            region: REGION.into(),
            bootstrap_admin_key: Some(ADMIN_KEY.into()),
            ..Config::default()
        };
        tune(&mut config);
        let shutdown = CancellationToken::new();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(fleetd::run(Role::All, config, shutdown.clone(), Some(tx)));
        let ready = match tokio::time::timeout(Duration::from_secs(30), rx).await? {
            Ok(ready) => ready,
            // fleetd stopped before it was ready: its error says why.
            Err(_) => {
                return Err(task
                    .await?
                    .err()
                    .unwrap_or_else(|| anyhow::anyhow!("fleetd exited")));
            }
        };
        Ok(Sandbox {
            nats,
            data,
            ready,
            shutdown,
            task,
        })
    }

    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.ready.grpc)
    }

    /// A Devices client authenticated as the bootstrap admin.
    pub async fn client(&self) -> anyhow::Result<Client> {
        Ok(DeviceServiceClient::new(admin(self.grpc_url()).await?))
    }

    /// A Devices client sending `key` on every call.
    pub async fn client_as(&self, key: &str) -> anyhow::Result<Client> {
        Ok(DeviceServiceClient::new(
            connect_as(self.grpc_url(), key).await?,
        ))
    }

    /// A log client on the same stream, to inspect what was written.
    pub async fn log(&self) -> anyhow::Result<EventLog> {
        let client = self.nats.connect().await?;
        Ok(EventLog::open(
            client,
            StreamId::new(Id::parse("devices")?, Id::parse(REGION)?),
        )
        .await?)
    }

    /// Stops fleetd, keeping the nats-server and the data dir to inspect.
    pub async fn stop_keeping(self) -> anyhow::Result<(NatsServer, tempfile::TempDir)> {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.task).await???;
        Ok((self.nats, self.data))
    }

    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.task).await???;
        Ok(())
    }
}

pub fn device_name(id: &str) -> String {
    format!("{PARENT}/devices/{id}")
}

pub fn device(labels: &[(&str, &str)], priority: i32) -> Device {
    Device {
        display_name: "test device".into(),
        metadata: Some(Metadata {
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }),
        spec: Some(Spec {
            logging_config: Some(LoggingConfig {
                priority,
                enable_journal_export: true,
                units: vec!["sshd.service".into()],
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub async fn create(
    client: &mut Client,
    id: &str,
    resource: Device,
) -> Result<Device, tonic::Status> {
    client
        .create_device(CreateDeviceRequest {
            parent: PARENT.into(),
            device_id: id.into(),
            device: Some(resource),
            request_id: String::new(),
        })
        .await
        .map(tonic::Response::into_inner)
}

pub fn revision(device: &Device) -> i64 {
    device.metadata.as_ref().map_or(0, |m| m.revision)
}

/// A call's status code (OK for a success).
pub fn code<T>(result: Result<T, tonic::Status>) -> tonic::Code {
    result.err().map_or(tonic::Code::Ok, |status| status.code())
}

/// A new projection in a temporary directory, built by replaying all of
/// `log` through `converter`: what every live projection must equal.
pub async fn fresh_replay(
    log: &EventLog,
    converter: std::sync::Arc<dyn fleetlog_projections::Converter>,
) -> anyhow::Result<(
    tempfile::TempDir,
    std::sync::Arc<fleetlog_projections::Projection>,
)> {
    let dir = tempfile::tempdir()?;
    let fresh = fleetlog_projections::Projection::open(dir.path(), "v1")?;
    fleetlog_projections::projector::replay(log, &fresh, converter, Default::default(), |_, _| {})
        .await?;
    Ok((dir, fresh))
}

/// Every event of `log`, in order, up to its last revision when called.
pub async fn every_event(log: &EventLog) -> anyhow::Result<Vec<fleetlog_events::StoredEvent>> {
    use futures::StreamExt;
    let last = log.last_revision().await?;
    let mut events = log
        .follow(fleetlog_events::log::StartAt::After(
            fleetlog_events::Revision::NONE,
        ))
        .await?
        .events;
    let mut read = Vec::new();
    while read
        .last()
        .map_or(0, |e: &fleetlog_events::StoredEvent| e.revision.get())
        < last.get()
    {
        let delivered = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await?
            .ok_or_else(|| anyhow::anyhow!("the log ended before revision {last}"))??;
        read.push(delivered.event);
    }
    Ok(read)
}

pub async fn deployment(client: &mut Deployments) -> anyhow::Result<Deployment> {
    Ok(client
        .get_deployment(GetDeploymentRequest {
            name: DEPLOYMENT.into(),
            ..Default::default()
        })
        .await?
        .into_inner())
}

/// Offers `target` as the Devices deployment's upgrade and begins it.
pub async fn begin(client: &mut Deployments, target: &str) -> anyhow::Result<()> {
    client
        .set_available_upgrade(SetAvailableUpgradeRequest {
            name: DEPLOYMENT.into(),
            target_api_version: target.into(),
            ..Default::default()
        })
        .await?;
    client
        .begin_upgrade(BeginUpgradeRequest {
            name: DEPLOYMENT.into(),
            ..Default::default()
        })
        .await?;
    Ok(())
}

/// Waits until the deployment serves `version` with no upgrade running.
pub async fn settled_on(
    client: &mut Deployments,
    version: &str,
    within: Duration,
) -> anyhow::Result<Deployment> {
    let deadline = Instant::now() + within;
    loop {
        let d = deployment(client).await?;
        let stage = d.upgrade_state.as_ref().map_or(Stage::Ready, |s| s.stage());
        if d.current_version == version && stage == Stage::Ready {
            return Ok(d);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the deployment did not settle on {version}: {d:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A service account in `project` with `role` there; returns its key.
/// `admin` is a channel authenticated as an admin.
pub async fn member(admin: Authed, project: &str, id: &str, role: &str) -> anyhow::Result<String> {
    let mut accounts = ServiceAccountServiceClient::new(admin.clone());
    let account = accounts
        .create_service_account(CreateServiceAccountRequest {
            parent: format!("projects/{project}"),
            service_account_id: id.into(),
            service_account: Some(ServiceAccount {
                display_name: id.into(),
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await?
        .into_inner();
    RoleBindingServiceClient::new(admin)
        .create_role_binding(CreateRoleBindingRequest {
            parent: format!("projects/{project}"),
            role_binding_id: format!("{id}-{role}"),
            role_binding: Some(RoleBinding {
                member: account.name.clone(),
                role: role.into(),
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await?;
    let key = accounts
        .create_service_account_key(CreateServiceAccountKeyRequest {
            name: account.name,
            request_id: String::new(),
        })
        .await?
        .into_inner();
    assert!(
        key.key.contains(&key.key_name),
        "the key names itself for lookup"
    );
    Ok(key.key)
}
