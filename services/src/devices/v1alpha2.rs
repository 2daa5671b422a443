//! `fleetlog.devices.v1alpha2`: the previous Devices API, where a device is
//! `projects/{project}/devices/{device}` (not regional) and its logging
//! configuration is flat on the spec; and the transforms between it and v1.
//!
//! A v1alpha2 name maps to v1 in the deployment's region; v1 maps back by
//! dropping the region segment (API.md, "Devices v1alpha2").

use fleetlog_events::{Id, resource_name};
use fleetlog_proto::devices::v1;
use fleetlog_proto::devices::v1alpha2::device_service_server::DeviceService;
use fleetlog_proto::devices::v1alpha2::{
    BatchGetDevicesRequest, BatchGetDevicesResponse, CreateDeviceRequest, DeleteDeviceRequest,
    Device, DeviceChange, DeviceConfig, GetDeviceConfigRequest, GetDeviceRequest, HeartbeatRequest,
    HeartbeatResponse, ListDevicesRequest, ListDevicesResponse,
    ProvisionServiceAccountToDeviceRequest, ProvisionServiceAccountToDeviceResponse,
    QueryDeviceLogsRequest, QueryDeviceLogsResponse, RemoveServiceAccountFromDeviceRequest,
    ServiceAccountKey, UpdateDeviceRequest, UploadDeviceLogsRequest, UploadDeviceLogsResponse,
    WatchDeviceRequest, WatchDeviceResponse, WatchDevicesRequest, WatchDevicesResponse, device,
};
use futures::StreamExt;

use super::agent::{Beat, DeviceAgent};
use super::device::{DeviceName as V1DeviceName, DeviceParent as V1DeviceParent};
use crate::engine::Resource;
use crate::engine::versioned::{Transform, Versioned};

resource_name! {
    /// `projects/{project}/devices/{device}`
    pub struct DeviceName {
        parent DeviceParent { projects: project }
        devices: device
    }
}

impl Resource for Device {
    type Name = DeviceName;
    const FIELD: &'static str = "device";
    const ID_FIELD: &'static str = "device_id";
    const API_VERSION: &'static str = super::V1ALPHA2;
    const AREA: crate::engine::access::Area = crate::engine::access::Area::Devices;

    crate::resource_fields!();

    fn acting_account(&self) -> Option<&str> {
        self.spec
            .as_ref()
            .map(|spec| spec.service_account.as_str())
            .filter(|account| !account.is_empty())
    }
}

/// Field paths that moved: (v1alpha2, v1).
const MOVED_PATHS: &[(&str, &str)] = &[
    (
        "spec.journal_export_enabled",
        "spec.logging_config.enable_journal_export",
    ),
    ("spec.log_priority", "spec.logging_config.priority"),
    ("spec.log_units", "spec.logging_config.units"),
];

/// The v1 message that v1alpha2 flattened into three fields.
const SPLIT_MESSAGE: &str = "spec.logging_config";

/// v1alpha2 → v1, placing devices in the deployment's region. (v1alpha2
/// writes are validated as v1 after this transform.)
#[derive(Clone, Debug)]
pub struct Up {
    region: Id,
}

impl Up {
    pub fn new(region: Id) -> Self {
        Up { region }
    }
}

/// v1 → v1alpha2.
#[derive(Clone, Copy, Debug)]
pub struct Down;

/// `Status` (and the log messages) have the same fields and numbers in both
/// versions: re-decoding the encoding converts them without listing every
/// nested field twice.
pub fn same_shape<A: prost::Message, B: prost::Message + Default>(a: &A) -> B {
    B::decode(a.encode_to_vec().as_slice()).unwrap_or_default()
}

impl Transform for Up {
    type From = Device;
    type To = v1::Device;

    fn resource(&self, old: Device) -> v1::Device {
        // A malformed (or empty) name stays as sent; the engine reports it.
        let name = match old.name.parse::<DeviceName>() {
            Ok(name) => self.name(&name).to_string(),
            Err(_) => old.name.clone(),
        };
        v1::Device {
            name,
            display_name: old.display_name,
            description: old.description,
            metadata: old.metadata,
            spec: old.spec.map(|spec| v1::device::Spec {
                service_account: spec.service_account,
                logging_config: Some(v1::device::spec::LoggingConfig {
                    enable_journal_export: spec.journal_export_enabled,
                    priority: spec.log_priority,
                    units: spec.log_units,
                }),
            }),
            status: old.status.as_ref().map(same_shape),
        }
    }

    fn name(&self, name: &DeviceName) -> V1DeviceName {
        V1DeviceName {
            project: name.project.clone(),
            region: self.region.clone(),
            device: name.device.clone(),
        }
    }

    fn parent(&self, parent: &DeviceParent) -> V1DeviceParent {
        V1DeviceParent {
            project: parent.project.clone(),
            region: self.region.clone(),
        }
    }

