//! The devices the benchmark writes, and the events fleetd would append for
//! them, published raw (pipelined) for the baselines and for seeding.

use std::collections::{HashMap, VecDeque};
use std::time::SystemTime;

use async_nats::jetstream::{self, context::PublishAckFuture, message::PublishMessage};
use fleetlog_events::envelope::COMMAND_ID_HEADER;
use fleetlog_events::{CommandId, ShardId, StorageKey, StreamId};
use fleetlog_model::SHARD_LABEL;
use fleetlog_model::devices::names::DeviceName;
use fleetlog_proto::api::v1::Metadata;
use fleetlog_proto::devices::v1::Device;
use fleetlog_proto::devices::v1::device::{Spec, spec::LoggingConfig};
use fleetlog_proto::events::v1::ResourceChange;
use fleetlog_proto::events::v1::resource_change::Kind;
use prost::Message;

use crate::cluster::REGION;

pub const DEVICE_TYPE_URL: &str = "type.googleapis.com/fleetlog.devices.v1.Device";

/// Every tenth device is in Berlin, so a label filter matches 10 %.
pub const FILTER: &str = "labels.site = \"berlin\"";

pub fn site(index: u64) -> &'static str {
    if index.is_multiple_of(10) {
        "berlin"
    } else {
        "lisbon"
    }
}

pub fn parent(project: &str) -> String {
    format!("projects/{project}/regions/{REGION}")
}

pub fn device_name(project: &str, id: &str) -> String {
    format!("{}/devices/{id}", parent(project))
}

/// What a client sends to create a device (fleetd stamps the metadata).
pub fn new_device(site: &str) -> Device {
    Device {
        display_name: "bench device".into(),
        metadata: Some(Metadata {
            labels: HashMap::from([("site".to_owned(), site.to_owned())]),
            ..Default::default()
        }),
        spec: Some(Spec {
            logging_config: Some(LoggingConfig {
                priority: 4,
                enable_journal_export: true,
                units: vec!["sshd.service".into(), "fleet-agent.service".into()],
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A device's create event exactly as the command path writes it: the device with
/// its metadata stamped, on the resource's subject.
pub struct DeviceEvent {
    pub subject: String,
    pub key: StorageKey,
    pub change: ResourceChange,
}

impl DeviceEvent {
    pub fn new(stream: &StreamId, project: &str, id: &str, site: &str) -> anyhow::Result<Self> {
        let name: DeviceName = device_name(project, id).parse()?;
        let key = StorageKey::from_name(&name);
        let now = prost_types::Timestamp::from(SystemTime::now());
        let mut device = new_device(site);
        device.name = name.to_string();
        let metadata = device.metadata.get_or_insert_default();
        metadata.create_time = Some(now);
        metadata.update_time = Some(now);
        metadata.generation = 1;
        metadata.shards =
            HashMap::from([(SHARD_LABEL.to_owned(), i64::from(ShardId::of(&key).index()))]);
        metadata.owning_region = REGION.to_owned();
        let change = ResourceChange {
            kind: Kind::Created as i32,
            storage_key: key.to_string(),
            resource: Some(prost_types::Any {
                type_url: DEVICE_TYPE_URL.into(),
                value: device.encode_to_vec(),
            }),
            update_mask: None,
            action: String::new(),
            api_version: "v1".into(),
            actor: "bench".into(),
            command_id: CommandId::generate().as_str().to_owned(),
            time: Some(now),
        };
        Ok(DeviceEvent {
            subject: stream.resource_subject(&key),
            key,
            change,
        })
    }

    /// The same device changed again by another command (an update).
    pub fn updated(&self) -> Self {
        let mut change = self.change.clone();
        change.kind = Kind::Updated as i32;
        change.command_id = CommandId::generate().as_str().to_owned();
        change.time = Some(prost_types::Timestamp::from(SystemTime::now()));
        DeviceEvent {
            subject: self.subject.clone(),
            key: self.key.clone(),
            change,
        }
    }

    /// The publish the log client makes: payload, idempotency key, command
    /// id header and the subject's expected last sequence.
    pub fn publish(&self, expected_last_sequence: u64) -> (String, PublishMessage) {
        let command = &self.change.command_id;
        let message = PublishMessage::build()
            .payload(self.change.encode_to_vec().into())
            .message_id(format!("{command}@{}", self.key))
            .expected_last_subject_sequence(expected_last_sequence)
            .header(COMMAND_ID_HEADER, command.as_str());
        (self.subject.clone(), message)
    }
}

/// Publishes with up to `window` acks outstanding and returns each
/// message's stream sequence, in order.
pub async fn publish_pipelined(
    js: &jetstream::Context,
    messages: impl IntoIterator<Item = (String, PublishMessage)>,
    window: usize,
) -> anyhow::Result<Vec<u64>> {
    let mut in_flight: VecDeque<PublishAckFuture> = VecDeque::with_capacity(window);
    let mut sequences = Vec::new();
    for (subject, message) in messages {
        if in_flight.len() >= window
            && let Some(ack) = in_flight.pop_front()
        {
            sequences.push(ack.await?.sequence);
        }
        in_flight.push_back(js.send_publish(subject, message).await?);
    }
    for ack in in_flight {
        sequences.push(ack.await?.sequence);
    }
    Ok(sequences)
}
