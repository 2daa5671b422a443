//! The region-wide write fence of a version switch (docs/adr/0006).
//!
//! Every api process of a region keeps an entry in one JetStream KV bucket
//! of live processes, refreshed every second and gone [`ENTRY_TTL`] after
//! its last refresh: the Devices version its writes are in, and the switch
//! it has paused writes for. A process that sees SWITCHING closes its own
//! write gate, says so in its entry, and waits until every live entry has
//! paused for that switch (or already writes the target version) before it
//! moves its pointer and writes again, now in the target version. So no
//! process writes the old version once any writes the new one: an
//! old-version write decided on new-version state would drop the fields
//! only the new version has. A process that dies mid-switch drops out by
//! TTL and cannot block the upgrade; one that stays alive but does not
//! pause in time makes the switch give up (writes resume in the old
//! version) and retry.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use fleetlog_events::Id;
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::error::ServiceError;

/// How long an entry outlives its last refresh: the longest a dead process
/// holds up a switch.
pub const ENTRY_TTL: Duration = Duration::from_secs(5);
const REFRESH: Duration = Duration::from_secs(1);
const POLL: Duration = Duration::from_millis(20);

/// What one api process says of itself.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessEntry {
    /// The Devices API version its writes are in.
    pub version: String,
    /// The version it has closed its write gate to switch to; set exactly
    /// while the gate is closed for that switch.
    #[serde(default)]
    pub paused_for: Option<String>,
    /// When it closed the gate (Unix milliseconds), for the pause measured
    /// across processes.
    #[serde(default)]
    pub paused_at_ms: Option<u64>,
}

/// The live processes that a switch to `target` still waits for: neither
/// paused for it nor writing `target` already.
pub fn waiting_for(entries: &[(String, ProcessEntry)], target: &str) -> Vec<String> {
    entries
        .iter()
        .filter(|(_, e)| !(e.paused_for.as_deref() == Some(target) || e.version == target))
        .map(|(name, _)| name.clone())
        .collect()
}

