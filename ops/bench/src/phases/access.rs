//! Access: what authentication and authorization cost per call. The same
//! Get as the bootstrap admin (a hash compared in memory), as a
//! device-operator service account (key record, account and the project's
//! role bindings read from the IAM projection), and as the device's own
//! agent (the role check fails, then the device is read to find its
//! agent), each beside the admin's Get and the no-op health Check measured
//! in the same run.

use std::time::Instant;

use fleetlog_proto::devices::v1::device_service_client::DeviceServiceClient;
use fleetlog_proto::devices::v1::{
    CreateDeviceRequest, GetDeviceRequest, ProvisionServiceAccountToDeviceRequest,
};
use fleetlog_proto::iam::v1::role_binding_service_client::RoleBindingServiceClient;
use fleetlog_proto::iam::v1::service_account_service_client::ServiceAccountServiceClient;
use fleetlog_proto::iam::v1::{
    CreateRoleBindingRequest, CreateServiceAccountKeyRequest, CreateServiceAccountRequest,
    RoleBinding,
};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use crate::cluster::Cluster;
use crate::latency::Latencies;
use crate::report::Row;
use crate::workload::parent;

const PHASE: &str = "access";
const PROJECT: &str = "access";

pub struct Settings {
    pub gets: usize,
}

pub async fn run(
    cluster: &Cluster,
    settings: &Settings,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let admin = cluster.channel().await?;
    let device = DeviceServiceClient::new(admin.clone())
        .create_device(CreateDeviceRequest {
            parent: parent(PROJECT),
            device_id: "gate".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let operator_key = operator(cluster).await?;
    let agent_key = DeviceServiceClient::new(admin.clone())
        .provision_service_account_to_device(ProvisionServiceAccountToDeviceRequest {
            name: device.name.clone(),
            request_id: String::new(),
        })
        .await?
        .into_inner()
        .service_account_key
        .map(|k| k.key)
        .ok_or_else(|| anyhow::anyhow!("provisioning returned no key"))?;

    let mut health = HealthClient::new(admin.clone());
    let mut no_op = Latencies::default();
    for _ in 0..settings.gets {
        let started = Instant::now();
        health.check(HealthCheckRequest::default()).await?;
        no_op.record(started.elapsed());
    }
    let as_admin = gets(DeviceServiceClient::new(admin), &device.name, settings.gets).await?;
    let as_operator = gets(
        DeviceServiceClient::new(cluster.channel_as(&operator_key).await?),
        &device.name,
        settings.gets,
    )
    .await?;
    let as_agent = gets(
        DeviceServiceClient::new(cluster.channel_as(&agent_key).await?),
        &device.name,
        settings.gets,
    )
    .await?;
    rows.push(
        Row::new(
            PHASE,
            "Get p50 as the bootstrap admin",
            as_admin.p50_ms(),
            "ms",
        )
        .beside("no-op gRPC call (health Check) p50", no_op.p50_ms()),
    );
    for (who, latencies) in [
        ("a device-operator service account", &as_operator),
        ("the device's own agent", &as_agent),
    ] {
        rows.push(
            Row::new(PHASE, format!("Get p50 as {who}"), latencies.p50_ms(), "ms")
                .beside("Get p50 as the bootstrap admin", as_admin.p50_ms()),
        );
        rows.push(
            Row::new(PHASE, format!("Get p99 as {who}"), latencies.p99_ms(), "ms")
                .beside("Get p99 as the bootstrap admin", as_admin.p99_ms()),
        );
    }
    Ok(())
}

/// A service account with the device-operator role in the project; its key.
async fn operator(cluster: &Cluster) -> anyhow::Result<String> {
    let admin = cluster.channel().await?;
    let mut accounts = ServiceAccountServiceClient::new(admin.clone());
    let account = accounts
        .create_service_account(CreateServiceAccountRequest {
            parent: format!("projects/{PROJECT}"),
            service_account_id: "operator".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    RoleBindingServiceClient::new(admin)
        .create_role_binding(CreateRoleBindingRequest {
            parent: format!("projects/{PROJECT}"),
            role_binding_id: "operator".into(),
            role_binding: Some(RoleBinding {
                member: account.name.clone(),
                role: "device-operator".into(),
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await?;
    Ok(accounts
        .create_service_account_key(CreateServiceAccountKeyRequest {
            name: account.name,
            request_id: String::new(),
        })
        .await?
        .into_inner()
        .key)
}

async fn gets<T>(
    mut client: DeviceServiceClient<T>,
    name: &str,
    count: usize,
) -> anyhow::Result<Latencies>
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<tonic::codegen::StdError>,
    T::ResponseBody: tonic::codegen::Body<Data = tonic::codegen::Bytes> + Send + 'static,
    <T::ResponseBody as tonic::codegen::Body>::Error: Into<tonic::codegen::StdError> + Send,
{
    let mut latencies = Latencies::default();
    for _ in 0..count {
        let started = Instant::now();
        client
            .get_device(GetDeviceRequest {
                name: name.to_owned(),
                ..Default::default()
            })
            .await?;
        latencies.record(started.elapsed());
    }
    Ok(latencies)
}
