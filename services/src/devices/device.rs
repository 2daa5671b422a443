//! `fleetlog.devices.v1.Device`: the declaration the generic engine needs,
//! and the gRPC service built from it.

use fleetlog_events::{StorageKey, resource_name};
use fleetlog_proto::devices::v1::device_service_server::DeviceService;
use fleetlog_proto::devices::v1::{
    BatchGetDevicesRequest, BatchGetDevicesResponse, CreateDeviceRequest, DeleteDeviceRequest,
    Device, DeviceChange, DeviceConfig, GetDeviceConfigRequest, GetDeviceRequest, HeartbeatRequest,
    HeartbeatResponse, ListDevicesRequest, ListDevicesResponse,
    ProvisionServiceAccountToDeviceRequest, ProvisionServiceAccountToDeviceResponse,
    QueryDeviceLogsRequest, QueryDeviceLogsResponse, RemoveServiceAccountFromDeviceRequest,
    UpdateDeviceRequest, UploadDeviceLogsRequest, UploadDeviceLogsResponse, WatchDeviceRequest,
    WatchDeviceResponse, WatchDevicesRequest, WatchDevicesResponse,
};
use fleetlog_proto::devices::v1alpha2;
use futures::StreamExt;
use prost_reflect::ReflectMessage;

use super::agent::{Beat, DeviceAgent};
use super::v1alpha2::{Down, Up};
use crate::engine::versioned::{Transform, Versioned};
use crate::engine::{FieldViolation, Resource, Wire, decode_own_version};
use crate::error::ServiceError;

resource_name! {
    /// `projects/{project}/regions/{region}/devices/{device}`
    pub struct DeviceName {
        parent DeviceParent { projects: project, regions: region }
        devices: device
    }
}

impl Resource for Device {
    type Name = DeviceName;
    const FIELD: &'static str = "device";
    const ID_FIELD: &'static str = "device_id";
    const API_VERSION: &'static str = super::V1;
    const AREA: crate::engine::access::Area = crate::engine::access::Area::Devices;

    /// v1 is the storage version: it reads events of both versions.
    fn reads_type(type_name: &str) -> bool {
        type_name == Device::default().descriptor().full_name()
            || type_name == v1alpha2::Device::default().descriptor().full_name()
    }

    fn to_wire(&self, version: &str) -> Result<Wire, ServiceError> {
        match version {
            super::V1 => Ok(Wire::of(self, self.name.clone())),
            super::V1ALPHA2 => {
                let old = Down.resource(self.clone());
                Ok(Wire::of(&old, old.name.clone()))
            }
            other => Err(ServiceError::Internal(format!(
                "devices have no API version {other}"
            ))),
        }
    }

    fn from_wire(any: &prost_types::Any, key: &StorageKey) -> Result<Self, ServiceError> {
        let type_name = fleetlog_projections::projection::type_name_of(&any.type_url);
        if type_name == v1alpha2::Device::default().descriptor().full_name() {
            let old: v1alpha2::Device = decode_own_version(any)?;
            let (_, name) = StorageKey::parse::<DeviceName>(key.as_str())
                .map_err(|e| ServiceError::Internal(format!("storage key {key}: {e}")))?;
            return Ok(Up::new(name.region).resource(old));
        }
        decode_own_version(any)
    }

    crate::resource_fields!();

    fn keep_output_only(&mut self, current: Option<&Self>) {
        super::provisioning::keep_bound_account(self, current);
    }

    fn acting_account(&self) -> Option<&str> {
        self.spec
            .as_ref()
            .map(|spec| spec.service_account.as_str())
            .filter(|account| !account.is_empty())
    }

    fn validate(&self) -> Result<(), FieldViolation> {
        // The priority's range is declared in the proto (FieldRules).
        let units = self
            .spec
            .as_ref()
            .and_then(|s| s.logging_config.as_ref())
            .map_or(&[][..], |logging| logging.units.as_slice());
        if let Some(i) = units.iter().position(|u| !is_unit_name(u)) {
            return Err(FieldViolation::new(
                format!("spec.logging_config.units[{i}]"),
                "must be a systemd unit name such as sshd.service",
            ));
        }
        Ok(())
    }
}

/// A permissive check of systemd unit names: non-empty, at most 256
/// characters, no whitespace or control characters, no `/`.
fn is_unit_name(unit: &str) -> bool {
    !unit.is_empty()
        && unit.len() <= 256
        && unit
            .chars()
            .all(|c| !c.is_whitespace() && !c.is_control() && c != '/')
}

