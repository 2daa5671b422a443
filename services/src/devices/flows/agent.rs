//! What a device's agent does with its key — heartbeats, fetching its
//! config, uploading logs — and what operators do to its service account,
//! on v1 types. Both API versions' DeviceService serve these (v1alpha2
//! converts names and messages at its edge).

use std::time::{Duration, SystemTime};

use fleetlog_proto::devices::v1::device::status::DeviceInfo;
use fleetlog_proto::devices::v1::{
    Device, DeviceConfig, LogEntry, QueryDeviceLogsRequest, QueryDeviceLogsResponse,
    UploadDeviceLogsResponse,
};
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};

use super::logs::{self, DeviceLogs, MAX_ENTRIES_PER_UPLOAD, MAX_MESSAGE_BYTES};
use super::provisioning::{Provisioned, Provisioning, Who};
use crate::engine::access::{Access, Caller};
use crate::error::ServiceError;
use fleetlog_model::Resource;
use fleetlog_model::devices::names::DeviceName;

/// The action names heartbeats record.
const HEARTBEAT: &str = "Heartbeat";
const HEARTBEAT_STOPPED: &str = "HeartbeatStopped";
/// Most bytes of a unit name in a log entry.
const MAX_UNIT_NAME: usize = 256;

/// One heartbeat: the device it is for and what the agent reports.
pub struct Beat {
    pub name: String,
    pub info: Option<DeviceInfo>,
}

#[derive(Clone)]
pub struct DeviceAgent {
    flow: Provisioning,
    logs: DeviceLogs,
    /// A device whose agent sends nothing for this long is offline.
    heartbeat_timeout: Duration,
}

impl DeviceAgent {
    pub fn new(flow: Provisioning, logs: DeviceLogs, heartbeat_timeout: Duration) -> Self {
        DeviceAgent {
            flow,
            logs,
            heartbeat_timeout,
        }
    }

    pub async fn provision_account(
        &self,
        caller: &Caller,
        name: &str,
        request_id: &str,
    ) -> Result<Provisioned, ServiceError> {
        let (name, _) = self
            .flow
            .device_for(caller, Who::Role(Access::Write), name)
            .await?;
        self.flow.provision_account(&name, request_id, |_| {}).await
    }

    pub async fn remove_account(
        &self,
        caller: &Caller,
        name: &str,
        request_id: &str,
    ) -> Result<Device, ServiceError> {
        let (name, _) = self
            .flow
            .device_for(caller, Who::Role(Access::Write), name)
            .await?;
        self.flow.remove_device_account(&name, request_id).await
    }

    /// Follows one agent's heartbeat stream until it ends or goes quiet for
    /// the heartbeat timeout; then the device is offline. Returns the
    /// device's revision after the last write.
    pub async fn heartbeats(
        &self,
        caller: &Caller,
        mut beats: impl Stream<Item = Result<Beat, tonic::Status>> + Unpin + Send,
    ) -> Result<i64, ServiceError> {
        let refresh = self.heartbeat_timeout / 2;
        let mut agent_of: Option<DeviceName> = None;
        let mut revision = 0;
        let outcome: Result<(), ServiceError> = async {
            loop {
                let beat = match tokio::time::timeout(self.heartbeat_timeout, beats.next()).await {
                    Ok(Some(Ok(beat))) => beat,
                    // The agent went quiet, hung up or its connection broke.
                    Ok(None) | Ok(Some(Err(_))) | Err(_) => return Ok(()),
                };
                if let Some(name) = &agent_of
                    && beat.name != name.to_string()
                {
                    return Err(ServiceError::invalid(
                        "name",
                        format!("one heartbeat stream reports one device ({name})"),
                    ));
                }
                let (name, device) = self.flow.device_for(caller, Who::Agent, &beat.name).await?;
                let written = self
                    .beat(caller, &name, &device, beat.info, refresh)
                    .await?;
                revision = written
                    .as_ref()
                    .unwrap_or(&device)
                    .metadata
                    .as_ref()
                    .map_or(revision, |m| m.revision);
                agent_of = Some(name);
            }
        }
        .await;
        if let Some(name) = &agent_of {
            // Heartbeats stopped: the device is offline until they resume.
            let offline = self
                .flow
                .devices
                .act(&name.to_string(), HEARTBEAT_STOPPED, 0, "", |d| {
                    d.status.get_or_insert_with(Default::default).online = false;
                    Ok(())
                })
                .await;
            match offline {
                Ok(written) => {
                    revision = written.metadata.as_ref().map_or(revision, |m| m.revision)
                }
                Err(e) => {
                    tracing::warn!(device = %name, error = %e, "could not mark a device offline")
                }
            }
        }
        outcome.map(|()| revision)
    }