    fn paths(&self, path: &str) -> Vec<String> {
        let moved = MOVED_PATHS
            .iter()
            .find(|(old, _)| *old == path)
            .map(|(_, new)| *new);
        vec![moved.unwrap_or(path).to_owned()]
    }
}

impl Transform for Down {
    type From = v1::Device;
    type To = Device;

    fn resource(&self, new: v1::Device) -> Device {
        let name = match new.name.parse::<V1DeviceName>() {
            Ok(name) => self.name(&name).to_string(),
            Err(_) => new.name.clone(),
        };
        Device {
            name,
            display_name: new.display_name,
            description: new.description,
            metadata: new.metadata,
            spec: new.spec.map(|spec| {
                let logging = spec.logging_config.unwrap_or_default();
                device::Spec {
                    service_account: spec.service_account,
                    journal_export_enabled: logging.enable_journal_export,
                    log_priority: logging.priority,
                    log_units: logging.units,
                }
            }),
            status: new.status.as_ref().map(same_shape),
        }
    }

    fn name(&self, name: &V1DeviceName) -> DeviceName {
        DeviceName {
            project: name.project.clone(),
            device: name.device.clone(),
        }
    }

    fn parent(&self, parent: &V1DeviceParent) -> DeviceParent {
        DeviceParent {
            project: parent.project.clone(),
        }
    }

    fn paths(&self, path: &str) -> Vec<String> {
        if path == SPLIT_MESSAGE {
            return MOVED_PATHS
                .iter()
                .map(|(old, _)| (*old).to_owned())
                .collect();
        }
        let moved = MOVED_PATHS
            .iter()
            .find(|(_, new)| *new == path)
            .map(|(old, _)| *old);
        vec![moved.unwrap_or(path).to_owned()]
    }
}

/// The gRPC `fleetlog.devices.v1alpha2.DeviceService`: always served by
/// transformation to the storage version (v1) for commands and watches,
/// natively from the v1alpha2 projection while the region is on v1alpha2.
pub struct DeviceApi {
    engine: Versioned<Up, Down>,
    agent: DeviceAgent,
}

impl DeviceApi {
    pub fn new(engine: Versioned<Up, Down>, agent: DeviceAgent) -> Self {
        DeviceApi { engine, agent }
    }

    /// A v1alpha2 device name as v1 names it (a malformed one stays as sent:
    /// the v1 side reports it, naming the same field).
    fn v1_name(&self, name: &str) -> String {
        self.engine
            .forward_name("name", name)
            .unwrap_or_else(|_| name.to_owned())
    }
}

/// The agent's key as v1alpha2 carries it.
pub fn key_down(key: v1::ServiceAccountKey) -> ServiceAccountKey {
    ServiceAccountKey {
        service_account: key.service_account,
        key_name: key.key_name,
        key: key.key,
    }
}