/// The gRPC `fleetlog.devices.v1.DeviceService`, on whatever version the
/// region is on (v1 is read-only until the region switches to it), with
/// the agent's custom actions.
pub struct DeviceApi {
    engine: Versioned<Down, Up>,
    agent: DeviceAgent,
}

impl DeviceApi {
    pub fn new(engine: Versioned<Down, Up>, agent: DeviceAgent) -> Self {
        DeviceApi { engine, agent }
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
        let done = self.agent.provision_account(&caller, &r.name, &r.request_id).await?;
        Ok(tonic::Response::new(ProvisionServiceAccountToDeviceResponse {
            device: Some(done.device),
            service_account_key: Some(done.key),
        }))
    }

    async fn remove_service_account_from_device(
        &self,
        request: tonic::Request<RemoveServiceAccountFromDeviceRequest>,
    ) -> Result<tonic::Response<Device>, tonic::Status> {
        let caller = self.engine.context().caller(&request)?;
        let r = request.into_inner();
        let device = self.agent.remove_account(&caller, &r.name, &r.request_id).await?;
        Ok(tonic::Response::new(device))
    }

    async fn heartbeat(
        &self,
        request: tonic::Request<tonic::Streaming<HeartbeatRequest>>,
    ) -> Result<tonic::Response<HeartbeatResponse>, tonic::Status> {
        let caller = self.engine.context().caller(&request)?;
        let beats = request
            .into_inner()
            .map(|beat| beat.map(|b| Beat { name: b.name, info: b.status.and_then(|s| s.device_info) }));
        let revision = self.agent.heartbeats(&caller, beats).await?;
        Ok(tonic::Response::new(HeartbeatResponse { revision }))
    }

    async fn get_device_config(
        &self,
        request: tonic::Request<GetDeviceConfigRequest>,
    ) -> Result<tonic::Response<DeviceConfig>, tonic::Status> {
        let caller = self.engine.context().caller(&request)?;
        let r = request.into_inner();
        Ok(tonic::Response::new(self.agent.config(&caller, &r.name).await?))
    }

    async fn upload_device_logs(
        &self,
        request: tonic::Request<UploadDeviceLogsRequest>,
    ) -> Result<tonic::Response<UploadDeviceLogsResponse>, tonic::Status> {
        let caller = self.engine.context().caller(&request)?;
        let r = request.into_inner();
        Ok(tonic::Response::new(self.agent.upload(&caller, &r.name, r.entries).await?))
    }

    type QueryDeviceLogsStream = std::pin::Pin<Box<
        dyn futures::Stream<Item = Result<QueryDeviceLogsResponse, tonic::Status>> + Send + 'static,
    >>;

    async fn query_device_logs(
        &self,
        request: tonic::Request<QueryDeviceLogsRequest>,
    ) -> Result<tonic::Response<Self::QueryDeviceLogsStream>, tonic::Status> {
        let caller = self.engine.context().caller(&request)?;
        let batches = self.agent.query(&caller, request.into_inner()).await?;
        Ok(tonic::Response::new(Box::pin(
            batches.map(|batch| batch.map_err(tonic::Status::from)),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetlog_proto::devices::v1::device::{Spec, spec::LoggingConfig};

    fn with_logging(priority: i32, units: &[&str]) -> Device {
        Device {
            spec: Some(Spec {
                logging_config: Some(LoggingConfig {
                    priority,
                    units: units.iter().map(|u| u.to_string()).collect(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn validates_priority_and_units() {
        assert_eq!(with_logging(0, &[]).validate(), Ok(()));
        assert_eq!(with_logging(7, &["sshd.service"]).validate(), Ok(()));
        for out_of_range in [8, -1] {
            let err = fleetlog_proto::rules::check(&with_logging(out_of_range, &[]))
                .expect_err("out of range");
            assert_eq!(err.path, "spec.logging_config.priority");
        }
        let err = with_logging(3, &["ok.service", "bad unit"])
            .validate()
            .expect_err("space");
        assert_eq!(err.path, "spec.logging_config.units[1]");
    }

    #[test]
    fn device_names_are_regional() {
        let name: DeviceName = "projects/p0/regions/eu1/devices/d0".parse().expect("valid");
        assert_eq!(name.region.as_str(), "eu1");
        assert!("projects/p0/devices/d0".parse::<DeviceName>().is_err());
    }
}
