//! The device agent's life cycle against a real nats-server: provisioning
//! policies in both modes, the hardware replacement cases, the registration
//! race, heartbeats, config and device logs, and key revocation.

use crate::common;

use std::time::Duration;

use common::{PARENT, Sandbox, code};
use fleetlog_proto::api::v1::Metadata;
use fleetlog_proto::devices::v1::device::status::DeviceInfo;
use fleetlog_proto::devices::v1::device::status::device_info::HardwareInformation;
use fleetlog_proto::devices::v1::device::status::device_info::hardware_information::System;
use fleetlog_proto::devices::v1::device::{Spec, Status, spec::LoggingConfig};
use fleetlog_proto::devices::v1::provisioning_approval_request::spec::Conclusion;
use fleetlog_proto::devices::v1::provisioning_approval_request_service_client::ProvisioningApprovalRequestServiceClient;
use fleetlog_proto::devices::v1::provisioning_policy::Spec as PolicySpec;
use fleetlog_proto::devices::v1::provisioning_policy::spec::{Mode, Template};
use fleetlog_proto::devices::v1::provisioning_policy_service_client::ProvisioningPolicyServiceClient;
use fleetlog_proto::devices::v1::*;
use fleetlog_tests::Authed;
use tonic::Code;

type Policies = ProvisioningPolicyServiceClient<Authed>;
type Requests = ProvisioningApprovalRequestServiceClient<Authed>;

const SERIAL_PATH: &str = "status.device_info.hardware_information.system.serial_number";

fn hardware(serial: &str) -> Status {
    Status {
        device_info: Some(DeviceInfo {
            hardware_information: Some(HardwareInformation {
                system: Some(System {
                    serial_number: serial.into(),
                    manufacturer: "Raspberry Pi Ltd".into(),
                    product_name: "Pi 4".into(),
                }),
            }),
            os_version: "2.1.0".into(),
            agent_version: "1.0".into(),
        }),
        ..Default::default()
    }
}

fn serial_of(device: &Device) -> String {
    device
        .status
        .as_ref()
        .and_then(|s| s.device_info.as_ref())
        .and_then(|i| i.hardware_information.as_ref())
        .and_then(|h| h.system.as_ref())
        .map(|s| s.serial_number.clone())
        .unwrap_or_default()
}