/// When the first process paused for the switch to `target` (Unix
/// milliseconds).
pub fn first_paused_ms(entries: &[(String, ProcessEntry)], target: &str) -> Option<u64> {
    entries
        .iter()
        .filter(|(_, e)| e.paused_for.as_deref() == Some(target))
        .filter_map(|(_, e)| e.paused_at_ms)
        .min()
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// This process's entry in the region's bucket of live api processes.
pub struct Fence {
    kv: kv::Store,
    key: String,
    entry: Mutex<ProcessEntry>,
}

impl Fence {
    /// Joins the region's bucket as `process`, writing `version`.
    pub async fn join(
        client: async_nats::Client,
        region: &Id,
        replicas: usize,
        process: &str,
        version: &str,
    ) -> Result<Arc<Self>, ServiceError> {
        let js = jetstream::new(client);
        let bucket = format!("fleetlog-processes-{region}");
        let kv = match js.get_key_value(&bucket).await {
            Ok(kv) => kv,
            Err(_) => js
                .create_key_value(kv::Config {
                    bucket: bucket.clone(),
                    description: "fleetd api processes of the region, for the switch fence".into(),
                    history: 1,
                    max_age: ENTRY_TTL,
                    num_replicas: replicas,
                    storage: jetstream::stream::StorageType::Memory,
                    ..Default::default()
                })
                .await
                .map_err(|e| {
                    ServiceError::Unavailable(format!("opening the process bucket {bucket}: {e}"))
                })?,
        };
        let fence = Arc::new(Fence {
            kv,
            // KV keys are subject tokens: a dot would split one.
            key: process.replace('.', "_"),
            entry: Mutex::new(ProcessEntry {
                version: version.to_owned(),
                ..Default::default()
            }),
        });
        fence.publish().await?;
        Ok(fence)
    }

    async fn publish(&self) -> Result<(), ServiceError> {
        let entry = self.entry.lock().await.clone();
        let value = serde_json::to_vec(&entry)
            .map_err(|e| ServiceError::Internal(format!("encoding a process entry: {e}")))?;
        self.kv
            .put(&self.key, Bytes::from(value))
            .await
            .map_err(|e| ServiceError::Unavailable(format!("writing the process entry: {e}")))?;
        Ok(())
    }

    /// Changes this process's entry and publishes it at once.
    pub async fn update(&self, change: impl FnOnce(&mut ProcessEntry)) -> Result<(), ServiceError> {
        change(&mut *self.entry.lock().await);
        self.publish().await
    }

    /// Refreshes the entry every second until `stop`, then removes it.
    pub fn keep_alive(self: &Arc<Self>, stop: CancellationToken) -> JoinHandle<()> {
        let fence = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(REFRESH) => {}
                }
                if let Err(err) = fence.publish().await {
                    tracing::warn!(error = %err, "refreshing the process entry failed");
                }
            }
            if let Err(err) = fence.kv.delete(&fence.key).await {
                tracing::debug!(error = %err, "removing the process entry failed");
            }
        })
    }

    /// Every live entry of the region.
    pub async fn entries(&self) -> Result<Vec<(String, ProcessEntry)>, ServiceError> {
        let unavailable = |e: &dyn std::fmt::Display| {
            ServiceError::Unavailable(format!("reading the process bucket: {e}"))
        };
        let keys: Vec<String> = self
            .kv
            .keys()
            .await
            .map_err(|e| unavailable(&e))?
            .try_collect()
            .await
            .map_err(|e| unavailable(&e))?;
        let mut entries = Vec::new();
        for key in keys {
            let Some(value) = self.kv.get(&key).await.map_err(|e| unavailable(&e))? else {
                continue;
            };
            match serde_json::from_slice::<ProcessEntry>(&value) {
                Ok(entry) => entries.push((key, entry)),
                Err(err) => tracing::warn!(key, error = %err, "ignoring a malformed process entry"),
            }
        }
        Ok(entries)
    }

    /// Waits, at most `timeout`, until no live process writes the old
    /// version any more; returns when the first of them paused.
    pub async fn wait_until_all_paused(
        &self,
        target: &str,
        timeout: Duration,
    ) -> Result<Option<u64>, ServiceError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let entries = self.entries().await?;
            let waiting = waiting_for(&entries, target);
            if waiting.is_empty() {
                return Ok(first_paused_ms(&entries, target));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ServiceError::Unavailable(format!(
                    "the switch to {target} waited {timeout:?} for {} to pause writes",
                    waiting.join(", ")
                )));
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(version: &str, paused_for: Option<&str>, at: u64) -> ProcessEntry {
        ProcessEntry {
            version: version.into(),
            paused_for: paused_for.map(str::to_owned),
            paused_at_ms: paused_for.map(|_| at),
        }
    }

    #[test]
    fn a_switch_waits_for_every_live_process_still_writing_the_old_version() {
        // Given two processes on v1alpha2, one paused for the switch to v1.
        let entries = vec![
            ("api-1".to_owned(), entry("v1alpha2", Some("v1"), 1_000)),
            ("api-2".to_owned(), entry("v1alpha2", None, 0)),
        ];
        // Then the switch waits for the other.
        assert_eq!(waiting_for(&entries, "v1"), vec!["api-2".to_owned()]);
        // A pause for another switch (a rollback's) does not count.
        let other = vec![("api-2".to_owned(), entry("v1", Some("v1alpha2"), 1_000))];
        assert_eq!(waiting_for(&other, "v1alpha2"), Vec::<String>::new());
        let other = vec![("api-2".to_owned(), entry("v1beta1", Some("v2"), 1_000))];
        assert_eq!(waiting_for(&other, "v1"), vec!["api-2".to_owned()]);
    }

    #[test]
    fn a_process_already_writing_the_target_or_paused_is_not_waited_for() {
        let entries = vec![
            ("api-1".to_owned(), entry("v1alpha2", Some("v1"), 1_007)),
            ("api-2".to_owned(), entry("v1", None, 0)),
            ("api-3".to_owned(), entry("v1alpha2", Some("v1"), 1_009)),
        ];
        assert!(waiting_for(&entries, "v1").is_empty());
        assert_eq!(first_paused_ms(&entries, "v1"), Some(1_007));
        assert!(waiting_for(&[], "v1").is_empty(), "no process, no wait");
    }

    #[test]
    fn an_entry_reads_back_as_written_and_old_entries_parse() -> Result<(), serde_json::Error> {
        let written = entry("v1alpha2", Some("v1"), 3);
        let read: ProcessEntry = serde_json::from_slice(&serde_json::to_vec(&written)?)?;
        assert_eq!(read, written);
        let minimal: ProcessEntry = serde_json::from_str(r#"{"version":"v1"}"#)?;
        assert_eq!(minimal, entry("v1", None, 0));
        Ok(())
    }
}
