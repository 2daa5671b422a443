//! Property test over request payloads: whatever a client sends (names,
//! IDs, filters, masks, numbers, credentials, chosen at random from valid,
//! almost valid and arbitrary values), fleetd answers with one of the codes
//! API.md lists and keeps serving. A panic in a handler would surface as
//! UNKNOWN/INTERNAL or a dropped connection, both of which fail the test.

use crate::common;

use std::time::Duration;

use common::{PARENT, Sandbox, code};
use fleetlog_proto::api::v1::Metadata;
use fleetlog_proto::devices::v1::device::{Spec, spec::LoggingConfig};
use fleetlog_proto::devices::v1::provisioning_policy_service_client::ProvisioningPolicyServiceClient;
use fleetlog_proto::devices::v1::*;
use fleetlog_proto::iam::v1::role_binding_service_client::RoleBindingServiceClient;
use fleetlog_proto::iam::v1::service_account_service_client::ServiceAccountServiceClient;
use fleetlog_proto::iam::v1::{
    CreateRoleBindingRequest, CreateServiceAccountKeyRequest, RoleBinding,
};
use fleetlog_tests::Authed;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use tonic::Code;

/// The codes API.md's status table lists (and OK).
const API_CODES: &[Code] = &[
    Code::Ok,
    Code::InvalidArgument,
    Code::NotFound,
    Code::AlreadyExists,
    Code::Aborted,
    Code::FailedPrecondition,
    Code::Unauthenticated,
    Code::PermissionDenied,
    Code::Unavailable,
    Code::DeadlineExceeded,
];

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just(PARENT.to_owned()),
        Just(format!("{PARENT}/devices/d1")),
        Just(format!("{PARENT}/provisioningPolicies/p1")),
        Just("projects/p0".to_owned()),
        "[a-z0-9_-]{0,40}",
        "projects/[a-z0-9-]{0,6}(/regions/[a-zA-Z0-9]{0,6}(/devices/[a-z0-9_.-]{0,40})?)?",
        "[ -~]{0,80}",
        any::<String>(),
    ]
}

fn filter() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "labels\\.[a-z]{1,4} (=|!=|<|>=|:) \"[a-z]{0,4}\"",
        "spec\\.logging_config\\.priority (=|<|>=) -?[0-9]{1,12}",
        "(NOT |\\()?[a-z_.]{1,30}( IN \\(\"a\", 1\\))?( AND| OR)? [ -~]{0,20}",
        "[ -~]{0,60}",
    ]
}

fn paths() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(
        prop_oneof![
            Just("display_name".to_owned()),
            Just("spec.logging_config".to_owned()),
            Just("metadata.labels".to_owned()),
            "[a-z_.*]{0,30}",
        ],
        0..3,
    )
}

fn mask() -> impl Strategy<Value = Option<prost_types::FieldMask>> {
    prop::option::of(paths().prop_map(|paths| prost_types::FieldMask { paths }))
}

/// A small or an extreme number.
fn number() -> impl Strategy<Value = i64> {
    prop_oneof![Just(0i64), -3i64..50, any::<i64>()]
}

