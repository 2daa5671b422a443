//! The JetStream log client: the only code that talks to the event streams.
//!
//! * [`EventLog::append`] writes one event with optimistic concurrency
//!   (`Nats-Expected-Last-Subject-Sequence`) and idempotency (`Nats-Msg-Id`),
//!   and resolves the single-server 10071-on-retry trap by reading the
//!   subject's last event back (DESIGN, "JetStream facts").
//! * [`EventLog::last`] reads a resource's current state through the stream
//!   leader, so it is never staler than what the writer just acknowledged.
//! * [`EventLog::follow`] and [`EventLog::watch`] consume the stream for
//!   projectors and watch calls.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::{
    self,
    consumer::{DeliverPolicy, pull},
    context::PublishErrorKind,
    message::PublishMessage,
    stream,
};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use prost::Message as _;

use crate::envelope::{COMMAND_ID_HEADER, CommandId, ResourceChange, Revision, StoredEvent};
use crate::error::LogError;
use crate::name::StorageKey;
use crate::subject::StreamId;

/// How often a conflicting or not-yet-ready write is retried before the
/// caller sees the error.
const WRITE_ATTEMPTS: u32 = 6;

/// The newest server Fleetlog's log client is known to work with and the
/// oldest it accepts. Older servers silently ignore config they do not know
/// (DESIGN, "Server version").
const MIN_SERVER: (u64, u64) = (2, 9);
/// Servers from here on have every JetStream feature Fleetlog uses.
const FULL_FEATURE_SERVER: (u64, u64) = (2, 12);

/// Longest a consumer's pull request waits; idle heartbeats come at half that.
const PULL_EXPIRY: Duration = Duration::from_secs(2);

/// What the connected server can do, read from INFO and the echoed stream
/// config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerFeatures {
    pub version: String,
    /// Atomic batch publish, expected-last-subject-sequence-subject, multiple
    /// consumer filters: all present from 2.12 on.
    pub full: bool,
}

impl ServerFeatures {
    pub fn detect(client: &async_nats::Client) -> Result<Self, LogError> {
        let version = client.server_info().version;
        let parsed = parse_version(&version).ok_or_else(|| LogError::Unsupported {
            feature: "version detection",
            detail: format!("cannot read the server version \"{version}\""),
        })?;
        if parsed < MIN_SERVER {
            return Err(LogError::Unsupported {
                feature: "JetStream per-subject concurrency control",
                detail: format!(
                    "nats-server {version} is older than {}.{}; install nats-server 2.15.1",
                    MIN_SERVER.0, MIN_SERVER.1
                ),
            });
        }
        Ok(ServerFeatures {
            full: parsed >= FULL_FEATURE_SERVER,
            version,
        })
    }
}

