//! Archived device logs: journal entries agents upload, kept in a
//! per-region JetStream stream for 90 days (not resource events: they
//! never reach a projection). One message per upload, on the device's
//! subject; a query reads the device's subject from `since` on.

use std::time::Duration;

use async_nats::jetstream::{self, consumer::DeliverPolicy, consumer::pull, stream};
use fleetlog_events::{DeviceLogStream, Id, StorageKey};
use fleetlog_proto::devices::v1::device::spec::LoggingConfig;
use fleetlog_proto::devices::v1::{LogEntry, QueryDeviceLogsResponse};
use futures::StreamExt;
use futures::stream::BoxStream;
use prost::Message;

use crate::error::ServiceError;

/// How long entries are kept.
pub const RETENTION: Duration = Duration::from_secs(90 * 24 * 3600);
/// Most entries one upload may carry.
pub const MAX_ENTRIES_PER_UPLOAD: usize = 10_000;
/// Longest message of one entry.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024;
/// Entries per QueryDeviceLogs response message.
const ENTRIES_PER_RESPONSE: usize = 500;
/// journald's least important priority (debug).
const DEBUG: i32 = 7;

/// The archive of one region.
#[derive(Clone)]
pub struct DeviceLogs {
    stream: jetstream::stream::Stream,
    context: jetstream::Context,
    subjects: DeviceLogStream,
}

impl DeviceLogs {
    /// Opens (creating if needed, with `replicas` copies) the region's log
    /// stream.
    pub async fn open(
        client: async_nats::Client,
        region: Id,
        replicas: usize,
    ) -> Result<Self, ServiceError> {
        let subjects = DeviceLogStream::new(region);
        let context = jetstream::new(client);
        let stream = fleetlog_events::log::ensure_stream(
            &context,
            stream::Config {
                name: subjects.stream_name(),
                subjects: vec![subjects.all_subjects()],
                max_age: RETENTION,
                storage: stream::StorageType::File,
                num_replicas: replicas,
                ..Default::default()
            },
        )
        .await?;
        Ok(DeviceLogs {
            stream,
            context,
            subjects,
        })
    }

    /// Stores the entries `config` lets through; returns (stored, filtered).
    pub async fn upload(
        &self,
        device: &StorageKey,
        config: Option<&LoggingConfig>,
        entries: Vec<LogEntry>,
    ) -> Result<(usize, usize), ServiceError> {
        let total = entries.len();
        let kept: Vec<LogEntry> = entries
            .into_iter()
            .filter(|entry| exported(config, entry))
            .collect();
        let stored = kept.len();
        if stored > 0 {
            let batch = QueryDeviceLogsResponse { entries: kept }.encode_to_vec();
            self.context
                .publish(self.subjects.device_subject(device), batch.into())
                .await
                .map_err(|e| ServiceError::Unavailable(format!("storing device logs: {e}")))?
                .await
                .map_err(|e| ServiceError::Unavailable(format!("storing device logs: {e}")))?;
        }
        Ok((stored, total - stored))
    }