crate::standard_service! {
    impl DeviceService for DeviceApi {
        resource: Device,
        field: device,
        plural: devices,
        id_field: device_id,
        change: DeviceChange,
        get: get_device(GetDeviceRequest),
        batch_get: batch_get_devices(BatchGetDevicesRequest) -> BatchGetDevicesResponse,
        list: list_devices(ListDevicesRequest) -> ListDevicesResponse,
        watch_one: watch_device(WatchDeviceRequest) -> WatchDeviceResponse, stream WatchDeviceStream,
        watch: watch_devices(WatchDevicesRequest) -> WatchDevicesResponse, stream WatchDevicesStream,
        create: create_device(CreateDeviceRequest),
        update: update_device(UpdateDeviceRequest),
        delete: delete_device(DeleteDeviceRequest),
    }

    async fn provision_service_account_to_device(
        &self,
        request: tonic::Request<ProvisionServiceAccountToDeviceRequest>,
    ) -> Result<tonic::Response<ProvisionServiceAccountToDeviceResponse>, tonic::Status> {
        let caller = self.engine.context().caller(&request)?;
        let r = request.into_inner();
        let done = self
            .agent
            .provision_account(&caller, &self.v1_name(&r.name), &r.request_id)
            .await?;
        Ok(tonic::Response::new(ProvisionServiceAccountToDeviceResponse {
            device: Some(Down.resource(done.device)),
            service_account_key: Some(key_down(done.key)),
        }))
    }

    async fn remove_service_account_from_device(
        &self,
        request: tonic::Request<RemoveServiceAccountFromDeviceRequest>,
    ) -> Result<tonic::Response<Device>, tonic::Status> {
        let caller = self.engine.context().caller(&request)?;
        let r = request.into_inner();
        let device = self
            .agent
            .remove_account(&caller, &self.v1_name(&r.name), &r.request_id)
            .await?;
        Ok(tonic::Response::new(Down.resource(device)))
    }

    async fn heartbeat(
        &self,
        request: tonic::Request<tonic::Streaming<HeartbeatRequest>>,
    ) -> Result<tonic::Response<HeartbeatResponse>, tonic::Status> {
        let caller = self.engine.context().caller(&request)?;
        let beats = request.into_inner().map(|beat| {
            beat.map(|b| Beat {
                name: self.v1_name(&b.name),
                info: b.status.and_then(|s| s.device_info).as_ref().map(same_shape),
            })
        });
        let revision = self.agent.heartbeats(&caller, beats).await?;
        Ok(tonic::Response::new(HeartbeatResponse { revision }))
    }

    async fn get_device_config(
        &self,
        request: tonic::Request<GetDeviceConfigRequest>,
    ) -> Result<tonic::Response<DeviceConfig>, tonic::Status> {
        let caller = self.engine.context().caller(&request)?;
        let r = request.into_inner();
        let config = self.agent.config(&caller, &self.v1_name(&r.name)).await?;
        let device = Down.resource(v1::Device {
            name: config.name,
            spec: config.spec,
            ..Default::default()
        });
        Ok(tonic::Response::new(DeviceConfig {
            name: device.name,
            labels: config.labels,
            spec: device.spec,
            revision: config.revision,
        }))
    }

    async fn upload_device_logs(
        &self,
        request: tonic::Request<UploadDeviceLogsRequest>,
    ) -> Result<tonic::Response<UploadDeviceLogsResponse>, tonic::Status> {
        let caller = self.engine.context().caller(&request)?;
        let r = request.into_inner();
        let entries = r.entries.iter().map(same_shape).collect();
        let done = self.agent.upload(&caller, &self.v1_name(&r.name), entries).await?;
        Ok(tonic::Response::new(same_shape(&done)))
    }

    type QueryDeviceLogsStream = std::pin::Pin<Box<
        dyn futures::Stream<Item = Result<QueryDeviceLogsResponse, tonic::Status>> + Send + 'static,
    >>;

    async fn query_device_logs(
        &self,
        request: tonic::Request<QueryDeviceLogsRequest>,
    ) -> Result<tonic::Response<Self::QueryDeviceLogsStream>, tonic::Status> {
        let caller = self.engine.context().caller(&request)?;
        let r = request.into_inner();
        let query = v1::QueryDeviceLogsRequest {
            name: self.v1_name(&r.name),
            since: r.since,
            units: r.units,
            min_priority: r.min_priority,
        };
        let batches = self.agent.query(&caller, query).await?;
        Ok(tonic::Response::new(Box::pin(batches.map(|batch| {
            batch
                .map(|b| same_shape::<_, QueryDeviceLogsResponse>(&b))
                .map_err(tonic::Status::from)
        }))))
    }
}

#[cfg(test)]
mod tests {
    //! Snapshot tests of every transform, both ways: the expected text is
    //! the snapshot.

    use super::*;
    use crate::engine::versioned::{translate_filter, translate_mask, translate_order};
    use fleetlog_proto::api::v1::Metadata;
    use fleetlog_proto::devices::v1::device::spec::LoggingConfig;

    fn eu1() -> Up {
        Up::new(Id::parse("eu1").expect("valid"))
    }

    fn old_device() -> Device {
        Device {
            name: "projects/p0/devices/d7".into(),
            display_name: "Gate 7".into(),
            description: "north entrance".into(),
            metadata: Some(Metadata {
                labels: [("site".to_owned(), "berlin".to_owned())].into(),
                generation: 3,
                ..Default::default()
            }),
            spec: Some(device::Spec {
                service_account: "projects/p0/serviceAccounts/gate".into(),
                journal_export_enabled: true,
                log_priority: 4,
                log_units: vec!["sshd.service".into(), "agent.service".into()],
            }),
            status: Some(device::Status {
                online: true,
                device_info: Some(device::status::DeviceInfo {
                    hardware_information: Some(device::status::device_info::HardwareInformation {
                        system: Some(device::status::device_info::hardware_information::System {
                            serial_number: "SN-1".into(),
                            manufacturer: "Acme".into(),
                            product_name: "Edge 2".into(),
                        }),
                    }),
                    os_version: "6.1".into(),
                    agent_version: "1.4".into(),
                }),
                last_heartbeat_time: None,
            }),
        }
    }

    #[test]
    fn resource_up_and_down() {
        let new = eu1().resource(old_device());
        assert_eq!(new.name, "projects/p0/regions/eu1/devices/d7");
        assert_eq!(
            new.spec.as_ref().and_then(|s| s.logging_config.clone()),
            Some(LoggingConfig {
                enable_journal_export: true,
                priority: 4,
                units: vec!["sshd.service".into(), "agent.service".into()],
            })
        );
        assert_eq!(
            new.status
                .as_ref()
                .and_then(|s| s.device_info.as_ref())
                .and_then(|i| i.hardware_information.as_ref())
                .and_then(|h| h.system.as_ref())
                .map(|s| s.serial_number.as_str()),
            Some("SN-1")
        );
        assert_eq!(new.metadata, old_device().metadata);
        // And back: nothing lost.
        assert_eq!(Down.resource(new), old_device());
    }