    /// Records one heartbeat: online, what the agent reports, the time.
    /// Written when something changed or the last write is `refresh` old,
    /// so a steady heartbeat is not an event per beat.
    async fn beat(
        &self,
        caller: &Caller,
        name: &DeviceName,
        device: &Device,
        reported: Option<DeviceInfo>,
        refresh: Duration,
    ) -> Result<Option<Device>, ServiceError> {
        let status = device.status.clone().unwrap_or_default();
        let stale = status.last_heartbeat_time.is_none_or(|t| {
            let last =
                std::time::UNIX_EPOCH + Duration::from_secs(u64::try_from(t.seconds).unwrap_or(0));
            SystemTime::now().duration_since(last).unwrap_or_default() >= refresh
        });
        let changed = reported
            .as_ref()
            .is_some_and(|r| status.device_info.as_ref() != Some(r));
        if status.online && !stale && !changed {
            return Ok(None);
        }
        let account = caller.account().map(ToString::to_string);
        let written = self
            .flow
            .devices
            .act(&name.to_string(), HEARTBEAT, 0, "", |d| {
                if d.acting_account() != account.as_deref() {
                    return Err(ServiceError::PermissionDenied(format!(
                        "{name} no longer accepts this key"
                    )));
                }
                let status = d.status.get_or_insert_with(Default::default);
                status.online = true;
                if let Some(info) = &reported {
                    status.device_info = Some(info.clone());
                }
                status.last_heartbeat_time = Some(SystemTime::now().into());
                Ok(())
            })
            .await?;
        Ok(Some(written))
    }

    pub async fn config(&self, caller: &Caller, name: &str) -> Result<DeviceConfig, ServiceError> {
        let (name, device) = self
            .flow
            .device_for(caller, Who::AgentOrRole(Access::Read), name)
            .await?;
        let metadata = device.metadata.unwrap_or_default();
        Ok(DeviceConfig {
            name: name.to_string(),
            labels: metadata.labels,
            spec: device.spec,
            revision: metadata.revision,
        })
    }

    pub async fn upload(
        &self,
        caller: &Caller,
        name: &str,
        entries: Vec<LogEntry>,
    ) -> Result<UploadDeviceLogsResponse, ServiceError> {
        let (name, device) = self
            .flow
            .device_for(caller, Who::AgentOrRole(Access::Write), name)
            .await?;
        check_entries(&entries)?;
        let config = device.spec.as_ref().and_then(|s| s.logging_config.as_ref());
        let (accepted, filtered) = self
            .logs
            .upload(&Device::storage_key(&name), config, entries)
            .await?;
        Ok(UploadDeviceLogsResponse {
            accepted: i32::try_from(accepted).unwrap_or(i32::MAX),
            filtered: i32::try_from(filtered).unwrap_or(i32::MAX),
        })
    }

    pub async fn query(
        &self,
        caller: &Caller,
        request: QueryDeviceLogsRequest,
    ) -> Result<BoxStream<'static, Result<QueryDeviceLogsResponse, ServiceError>>, ServiceError>
    {
        let (name, _) = self
            .flow
            .device_for(caller, Who::Role(Access::Read), &request.name)
            .await?;
        fleetlog_proto::rules::check(&request)
            .map_err(|v| ServiceError::invalid(v.path, v.message))?;
        let since = request
            .since
            .map(|t| {
                time::OffsetDateTime::from_unix_timestamp(t.seconds)
                    .map_err(|e| ServiceError::invalid("since", e.to_string()))
            })
            .transpose()?;
        self.logs
            .query(
                &Device::storage_key(&name),
                since,
                logs::wanted(request.units, request.min_priority),
            )
            .await
    }
}

fn check_entries(entries: &[LogEntry]) -> Result<(), ServiceError> {
    if entries.len() > MAX_ENTRIES_PER_UPLOAD {
        return Err(ServiceError::invalid(
            "entries",
            format!(
                "at most {MAX_ENTRIES_PER_UPLOAD} per upload, got {}",
                entries.len()
            ),
        ));
    }
    for (i, entry) in entries.iter().enumerate() {
        // The priority's range is declared in the proto (FieldRules).
        fleetlog_proto::rules::check(entry)
            .map_err(|v| ServiceError::invalid(format!("entries[{i}].{}", v.path), v.message))?;
        if entry.message.len() > MAX_MESSAGE_BYTES {
            return Err(ServiceError::invalid(
                format!("entries[{i}].message"),
                format!("at most {MAX_MESSAGE_BYTES} bytes"),
            ));
        }
        if entry.unit.len() > MAX_UNIT_NAME {
            return Err(ServiceError::invalid(
                format!("entries[{i}].unit"),
                format!("at most {MAX_UNIT_NAME} bytes"),
            ));
        }
    }
    Ok(())
}