fn parse_version(version: &str) -> Option<(u64, u64)> {
    let mut parts = version.trim_start_matches('v').split(['.', '-']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// Where a consumer starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartAt {
    /// The last event of every subject (a compacted snapshot), then the tail.
    LastPerSubject,
    /// Every event after this revision.
    After(Revision),
}

impl StartAt {
    fn deliver_policy(self) -> DeliverPolicy {
        match self {
            StartAt::LastPerSubject => DeliverPolicy::LastPerSubject,
            StartAt::After(Revision(0)) => DeliverPolicy::All,
            StartAt::After(Revision(n)) => DeliverPolicy::ByStartSequence {
                start_sequence: n + 1,
            },
        }
    }
}

/// What an append did.
#[derive(Clone, Debug)]
pub enum Appended {
    /// The event is in the log at this revision.
    Written(Revision),
    /// An earlier attempt of the same command had already written this
    /// event; nothing new was written.
    Earlier(Box<StoredEvent>),
}

/// An event delivered by a consumer, with how many more the server had
/// pending for that consumer when it sent this one.
#[derive(Clone, Debug)]
pub struct Delivered {
    pub event: StoredEvent,
    pub pending: u64,
}

/// A live consumer: its name (so it can be deleted), how many events it had
/// pending when created, and the events.
pub struct Subscription<S> {
    pub consumer_name: String,
    pub pending_at_start: u64,
    pub events: S,
}

/// The log of one service in one region.
#[derive(Clone)]
pub struct EventLog {
    client: async_nats::Client,
    js: jetstream::Context,
    stream: stream::Stream,
    id: StreamId,
    features: ServerFeatures,
    /// The newest revision an append through this handle (or a clone of
    /// it) was acknowledged at: what this process has told a client is
    /// written. Queries wait for their projection to reach it, so a read
    /// sees every write the same process acknowledged before it.
    acknowledged: Arc<AtomicU64>,
}

impl EventLog {
    /// Creates the stream if needed and checks that the server kept the
    /// configuration Fleetlog asked for.
    pub async fn open(client: async_nats::Client, id: StreamId) -> Result<Self, LogError> {
        let features = ServerFeatures::detect(&client)?;
        let js = jetstream::new(client.clone());
        let wanted = stream::Config {
            name: id.stream_name(),
            subjects: vec![id.all_subjects()],
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::Limits,
            discard: stream::DiscardPolicy::New,
            duplicate_window: Duration::from_secs(120),
            allow_direct: true,
            deny_delete: true,
            ..Default::default()
        };
        let mut stream = js
            .get_or_create_stream(wanted.clone())
            .await
            .map_err(|e| LogError::unavailable("creating the event stream", e))?;
        let info = stream
            .info()
            .await
            .map_err(|e| LogError::unavailable("reading the event stream", e))?;
        check_echoed_config(&wanted, &info.config)?;
        let stream = stream.clone();
        Ok(EventLog {
            client,
            js,
            stream,
            id,
            features,
            acknowledged: Arc::default(),
        })
    }

    /// The newest revision an append of this process was acknowledged at
    /// (zero before the first).
    pub fn acknowledged(&self) -> Revision {
        Revision(self.acknowledged.load(Ordering::Acquire))
    }

    fn note_acknowledged(&self, revision: Revision) {
        self.acknowledged
            .fetch_max(revision.get(), Ordering::AcqRel);
    }

    pub fn id(&self) -> &StreamId {
        &self.id
    }

    pub fn features(&self) -> &ServerFeatures {
        &self.features
    }

    /// The sequence of the newest event in the stream.
    pub async fn last_revision(&self) -> Result<Revision, LogError> {
        Ok(Revision(self.state().await?.last_sequence))
    }

    async fn state(&self) -> Result<stream::State, LogError> {
        let mut stream = self.stream.clone();
        let info = stream
            .info()
            .await
            .map_err(|e| LogError::unavailable("reading the stream state", e))?;
        Ok(info.state.clone())
    }

    /// Commands fail fast while the connection is down instead of waiting
    /// out the request timeout; the client reconnects by itself.
    fn ensure_connected(&self) -> Result<(), LogError> {
        match self.client.connection_state() {
            async_nats::connection::State::Connected => Ok(()),
            state => Err(LogError::Unavailable(format!(
                "not connected to NATS ({state})"
            ))),
        }
    }

    /// The last event of a resource, read through the stream leader.
    pub async fn last(&self, key: &StorageKey) -> Result<Option<StoredEvent>, LogError> {
        self.ensure_connected()?;
        let subject = self.id.resource_subject(key);
        match self.stream.get_last_raw_message_by_subject(&subject).await {
            Ok(message) => Ok(Some(StoredEvent::decode(
                Revision(message.sequence),
                message.subject.as_str(),
                &message.payload,
            )?)),
            Err(err) => match err.kind() {
                stream::LastRawMessageErrorKind::NoMessageFound => Ok(None),
                _ => Err(LogError::unavailable("reading the current state", err)),
            },
        }
    }

    /// The sequence of the newest event on any subject matching `filter`
    /// (a wildcard such as one shard's subjects); `Revision::NONE` if none.
    pub async fn last_revision_on(&self, filter: &str) -> Result<Revision, LogError> {
        self.ensure_connected()?;
        match self.stream.get_last_raw_message_by_subject(filter).await {
            Ok(message) => Ok(Revision(message.sequence)),
            Err(err) => match err.kind() {
                stream::LastRawMessageErrorKind::NoMessageFound => Ok(Revision::NONE),
                _ => Err(LogError::unavailable(
                    "reading the last event of a subject filter",
                    err,
                )),
            },
        }
    }

    /// One event by sequence.
    pub async fn get(&self, revision: Revision) -> Result<StoredEvent, LogError> {
        let message = self
            .stream
            .get_raw_message(revision.get())
            .await
            .map_err(|e| LogError::unavailable("reading an event", e))?;
        StoredEvent::decode(revision, message.subject.as_str(), &message.payload)
    }

    /// Appends `change` to the resource's subject, expecting the subject's
    /// last event to be `expected` (`Revision::NONE`: no event yet).
    ///
    /// A retry of a command that already succeeded writes nothing and
    /// returns that first event, whether the server reports it as a
    /// duplicate or (a single 2.12+ server) as a wrong last sequence.
    pub async fn append(
        &self,
        key: &StorageKey,
        change: &ResourceChange,
        expected: Revision,
        command: &CommandId,
    ) -> Result<Appended, LogError> {
        let appended = self.append_once(key, change, expected, command).await?;
        self.note_acknowledged(match &appended {
            Appended::Written(revision) => *revision,
            Appended::Earlier(event) => event.revision,
        });
        Ok(appended)
    }

    async fn append_once(
        &self,
        key: &StorageKey,
        change: &ResourceChange,
        expected: Revision,
        command: &CommandId,
    ) -> Result<Appended, LogError> {
        self.ensure_connected()?;
        let subject = self.id.resource_subject(key);
        let payload = Bytes::from(change.encode_to_vec());
        // Scoped by subject: a client reusing a request id for another
        // resource must not be answered with the first resource's event.
        let message_id = format!("{command}@{key}");
        let mut backoff = Duration::from_millis(5);
        for attempt in 1..=WRITE_ATTEMPTS {
            let publish = PublishMessage::build()
                .payload(payload.clone())
                .message_id(&message_id)
                .expected_last_subject_sequence(expected.get())
                .header(COMMAND_ID_HEADER, command.as_str());
            let outcome = match self.js.send_publish(subject.clone(), publish).await {
                Ok(ack) => ack.await,
                Err(err) => Err(err),
            };
            match outcome {
                Ok(ack) if ack.duplicate => {
                    return Ok(Appended::Earlier(Box::new(
                        self.get(Revision(ack.sequence)).await?,
                    )));
                }
                Ok(ack) => return Ok(Appended::Written(Revision(ack.sequence))),
                Err(err) => match classify_publish_error(&err) {
                    PublishFailure::WrongLastSequence => {
                        // On a single 2.12+ server an identical retry lands
                        // here instead of being reported as a duplicate.
                        return match self.last(key).await? {
                            Some(last) if last.change.command_id == command.as_str() => {
                                Ok(Appended::Earlier(Box::new(last)))
                            }
                            _ => Err(LogError::WrongLastSequence {
                                subject,
                                expected: expected.get(),
                            }),
                        };
                    }
                    PublishFailure::Transient if attempt < WRITE_ATTEMPTS => {
                        tracing::debug!(%subject, attempt, error = %err, "retrying write");
                        tokio::time::sleep(backoff).await;
                        backoff *= 2;
                    }
                    PublishFailure::Transient => return Err(LogError::Conflict { subject }),
                    PublishFailure::Unavailable => {
                        return Err(LogError::unavailable("appending an event", err));
                    }
                },
            }
        }
        Err(LogError::Conflict { subject })
    }

    /// Follows the whole stream from `start`, in order, for a projector.
    pub async fn follow(
        &self,
        start: StartAt,
    ) -> Result<
        Subscription<impl Stream<Item = Result<Delivered, LogError>> + Send + Unpin + use<>>,
        LogError,
    > {
        self.subscribe(self.id.all_subjects(), start, None).await
    }

    /// Follows one subject filter (a resource or a collection) for a watch
    /// call. The consumer is named so the caller can delete it when the
    /// client goes away.
    pub async fn watch(
        &self,
        filter_subject: String,
        start: StartAt,
        name: String,
    ) -> Result<
        Subscription<impl Stream<Item = Result<Delivered, LogError>> + Send + Unpin + use<>>,
        LogError,
    > {
        self.subscribe(filter_subject, start, Some(name)).await
    }

    async fn subscribe(
        &self,
        filter_subject: String,
        start: StartAt,
        name: Option<String>,
    ) -> Result<
        Subscription<impl Stream<Item = Result<Delivered, LogError>> + Send + Unpin + use<>>,
        LogError,
    > {
        let config = pull::OrderedConfig {
            name,
            filter_subject,
            deliver_policy: start.deliver_policy(),
            // Short pulls mean 1 s idle heartbeats: after a server restart
            // the consumer notices it is gone and is recreated within
            // seconds, not the 30 s of the default expiry.
            max_expires: PULL_EXPIRY,
            ..Default::default()
        };
        let mut consumer = self
            .stream
            .create_consumer(config)
            .await
            .map_err(|e| LogError::unavailable("creating a consumer", e))?;
        let info = consumer
            .info()
            .await
            .map_err(|e| LogError::unavailable("reading a consumer", e))?
            .clone();
        let messages = consumer
            .messages()
            .await
            .map_err(|e| LogError::unavailable("starting a consumer", e))?;
        let events = messages.map(|message| {
            let message = message.map_err(|e| LogError::unavailable("consuming events", e))?;
            let info = message
                .info()
                .map_err(|e| LogError::unavailable("reading event metadata", e))?;
            let revision = Revision(info.stream_sequence);
            let pending = info.pending;
            let event = StoredEvent::decode(revision, message.subject.as_str(), &message.payload)?;
            Ok(Delivered { event, pending })
        });
        Ok(Subscription {
            consumer_name: info.name,
            pending_at_start: info.num_pending,
            events: Box::pin(events),
        })
    }

    /// Deletes a consumer made by [`EventLog::watch`]. Missing consumers are
    /// fine: the server may have reaped it already.
    pub async fn delete_consumer(&self, name: &str) {
        if let Err(err) = self.stream.delete_consumer(name).await {
            tracing::debug!(consumer = name, error = %err, "consumer already gone");
        }
    }

    /// How many consumers the stream has (tests and metrics).
    pub async fn consumer_count(&self) -> Result<usize, LogError> {
        Ok(self.state().await?.consumer_count)
    }
}

enum PublishFailure {
    WrongLastSequence,
    /// Worth retrying: another write in flight (10164), a duplicate still in
    /// process (10158), a new leader not ready (10163).
    Transient,
    Unavailable,
}

fn classify_publish_error(err: &jetstream::context::PublishError) -> PublishFailure {
    match err.kind() {
        PublishErrorKind::WrongLastSequence => PublishFailure::WrongLastSequence,
        PublishErrorKind::Other => {
            let code = std::error::Error::source(err)
                .and_then(|source| source.downcast_ref::<jetstream::Error>())
                .map(|e| e.error_code().0);
            match code {
                Some(10164 | 10158 | 10163) => PublishFailure::Transient,
                _ => PublishFailure::Unavailable,
            }
        }
        _ => PublishFailure::Unavailable,
    }
}

/// Older servers drop config fields they do not know instead of failing;
/// compare what came back with what was asked.
fn check_echoed_config(wanted: &stream::Config, echoed: &stream::Config) -> Result<(), LogError> {
    let mismatch =
        |feature: &'static str, detail: String| LogError::Unsupported { feature, detail };
    if echoed.subjects != wanted.subjects {
        return Err(mismatch(
            "the stream's subjects",
            format!(
                "stream {} exists with subjects {:?}, expected {:?}",
                wanted.name, echoed.subjects, wanted.subjects
            ),
        ));
    }
    if echoed.allow_direct != wanted.allow_direct {
        return Err(mismatch(
            "direct get",
            "the server ignored allow_direct".into(),
        ));
    }
    if echoed.duplicate_window != wanted.duplicate_window {
        return Err(mismatch(
            "message deduplication",
            format!("duplicate window is {:?}", echoed.duplicate_window),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_server_versions() {
        assert_eq!(parse_version("2.15.1"), Some((2, 15)));
        assert_eq!(parse_version("v2.9.10"), Some((2, 9)));
        assert_eq!(parse_version("2.12.0-beta.1"), Some((2, 12)));
        assert_eq!(parse_version("garbage"), None);
    }

    #[test]
    fn start_positions_map_to_deliver_policies() {
        assert_eq!(
            StartAt::After(Revision(0)).deliver_policy(),
            DeliverPolicy::All
        );
        assert_eq!(
            StartAt::After(Revision(41)).deliver_policy(),
            DeliverPolicy::ByStartSequence { start_sequence: 42 }
        );
        assert_eq!(
            StartAt::LastPerSubject.deliver_policy(),
            DeliverPolicy::LastPerSubject
        );
    }
}