    /// The device's entries at or after `since` (seconds since the epoch;
    /// None: everything kept) that pass `wanted`, in batches, oldest first.
    /// The stream ends at the last entry stored when the query began.
    pub async fn query(
        &self,
        device: &StorageKey,
        since: Option<time::OffsetDateTime>,
        wanted: Filter,
    ) -> Result<BoxStream<'static, Result<QueryDeviceLogsResponse, ServiceError>>, ServiceError>
    {
        let unavailable = |e: &dyn std::fmt::Display| {
            ServiceError::Unavailable(format!("reading device logs: {e}"))
        };
        let deliver_policy = match since {
            Some(start_time) => DeliverPolicy::ByStartTime { start_time },
            None => DeliverPolicy::All,
        };
        let mut consumer = self
            .stream
            .create_consumer(pull::OrderedConfig {
                filter_subject: self.subjects.device_subject(device),
                deliver_policy,
                ..Default::default()
            })
            .await
            .map_err(|e| unavailable(&e))?;
        let pending = consumer
            .info()
            .await
            .map_err(|e| unavailable(&e))?
            .num_pending;
        let messages = consumer.messages().await.map_err(|e| unavailable(&e))?;
        let since_seconds = since.map(|t| t.unix_timestamp());
        let entries = messages
            .take(usize::try_from(pending).unwrap_or(usize::MAX))
            .map(move |message| {
                let message = message.map_err(|e| unavailable(&e))?;
                let batch = QueryDeviceLogsResponse::decode(message.payload.as_ref())
                    .map_err(|e| ServiceError::Internal(format!("a stored log batch: {e}")))?;
                Ok::<_, ServiceError>(batch.entries)
            })
            .map(move |batch| {
                batch.map(|entries| {
                    entries
                        .into_iter()
                        .filter(|entry| {
                            since_seconds.is_none_or(|since| {
                                entry.time.as_ref().is_none_or(|t| t.seconds >= since)
                            })
                        })
                        .filter(|entry| wanted(entry))
                        .collect::<Vec<_>>()
                })
            });
        Ok(entries
            .flat_map(|batch| {
                let chunks: Vec<Result<QueryDeviceLogsResponse, ServiceError>> = match batch {
                    Ok(entries) => entries
                        .chunks(ENTRIES_PER_RESPONSE)
                        .map(|chunk| {
                            Ok(QueryDeviceLogsResponse {
                                entries: chunk.to_vec(),
                            })
                        })
                        .collect(),
                    Err(e) => vec![Err(e)],
                };
                futures::stream::iter(chunks)
            })
            .boxed())
    }
}

/// Whether a device with logging config `config` exports `entry`: export
/// enabled, the entry at least as important as the threshold, and of one of
/// the listed units (all units when none are listed).
pub fn exported(config: Option<&LoggingConfig>, entry: &LogEntry) -> bool {
    let Some(config) = config else {
        return false;
    };
    config.enable_journal_export
        && entry.priority <= config.priority
        && (config.units.is_empty() || config.units.contains(&entry.unit))
}

/// A query's filter: the listed units (all when none) and priorities at
/// least as important as `min_priority` (all when unset).
pub fn wanted(units: Vec<String>, min_priority: Option<i32>) -> Filter {
    let threshold = min_priority.unwrap_or(DEBUG);
    Box::new(move |entry| {
        entry.priority <= threshold && (units.is_empty() || units.contains(&entry.unit))
    })
}

/// Which stored entries a query returns.
pub type Filter = Box<dyn Fn(&LogEntry) -> bool + Send + Sync>;

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(priority: i32, unit: &str) -> LogEntry {
        LogEntry {
            priority,
            unit: unit.into(),
            ..Default::default()
        }
    }

    #[test]
    fn export_follows_the_logging_config() {
        let config = LoggingConfig {
            enable_journal_export: true,
            priority: 4,
            units: vec!["sshd.service".into()],
        };
        assert!(exported(Some(&config), &entry(3, "sshd.service")));
        assert!(exported(Some(&config), &entry(4, "sshd.service")));
        assert!(
            !exported(Some(&config), &entry(5, "sshd.service")),
            "less important"
        );
        assert!(
            !exported(Some(&config), &entry(0, "docker.service")),
            "other unit"
        );
        let all_units = LoggingConfig {
            units: vec![],
            ..config.clone()
        };
        assert!(exported(Some(&all_units), &entry(0, "docker.service")));
        let disabled = LoggingConfig {
            enable_journal_export: false,
            ..config
        };
        assert!(!exported(Some(&disabled), &entry(0, "sshd.service")));
        assert!(!exported(None, &entry(0, "sshd.service")));
    }

    #[test]
    fn queries_filter_units_and_priority() {
        let any = wanted(vec![], None);
        assert!(any(&entry(7, "a.service")));
        let important = wanted(vec!["a.service".into()], Some(3));
        assert!(important(&entry(3, "a.service")));
        assert!(!important(&entry(4, "a.service")));
        assert!(!important(&entry(0, "b.service")));
    }
}