fn device() -> impl Strategy<Value = Option<Device>> {
    prop::option::of(
        (
            text(),
            prop::collection::hash_map("[a-z.]{0,8}", "[ -~]{0,8}", 0..3),
            -2i32..10,
            prop::collection::vec(text(), 0..3),
        )
            .prop_map(|(display_name, labels, priority, units)| Device {
                display_name,
                metadata: Some(Metadata {
                    labels,
                    ..Default::default()
                }),
                spec: Some(Spec {
                    logging_config: Some(LoggingConfig {
                        enable_journal_export: true,
                        priority,
                        units,
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
    )
}

#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)] // test data, built and sent once each
enum Call {
    Get(GetDeviceRequest),
    BatchGet(BatchGetDevicesRequest),
    List(ListDevicesRequest),
    Watch(WatchDevicesRequest),
    Create(CreateDeviceRequest),
    Update(UpdateDeviceRequest),
    Delete(DeleteDeviceRequest),
    Upload(UploadDeviceLogsRequest),
    Query(QueryDeviceLogsRequest),
    Config(GetDeviceConfigRequest),
    Policy(CreateProvisioningPolicyRequest),
    Register(ProvisionDeviceViaPolicyRequest),
    Binding(CreateRoleBindingRequest),
    Key(CreateServiceAccountKeyRequest),
}

fn call() -> impl Strategy<Value = Call> {
    prop_oneof![
        (text(), mask(), 0i64..3).prop_map(|(name, field_mask, min_revision)| Call::Get(
            GetDeviceRequest {
                name,
                field_mask,
                min_revision
            }
        )),
        (prop::collection::vec(text(), 0..4), mask()).prop_map(|(names, field_mask)| {
            Call::BatchGet(BatchGetDevicesRequest {
                names,
                field_mask,
                min_revision: 0,
            })
        }),
        (
            text(),
            any::<i32>(),
            text(),
            filter(),
            "[a-z_., ]{0,30}",
            mask()
        )
            .prop_map(
                |(parent, page_size, page_token, filter, order_by, field_mask)| Call::List(
                    ListDevicesRequest {
                        parent,
                        page_size,
                        page_token,
                        filter,
                        order_by,
                        field_mask,
                        min_revision: 0,
                    }
                )
            ),
        (text(), filter(), mask(), number()).prop_map(
            |(parent, filter, field_mask, resume_revision)| Call::Watch(WatchDevicesRequest {
                parent,
                filter,
                field_mask,
                resume_revision,
            })
        ),
        (text(), text(), device(), text()).prop_map(|(parent, device_id, device, request_id)| {
            Call::Create(CreateDeviceRequest {
                parent,
                device_id,
                device,
                request_id,
            })
        }),
        (device(), text(), mask(), number(), any::<bool>()).prop_map(
            |(device, name, update_mask, expected_revision, allow_missing)| {
                Call::Update(UpdateDeviceRequest {
                    device: device.map(|d| Device { name, ..d }),
                    update_mask,
                    expected_revision,
                    allow_missing,
                    request_id: String::new(),
                })
            }
        ),
        (text(), number(), any::<bool>()).prop_map(|(name, expected_revision, allow_missing)| {
            Call::Delete(DeleteDeviceRequest {
                name,
                expected_revision,
                allow_missing,
                request_id: String::new(),
            })
        }),
        (
            text(),
            prop::collection::vec((any::<i32>(), text(), text()), 0..4)
        )
            .prop_map(|(name, entries)| Call::Upload(UploadDeviceLogsRequest {
                name,
                entries: entries
                    .into_iter()
                    .map(|(priority, unit, message)| LogEntry {
                        time: None,
                        priority,
                        unit,
                        message,
                    })
                    .collect(),
            })),
        (
            text(),
            prop::option::of(any::<i64>()),
            prop::option::of(any::<i32>())
        )
            .prop_map(
                |(name, since, min_priority)| Call::Query(QueryDeviceLogsRequest {
                    name,
                    since: since.map(|seconds| prost_types::Timestamp { seconds, nanos: 0 }),
                    units: vec![],
                    min_priority,
                })
            ),
        text().prop_map(|name| Call::Config(GetDeviceConfigRequest { name })),
        (text(), text(), any::<i32>(), paths(), text()).prop_map(
            |(parent, id, mode, identity_field_paths, device_name_format)| {
                Call::Policy(CreateProvisioningPolicyRequest {
                    parent,
                    provisioning_policy_id: id,
                    provisioning_policy: Some(ProvisioningPolicy {
                        spec: Some(provisioning_policy::Spec {
                            mode,
                            identity_field_paths,
                            device_name_format,
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    request_id: String::new(),
                })
            }
        ),
        (text(), prop::option::of(text())).prop_map(|(name, serial)| Call::Register(
            ProvisionDeviceViaPolicyRequest {
                name,
                device_status: serial.map(|_| Default::default()),
                request_id: String::new(),
            }
        )),
        (text(), text(), text(), text()).prop_map(|(parent, id, member, role)| Call::Binding(
            CreateRoleBindingRequest {
                parent,
                role_binding_id: id,
                role_binding: Some(RoleBinding {
                    member,
                    role,
                    ..Default::default()
                }),
                request_id: String::new(),
            }
        )),
        text().prop_map(|name| Call::Key(CreateServiceAccountKeyRequest {
            name,
            request_id: String::new(),
        })),
    ]
}

/// What the call answered: its code (a watch: of its first message too).
async fn send(channel: Authed, call: Call) -> Code {
    let mut d = DeviceServiceClient::new(channel.clone());
    match call {
        Call::Get(r) => code(d.get_device(r).await.map(drop)),
        Call::BatchGet(r) => code(d.batch_get_devices(r).await.map(drop)),
        Call::List(r) => code(d.list_devices(r).await.map(drop)),
        Call::Watch(r) => match d.watch_devices(r).await {
            Ok(response) => {
                let mut stream = response.into_inner();
                match tokio::time::timeout(Duration::from_secs(2), stream.message()).await {
                    Ok(first) => code(first.map(drop)),
                    // A valid watch with nothing to send yet.
                    Err(_) => Code::Ok,
                }
            }
            Err(status) => status.code(),
        },
        Call::Create(r) => code(d.create_device(r).await.map(drop)),
        Call::Update(r) => code(d.update_device(r).await.map(drop)),
        Call::Delete(r) => code(d.delete_device(r).await.map(drop)),
        Call::Upload(r) => code(d.upload_device_logs(r).await.map(drop)),
        Call::Query(r) => match d.query_device_logs(r).await {
            Ok(response) => {
                let mut stream = response.into_inner();
                code(stream.message().await.map(drop))
            }
            Err(status) => status.code(),
        },
        Call::Config(r) => code(d.get_device_config(r).await.map(drop)),
        Call::Policy(r) => code(
            ProvisioningPolicyServiceClient::new(channel)
                .create_provisioning_policy(r)
                .await
                .map(drop),
        ),
        Call::Register(r) => code(
            ProvisioningPolicyServiceClient::new(channel)
                .provision_device_via_policy(r)
                .await
                .map(drop),
        ),
        Call::Binding(r) => code(
            RoleBindingServiceClient::new(channel)
                .create_role_binding(r)
                .await
                .map(drop),
        ),
        Call::Key(r) => code(
            ServiceAccountServiceClient::new(channel)
                .create_service_account_key(r)
                .await
                .map(drop),
        ),
    }
}

use fleetlog_proto::devices::v1::device_service_client::DeviceServiceClient;

#[test]
fn any_request_gets_an_api_code() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    let sandbox = runtime.block_on(Sandbox::start_with(|c| c.read_wait_ms = 50))?;
    let url = sandbox.grpc_url();
    let channels = runtime.block_on(async {
        let mut channels = Vec::new();
        for key in [
            fleetlog_tests::ADMIN_KEY,
            "",
            "garbage",
            "fl1:projects/p0/serviceAccounts/x/keys/k:00",
        ] {
            channels.push(fleetlog_tests::connect_as(url.clone(), key).await?);
        }
        anyhow::Ok(channels)
    })?;
    runtime.block_on(common::create(
        &mut DeviceServiceClient::new(channels[0].clone()),
        "d1",
        common::device(&[("site", "berlin")], 3),
    ))?;

    let mut runner = TestRunner::new(Config {
        cases: 600,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&(call(), 0usize..4), |(call, who)| {
        let answered = runtime.block_on(send(channels[who].clone(), call.clone()));
        if API_CODES.contains(&answered) {
            Ok(())
        } else {
            Err(TestCaseError::fail(format!(
                "{answered:?} is not an API.md code, for {call:?} as caller {who}"
            )))
        }
    });
    // Still serving after everything above (the cases may have deleted d1).
    runtime.block_on(async {
        DeviceServiceClient::new(channels[0].clone())
            .list_devices(ListDevicesRequest {
                parent: PARENT.into(),
                ..Default::default()
            })
            .await
    })?;
    runtime.block_on(sandbox.stop())?;
    result.map_err(|e| anyhow::anyhow!("{e}"))
}

#[test]
fn oversized_requests_are_refused_before_decoding() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let sandbox = Sandbox::start_with(|c| c.max_request_bytes = 64 * 1024).await?;
        let mut client = sandbox.client().await?;
        let huge = client
            .upload_device_logs(UploadDeviceLogsRequest {
                name: common::device_name("d1"),
                entries: vec![
                    LogEntry {
                        message: "x".repeat(1024),
                        ..Default::default()
                    };
                    100
                ],
            })
            .await
            .expect_err("100 KiB over a 64 KiB limit");
        assert_eq!(huge.code(), Code::OutOfRange, "{}", huge.message());
        sandbox.stop().await
    })
}

/// Sends bytes as they are: the payload need not be a valid message.
#[derive(Clone, Default)]
struct RawCodec;

struct RawEncoder;
struct RawDecoder;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

impl tonic::codec::Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawDecoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        use bytes::Buf;
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

#[test]
fn arbitrary_bytes_get_an_api_code() -> anyhow::Result<()> {
    const METHODS: &[&str] = &[
        "/fleetlog.devices.v1.DeviceService/CreateDevice",
        "/fleetlog.devices.v1.DeviceService/ListDevices",
        "/fleetlog.devices.v1.DeviceService/UploadDeviceLogs",
        "/fleetlog.devices.v1.ProvisioningPolicyService/CreateProvisioningPolicy",
        "/fleetlog.iam.v1.RoleBindingService/CreateRoleBinding",
        "/fleetlog.meta.v1.DeploymentService/BeginUpgrade",
    ];
    let runtime = tokio::runtime::Runtime::new()?;
    let sandbox = runtime.block_on(Sandbox::start())?;
    let channel = runtime.block_on(fleetlog_tests::admin(sandbox.grpc_url()))?;
    let mut runner = TestRunner::new(Config {
        cases: 300,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(
        &(0..METHODS.len(), prop::collection::vec(any::<u8>(), 0..200)),
        |(method, payload)| {
            let answered = runtime.block_on(async {
                let mut grpc = tonic::client::Grpc::new(channel.clone());
                grpc.ready()
                    .await
                    .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
                grpc.unary::<_, Vec<u8>, _>(
                    tonic::Request::new(payload.clone()),
                    tonic::codegen::http::uri::PathAndQuery::from_static(METHODS[method]),
                    RawCodec,
                )
                .await
            });
            let code = code(answered);
            if API_CODES.contains(&code) {
                Ok(())
            } else {
                Err(TestCaseError::fail(format!(
                    "{code:?} is not an API.md code, for {} with {payload:?}",
                    METHODS[method]
                )))
            }
        },
    );
    runtime.block_on(sandbox.stop())?;
    result.map_err(|e| anyhow::anyhow!("{e}"))
}