    #[test]
    fn partial_resources_stay_partial() {
        let masked = v1::Device {
            spec: Some(v1::device::Spec {
                logging_config: Some(LoggingConfig {
                    priority: 6,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let old = Down.resource(masked);
        assert_eq!(old.name, "");
        assert_eq!(old.spec.map(|s| s.log_priority), Some(6));
        assert_eq!(eu1().resource(Device::default()), v1::Device::default());
    }

    #[test]
    fn names_and_parents() {
        let old: DeviceName = "projects/p0/devices/d7".parse().expect("valid");
        assert_eq!(
            eu1().name(&old).to_string(),
            "projects/p0/regions/eu1/devices/d7"
        );
        let new: V1DeviceName = "projects/p0/regions/us2/devices/d7".parse().expect("valid");
        assert_eq!(Down.name(&new).to_string(), "projects/p0/devices/d7");
        let parent: DeviceParent = "projects/p0".parse().expect("valid");
        assert_eq!(eu1().parent(&parent).to_string(), "projects/p0/regions/eu1");
        assert_eq!(
            Down.parent(&eu1().parent(&parent)).to_string(),
            "projects/p0"
        );
    }

    fn mask(paths: &[&str]) -> Option<prost_types::FieldMask> {
        Some(prost_types::FieldMask {
            paths: paths.iter().map(|p| (*p).to_owned()).collect(),
        })
    }

    #[test]
    fn masks_both_ways() {
        let up = translate_mask(
            &eu1(),
            mask(&[
                "spec.log_priority",
                "spec.log_units",
                "display_name",
                "status",
            ]),
            "field_mask",
        )
        .expect("valid");
        assert_eq!(
            up.map(|m| m.paths),
            Some(vec![
                "spec.logging_config.priority".to_owned(),
                "spec.logging_config.units".to_owned(),
                "display_name".to_owned(),
                "status".to_owned(),
            ])
        );
        let down = translate_mask(
            &Down,
            mask(&[
                "spec.logging_config",
                "spec.logging_config.enable_journal_export",
            ]),
            "update_mask",
        )
        .expect("valid");
        assert_eq!(
            down.map(|m| m.paths),
            Some(vec![
                "spec.journal_export_enabled".to_owned(),
                "spec.log_priority".to_owned(),
                "spec.log_units".to_owned(),
                "spec.journal_export_enabled".to_owned(),
            ])
        );
        let err = translate_mask(&eu1(), mask(&["spec.logging_config"]), "field_mask")
            .expect_err("v1alpha2 has no logging_config");
        assert!(err.to_string().contains("field_mask"), "{err}");
    }

    #[test]
    fn filters_both_ways() {
        let up = translate_filter(
            &eu1(),
            r#"labels.site = "berlin" AND (spec.log_priority >= 5 OR NOT spec.journal_export_enabled = true) AND spec.log_units:"sshd.service" AND name = "projects/p0/devices/d7""#,
        )
        .expect("valid");
        assert_eq!(
            up,
            r#"metadata.labels.site = "berlin" AND (spec.logging_config.priority >= 5 OR NOT spec.logging_config.enable_journal_export = true) AND spec.logging_config.units:"sshd.service" AND name = "projects/p0/regions/eu1/devices/d7""#
        );
        let down = translate_filter(
            &Down,
            r#"spec.logging_config.priority IN (1, 2) AND status.online = true AND name != "projects/p0/regions/eu1/devices/x""#,
        )
        .expect("valid");
        assert_eq!(
            down,
            r#"spec.log_priority IN (1, 2) AND status.online = true AND name != "projects/p0/devices/x""#
        );
        let err = translate_filter(&Down, "spec.logging_config:*").expect_err("split message");
        assert!(err.to_string().contains("no single counterpart"), "{err}");
        assert_eq!(translate_filter(&eu1(), "").expect("empty"), "");
    }

    #[test]
    fn orders_both_ways() {
        assert_eq!(
            translate_order(&eu1(), "spec.log_priority desc, display_name").expect("valid"),
            "spec.logging_config.priority desc, display_name"
        );
        assert_eq!(
            translate_order(
                &Down,
                "spec.logging_config.priority, metadata.create_time desc"
            )
            .expect("valid"),
            "spec.log_priority, metadata.create_time desc"
        );
        assert_eq!(translate_order(&Down, "").expect("empty"), "");
    }
}