/// A policy with the serial number as identity and a template, plus the
/// key its agents present.
async fn policy(sandbox: &Sandbox, id: &str, mode: Mode) -> anyhow::Result<(String, String)> {
    let mut policies = Policies::new(fleetlog_tests::admin(sandbox.grpc_url()).await?);
    let created = policies
        .create_provisioning_policy(CreateProvisioningPolicyRequest {
            parent: PARENT.into(),
            provisioning_policy_id: id.into(),
            provisioning_policy: Some(ProvisioningPolicy {
                spec: Some(PolicySpec {
                    mode: mode as i32,
                    identity_field_paths: vec![SERIAL_PATH.into()],
                    template: Some(Template {
                        metadata: Some(Metadata {
                            labels: [("device".to_owned(), "raspberry-pi".to_owned())].into(),
                            ..Default::default()
                        }),
                        spec: Some(Spec {
                            logging_config: Some(LoggingConfig {
                                enable_journal_export: true,
                                priority: 5,
                                units: vec![],
                            }),
                            ..Default::default()
                        }),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await?
        .into_inner();
    let key = policies
        .provision_service_account_to_provisioning_policy(
            ProvisionServiceAccountToProvisioningPolicyRequest {
                name: created.name.clone(),
                request_id: String::new(),
            },
        )
        .await?
        .into_inner();
    let policy = key.provisioning_policy.expect("the policy");
    let key = key.service_account_key.expect("a key");
    assert_eq!(
        policy.spec.as_ref().map(|s| s.service_account.as_str()),
        Some(key.service_account.as_str())
    );
    Ok((created.name, key.key))
}

async fn register(
    sandbox: &Sandbox,
    policy_key: &str,
    policy: &str,
    serial: &str,
) -> Result<ProvisionedDevice, tonic::Status> {
    let channel = fleetlog_tests::connect_as(sandbox.grpc_url(), policy_key)
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    Policies::new(channel)
        .provision_device_via_policy(ProvisionDeviceViaPolicyRequest {
            name: policy.into(),
            device_status: Some(hardware(serial)),
            request_id: String::new(),
        })
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn unattended_agent_life_cycle() -> anyhow::Result<()> {
    let sandbox = Sandbox::start_with(|c| c.heartbeat_timeout_ms = 60_000).await?;
    let (policy_name, policy_key) = policy(&sandbox, "pi", Mode::Unattended).await?;

    let provisioned = register(&sandbox, &policy_key, &policy_name, "SN-1").await?;
    let device = provisioned.device.expect("a device");
    let device_key = provisioned.service_account_key.expect("a key").key;
    assert!(device.name.starts_with(&format!("{PARENT}/devices/")));
    assert_eq!(serial_of(&device), "SN-1");
    assert_eq!(
        device
            .metadata
            .as_ref()
            .and_then(|m| m.labels.get("device"))
            .map(String::as_str),
        Some("raspberry-pi"),
        "labels come from the template"
    );
    assert_eq!(
        device
            .spec
            .as_ref()
            .and_then(|s| s.logging_config.as_ref())
            .map(|l| l.priority),
        Some(5),
        "the logging config comes from the template"
    );

    // The agent reads its own device and config with its device key.
    let mut agent = sandbox.client_as(&device_key).await?;
    let own = agent
        .get_device(GetDeviceRequest {
            name: device.name.clone(),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(own.name, device.name);
    let config = agent
        .get_device_config(GetDeviceConfigRequest {
            name: device.name.clone(),
        })
        .await?
        .into_inner();
    assert_eq!(
        config.labels.get("device").map(String::as_str),
        Some("raspberry-pi")
    );

    // Heartbeats: online while they come, offline once they stop.
    let (beats, stream) = tokio::sync::mpsc::channel(4);
    let mut heartbeat_agent = agent.clone();
    let heartbeat = tokio::spawn(async move {
        heartbeat_agent
            .heartbeat(tokio_stream::wrappers::ReceiverStream::new(stream))
            .await
    });
    let mut reported = hardware("SN-1");
    if let Some(info) = reported.device_info.as_mut() {
        info.agent_version = "1.1".into();
    }
    beats
        .send(HeartbeatRequest {
            name: device.name.clone(),
            status: Some(reported),
        })
        .await?;
    let mut admin = sandbox.client().await?;
    let online = fleetlog_tests::eventually(Duration::from_secs(5), || {
        let mut admin = admin.clone();
        let name = device.name.clone();
        async move {
            admin
                .get_device(GetDeviceRequest {
                    name,
                    ..Default::default()
                })
                .await
                .map(|d| {
                    let status = d.into_inner().status.unwrap_or_default();
                    status.online
                        && status.last_heartbeat_time.is_some()
                        && status.device_info.map(|i| i.agent_version) == Some("1.1".into())
                })
                .unwrap_or(false)
        }
    })
    .await;
    assert!(online, "the device is online with what the agent reported");
    drop(beats);
    let response = heartbeat.await??.into_inner();
    let after = admin
        .get_device(GetDeviceRequest {
            name: device.name.clone(),
            min_revision: response.revision,
            ..Default::default()
        })
        .await?
        .into_inner();
    assert!(
        !after.status.unwrap_or_default().online,
        "offline once heartbeats stop"
    );

    // Logs: the device's config (priority <= 5, all units) decides what is kept.
    let entry = |seconds: i64, priority: i32, unit: &str| LogEntry {
        time: Some(prost_types::Timestamp { seconds, nanos: 0 }),
        priority,
        unit: unit.into(),
        message: format!("{unit} at {priority}"),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as i64;
    let uploaded = agent
        .upload_device_logs(UploadDeviceLogsRequest {
            name: device.name.clone(),
            entries: vec![
                entry(now - 100, 3, "sshd.service"),
                entry(now - 50, 6, "sshd.service"),
                entry(now - 10, 4, "docker.service"),
                entry(now - 5, 7, "docker.service"),
            ],
        })
        .await?
        .into_inner();
    assert_eq!((uploaded.accepted, uploaded.filtered), (2, 2));
    let bad = agent
        .upload_device_logs(UploadDeviceLogsRequest {
            name: device.name.clone(),
            entries: vec![entry(now, 9, "sshd.service")],
        })
        .await
        .expect_err("priority 9");
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(
        bad.message().contains("entries[0].priority"),
        "{}",
        bad.message()
    );

    let query = |since: i64, units: Vec<String>, min_priority: Option<i32>| {
        let mut admin = admin.clone();
        let name = device.name.clone();
        async move {
            let mut stream = admin
                .query_device_logs(QueryDeviceLogsRequest {
                    name,
                    since: Some(prost_types::Timestamp {
                        seconds: since,
                        nanos: 0,
                    }),
                    units,
                    min_priority,
                })
                .await?
                .into_inner();
            let mut messages = Vec::new();
            while let Some(batch) = stream.message().await? {
                messages.extend(batch.entries.into_iter().map(|e| e.message));
            }
            anyhow::Ok(messages)
        }
    };
    assert_eq!(
        query(now - 3600, vec![], None).await?,
        vec!["sshd.service at 3", "docker.service at 4"]
    );
    assert_eq!(
        query(now - 20, vec![], None).await?,
        vec!["docker.service at 4"]
    );
    assert_eq!(
        query(now - 3600, vec!["sshd.service".into()], None).await?,
        vec!["sshd.service at 3"]
    );
    assert_eq!(
        query(now - 3600, vec![], Some(3)).await?,
        vec!["sshd.service at 3"]
    );

    // A device key does nothing else.
    let denied = [
        code(
            agent
                .list_devices(ListDevicesRequest {
                    parent: PARENT.into(),
                    ..Default::default()
                })
                .await,
        ),
        code(
            agent
                .create_device(CreateDeviceRequest {
                    parent: PARENT.into(),
                    device_id: "other".into(),
                    ..Default::default()
                })
                .await,
        ),
        code(
            agent
                .query_device_logs(QueryDeviceLogsRequest {
                    name: device.name.clone(),
                    ..Default::default()
                })
                .await,
        ),
        code(
            agent
                .get_device(GetDeviceRequest {
                    name: format!("{PARENT}/devices/someone-else"),
                    ..Default::default()
                })
                .await,
        ),
        code(
            agent
                .remove_service_account_from_device(RemoveServiceAccountFromDeviceRequest {
                    name: device.name.clone(),
                    request_id: String::new(),
                })
                .await,
        ),
    ];
    assert_eq!(denied, [Code::PermissionDenied; 5]);
    // Nor does the policy key read devices.
    let mut as_policy = sandbox.client_as(&policy_key).await?;
    let read = as_policy
        .get_device(GetDeviceRequest {
            name: device.name.clone(),
            ..Default::default()
        })
        .await;
    assert_eq!(code(read), Code::PermissionDenied);
    sandbox.stop().await
}

#[tokio::test]
async fn hardware_and_boot_media_replacement() -> anyhow::Result<()> {
    let sandbox = Sandbox::start().await?;
    let (policy_name, policy_key) = policy(&sandbox, "pi", Mode::Unattended).await?;
    let first = register(&sandbox, &policy_key, &policy_name, "SN-1").await?;
    let device = first.device.expect("device");
    let first_key = first.service_account_key.expect("key").key;
    let mut admin = sandbox.client().await?;

    // 1. New hardware, same boot media: the agent keeps its device key and
    //    reports the new serial number; the same device takes it.
    let mut agent = sandbox.client_as(&first_key).await?;
    let (beats, stream) = tokio::sync::mpsc::channel(1);
    beats
        .send(HeartbeatRequest {
            name: device.name.clone(),
            status: Some(hardware("SN-2")),
        })
        .await?;
    drop(beats);
    let revision = agent
        .heartbeat(tokio_stream::wrappers::ReceiverStream::new(stream))
        .await?
        .into_inner()
        .revision;
    let moved = admin
        .get_device(GetDeviceRequest {
            name: device.name.clone(),
            min_revision: revision,
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(
        serial_of(&moved),
        "SN-2",
        "the serial number is overwritten"
    );

    // 2. Same hardware, new boot media: no device key, the serial number
    //    finds the existing device; the old media's key stops working.
    let original = register(&sandbox, &policy_key, &policy_name, "SN-1").await?;
    assert_eq!(original.device.expect("device").name, device.name);
    let again = register(&sandbox, &policy_key, &policy_name, "SN-1").await?;
    let same = again.device.expect("device");
    assert_eq!(same.name, device.name, "same serial, same device");
    let new_key = again.service_account_key.expect("key").key;
    let old = agent
        .get_device_config(GetDeviceConfigRequest {
            name: device.name.clone(),
        })
        .await;
    assert!(
        matches!(code(old), Code::Unauthenticated | Code::PermissionDenied),
        "the replaced media's key is refused"
    );
    let mut renewed = sandbox.client_as(&new_key).await?;
    renewed
        .get_device_config(GetDeviceConfigRequest {
            name: device.name.clone(),
        })
        .await?;

    // 3. Both replaced: nothing identifies the old device; a new one.
    let fresh = register(&sandbox, &policy_key, &policy_name, "SN-3").await?;
    assert_ne!(fresh.device.expect("device").name, device.name);
    let listed = admin
        .list_devices(ListDevicesRequest {
            parent: PARENT.into(),
            min_revision: revision,
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(listed.devices.len(), 2, "SN-1 (now SN-2 hardware) and SN-3");
    sandbox.stop().await
}

#[tokio::test]
async fn agents_racing_with_one_serial_number_get_one_device() -> anyhow::Result<()> {
    let sandbox = Sandbox::start().await?;
    let (policy_name, policy_key) = policy(&sandbox, "pi", Mode::Unattended).await?;
    let racers = (0..8).map(|_| {
        let url = sandbox.grpc_url();
        let key = policy_key.clone();
        let policy = policy_name.clone();
        tokio::spawn(async move {
            let mut policies = Policies::new(fleetlog_tests::connect_as(url, &key).await?);
            let done = policies
                .provision_device_via_policy(ProvisionDeviceViaPolicyRequest {
                    name: policy,
                    device_status: Some(hardware("SN-RACE")),
                    request_id: String::new(),
                })
                .await?
                .into_inner();
            anyhow::Ok(done.device.expect("device"))
        })
    });
    let mut names = Vec::new();
    let mut revision = 0;
    for racer in futures::future::join_all(racers).await {
        let device = racer??;
        revision = revision.max(common::revision(&device));
        names.push(device.name);
    }
    names.dedup();
    assert_eq!(names.len(), 1, "every agent got the same device: {names:?}");
    let listed = sandbox
        .client()
        .await?
        .list_devices(ListDevicesRequest {
            parent: PARENT.into(),
            min_revision: revision,
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(listed.devices.len(), 1);
    sandbox.stop().await
}

#[tokio::test]
async fn manual_approval_life_cycle() -> anyhow::Result<()> {
    let sandbox = Sandbox::start().await?;
    let (policy_name, policy_key) = policy(&sandbox, "manual", Mode::ManualApproval).await?;
    let as_agent = fleetlog_tests::connect_as(sandbox.grpc_url(), &policy_key).await?;
    let mut agent_policies = Policies::new(as_agent.clone());
    let mut agent_requests = Requests::new(as_agent);

    let wrong_mode = register(&sandbox, &policy_key, &policy_name, "SN-M").await;
    assert_eq!(code(wrong_mode), Code::FailedPrecondition);

    let filed = agent_policies
        .request_provisioning_approval(RequestProvisioningApprovalRequest {
            name: policy_name.clone(),
            device_status: Some(hardware("SN-M")),
            request_id: String::new(),
        })
        .await?
        .into_inner();
    assert!(
        filed
            .name
            .starts_with(&format!("{policy_name}/provisioningApprovalRequests/"))
    );
    let again = agent_policies
        .request_provisioning_approval(RequestProvisioningApprovalRequest {
            name: policy_name.clone(),
            device_status: Some(hardware("SN-M")),
            request_id: String::new(),
        })
        .await?
        .into_inner();
    assert_eq!(again.name, filed.name, "the same hardware asks once");

    let early = agent_requests
        .provision_device_for_approved_request(ProvisionDeviceForApprovedRequestRequest {
            name: filed.name.clone(),
            request_id: String::new(),
        })
        .await;
    assert_eq!(code(early), Code::FailedPrecondition, "not approved yet");

    let mut operator = Requests::new(fleetlog_tests::admin(sandbox.grpc_url()).await?);
    operator
        .update_provisioning_approval_request(UpdateProvisioningApprovalRequestRequest {
            provisioning_approval_request: Some(ProvisioningApprovalRequest {
                name: filed.name.clone(),
                spec: Some(provisioning_approval_request::Spec {
                    conclusion: Conclusion::Approved as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["spec.conclusion".into()],
            }),
            ..Default::default()
        })
        .await?;
    let collected = agent_requests
        .provision_device_for_approved_request(ProvisionDeviceForApprovedRequestRequest {
            name: filed.name.clone(),
            request_id: String::new(),
        })
        .await?
        .into_inner();
    let device = collected.device.expect("device");
    assert_eq!(serial_of(&device), "SN-M");
    let key = collected.service_account_key.expect("key").key;
    sandbox
        .client_as(&key)
        .await?
        .get_device_config(GetDeviceConfigRequest {
            name: device.name.clone(),
        })
        .await?;
    let request = operator
        .get_provisioning_approval_request(GetProvisioningApprovalRequestRequest {
            name: filed.name.clone(),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(request.status.map(|s| s.device), Some(device.name.clone()));

    // A revoked request gives no device.
    let other = agent_policies
        .request_provisioning_approval(RequestProvisioningApprovalRequest {
            name: policy_name.clone(),
            device_status: Some(hardware("SN-X")),
            request_id: String::new(),
        })
        .await?
        .into_inner();
    operator
        .update_provisioning_approval_request(UpdateProvisioningApprovalRequestRequest {
            provisioning_approval_request: Some(ProvisioningApprovalRequest {
                name: other.name.clone(),
                spec: Some(provisioning_approval_request::Spec {
                    conclusion: Conclusion::Revoked as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["spec.conclusion".into()],
            }),
            ..Default::default()
        })
        .await?;
    let refused = agent_requests
        .provision_device_for_approved_request(ProvisionDeviceForApprovedRequestRequest {
            name: other.name,
            request_id: String::new(),
        })
        .await;
    assert_eq!(code(refused), Code::FailedPrecondition);
    sandbox.stop().await
}

#[tokio::test]
async fn removed_service_account_is_refused_at_once() -> anyhow::Result<()> {
    let sandbox = Sandbox::start().await?;
    let mut admin = sandbox.client().await?;
    let device = common::create(&mut admin, "d1", common::device(&[], 3)).await?;
    let key = admin
        .provision_service_account_to_device(ProvisionServiceAccountToDeviceRequest {
            name: device.name.clone(),
            request_id: String::new(),
        })
        .await?
        .into_inner()
        .service_account_key
        .expect("key");
    let mut agent = sandbox.client_as(&key.key).await?;
    agent
        .get_device_config(GetDeviceConfigRequest {
            name: device.name.clone(),
        })
        .await?;
    let removed = admin
        .remove_service_account_from_device(RemoveServiceAccountFromDeviceRequest {
            name: device.name.clone(),
            request_id: String::new(),
        })
        .await?
        .into_inner();
    assert_eq!(removed.spec.map(|s| s.service_account), Some(String::new()));
    let refused = agent
        .get_device_config(GetDeviceConfigRequest {
            name: device.name.clone(),
        })
        .await
        .expect_err("a removed account's key");
    assert_eq!(
        refused.code(),
        Code::Unauthenticated,
        "{}",
        refused.message()
    );
    let again = admin
        .remove_service_account_from_device(RemoveServiceAccountFromDeviceRequest {
            name: device.name.clone(),
            request_id: String::new(),
        })
        .await;
    assert_eq!(
        code(again),
        Code::FailedPrecondition,
        "nothing left to remove"
    );
    sandbox.stop().await
}

#[tokio::test]
async fn a_silent_agent_goes_offline_after_the_heartbeat_timeout() -> anyhow::Result<()> {
    let sandbox = Sandbox::start_with(|c| c.heartbeat_timeout_ms = 300).await?;
    let (policy_name, policy_key) = policy(&sandbox, "pi", Mode::Unattended).await?;
    let provisioned = register(&sandbox, &policy_key, &policy_name, "SN-Q").await?;
    let device = provisioned.device.expect("device");
    let mut agent = sandbox
        .client_as(&provisioned.service_account_key.expect("key").key)
        .await?;
    let (beats, stream) = tokio::sync::mpsc::channel(1);
    beats
        .send(HeartbeatRequest {
            name: device.name.clone(),
            status: None,
        })
        .await?;
    // The stream stays open, but nothing more comes.
    let started = std::time::Instant::now();
    let revision = agent
        .heartbeat(tokio_stream::wrappers::ReceiverStream::new(stream))
        .await?
        .into_inner()
        .revision;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(300),
        "answered after {waited:?}"
    );
    let after = sandbox
        .client()
        .await?
        .get_device(GetDeviceRequest {
            name: device.name.clone(),
            min_revision: revision,
            ..Default::default()
        })
        .await?
        .into_inner();
    let status = after.status.unwrap_or_default();
    assert!(
        !status.online,
        "silent for longer than the timeout: offline"
    );
    assert!(
        status.last_heartbeat_time.is_some(),
        "the one heartbeat was recorded"
    );
    drop(beats);
    sandbox.stop().await
}

/// The agent flow through the older API, in a region on either version:
/// policies and approval requests exist in v1 form only, so both APIs see
/// the same ones.
#[tokio::test]
async fn provisioning_through_v1alpha2() -> anyhow::Result<()> {
    use fleetlog_proto::devices::v1alpha2 as old;
    for initial in ["v1", "v1alpha2"] {
        let sandbox = Sandbox::start_with(|c| c.devices_initial_version = initial.into()).await?;
        let admin = fleetlog_tests::admin(sandbox.grpc_url()).await?;
        let mut old_policies =
            old::provisioning_policy_service_client::ProvisioningPolicyServiceClient::new(
                admin.clone(),
            );
        let created = old_policies
            .create_provisioning_policy(old::CreateProvisioningPolicyRequest {
                parent: "projects/p0".into(),
                provisioning_policy_id: "legacy".into(),
                provisioning_policy: Some(old::ProvisioningPolicy {
                    spec: Some(old::provisioning_policy::Spec {
                        mode: Mode::Unattended as i32,
                        identity_field_paths: vec![SERIAL_PATH.into()],
                        template: Some(old::provisioning_policy::spec::Template {
                            metadata: None,
                            spec: Some(old::device::Spec {
                                journal_export_enabled: true,
                                log_priority: 6,
                                ..Default::default()
                            }),
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                request_id: String::new(),
            })
            .await?
            .into_inner();
        assert_eq!(
            created.name, "projects/p0/provisioningPolicies/legacy",
            "{initial}"
        );
        // The same policy through v1: regional, nested logging config.
        let v1_policy = Policies::new(admin.clone())
            .get_provisioning_policy(GetProvisioningPolicyRequest {
                name: format!("{PARENT}/provisioningPolicies/legacy"),
                min_revision: created.metadata.as_ref().map_or(0, |m| m.revision),
                ..Default::default()
            })
            .await?
            .into_inner();
        let template_priority = v1_policy
            .spec
            .as_ref()
            .and_then(|s| s.template.as_ref())
            .and_then(|t| t.spec.as_ref())
            .and_then(|s| s.logging_config.as_ref())
            .map(|l| l.priority);
        assert_eq!(template_priority, Some(6), "{initial}");
        let listed = old_policies
            .list_provisioning_policies(old::ListProvisioningPoliciesRequest {
                parent: "projects/p0".into(),
                ..Default::default()
            })
            .await?
            .into_inner();
        assert_eq!(listed.provisioning_policies.len(), 1, "{initial}");

        let key = old_policies
            .provision_service_account_to_provisioning_policy(
                old::ProvisionServiceAccountToProvisioningPolicyRequest {
                    name: created.name.clone(),
                    request_id: String::new(),
                },
            )
            .await?
            .into_inner()
            .service_account_key
            .expect("key")
            .key;
        let as_policy = fleetlog_tests::connect_as(sandbox.grpc_url(), &key).await?;
        let provisioned =
            old::provisioning_policy_service_client::ProvisioningPolicyServiceClient::new(as_policy)
                .provision_device_via_policy(old::ProvisionDeviceViaPolicyRequest {
                    name: created.name.clone(),
                    device_status: Some(old::device::Status {
                        device_info: Some(old::device::status::DeviceInfo {
                            hardware_information: Some(
                                old::device::status::device_info::HardwareInformation {
                                    system: Some(
                                        old::device::status::device_info::hardware_information::System {
                                            serial_number: "SN-OLD".into(),
                                            ..Default::default()
                                        },
                                    ),
                                },
                            ),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    request_id: String::new(),
                })
                .await?
                .into_inner();
        let device = provisioned.device.expect("device");
        assert!(
            device.name.starts_with("projects/p0/devices/"),
            "{}",
            device.name
        );
        assert_eq!(
            device.spec.as_ref().map(|s| s.log_priority),
            Some(6),
            "{initial}"
        );
        let device_key = provisioned.service_account_key.expect("key").key;
        let mut old_agent = old::device_service_client::DeviceServiceClient::new(
            fleetlog_tests::connect_as(sandbox.grpc_url(), &device_key).await?,
        );
        let config = old_agent
            .get_device_config(old::GetDeviceConfigRequest {
                name: device.name.clone(),
            })
            .await?
            .into_inner();
        assert_eq!(config.name, device.name);
        assert_eq!(config.spec.map(|s| s.log_priority), Some(6));
        let uploaded = old_agent
            .upload_device_logs(old::UploadDeviceLogsRequest {
                name: device.name.clone(),
                entries: vec![old::LogEntry {
                    priority: 2,
                    unit: "sshd.service".into(),
                    message: "hello".into(),
                    time: None,
                }],
            })
            .await?
            .into_inner();
        assert_eq!(uploaded.accepted, 1, "{initial}");
        let own = old_agent
            .get_device(old::GetDeviceRequest {
                name: device.name.clone(),
                ..Default::default()
            })
            .await?
            .into_inner();
        assert_eq!(own.name, device.name);
        sandbox.stop().await?;
    }
    Ok(())
}

/// Only the provisioning actions bind an account: a client cannot make
/// itself a device's agent through Create or Update.
#[tokio::test]
async fn create_and_update_ignore_a_bound_service_account() -> anyhow::Result<()> {
    let sandbox = Sandbox::start().await?;
    let mut admin = sandbox.client().await?;
    let mut claimed = common::device(&[], 3);
    if let Some(spec) = claimed.spec.as_mut() {
        spec.service_account = "projects/p0/serviceAccounts/intruder".into();
    }
    let created = common::create(&mut admin, "d1", claimed.clone()).await?;
    assert_eq!(
        created.spec.as_ref().map(|s| s.service_account.as_str()),
        Some("")
    );
    let bound = admin
        .provision_service_account_to_device(ProvisionServiceAccountToDeviceRequest {
            name: created.name.clone(),
            request_id: String::new(),
        })
        .await?
        .into_inner()
        .service_account_key
        .expect("key")
        .service_account;
    let updated = admin
        .update_device(UpdateDeviceRequest {
            device: Some(Device {
                name: created.name.clone(),
                ..claimed
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["spec".into()],
            }),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(
        updated.spec.map(|s| s.service_account),
        Some(bound),
        "the provisioned account stays"
    );
    sandbox.stop().await
}
