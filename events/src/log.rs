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

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

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

/// The first pause before a transient failure is retried; it doubles up to
/// [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(5);
const MAX_BACKOFF: Duration = Duration::from_millis(500);
/// Longest one attempt waits for its answer: an answer lost with a node
/// (the write may have been stored) is retried with the same message ID and
/// expected sequence, which the stream recognises. 1 s is far above a
/// publish's p99 under load (tens of ms) and keeps the retries of an
/// election inside its 4-9 s: at 3 s two or three lost answers in a row
/// made calls of 6-9 s (fleetlog-bench failover).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(1);

tokio::task_local! {
    /// When the call this task serves must be answered (its client's
    /// deadline less a margin): log calls inside it stop retrying then.
    static CALL_DEADLINE: Instant;
}

/// Runs `call` with `deadline` ending the retries of every log call in it,
/// when that comes before the log's own [`LogOptions::retry_for`].
pub async fn answer_by<F: Future>(deadline: Instant, call: F) -> F::Output {
    CALL_DEADLINE.scope(deadline, call).await
}

/// How the streams are kept and how long calls ride out a cluster's
/// transient states.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogOptions {
    /// Copies of the stream: 1 on one server, 3 on a three-node cluster.
    pub replicas: usize,
    /// Longest a call retries a transient state (a leader election, a
    /// reconnect to another node, a write to the subject in flight) before
    /// it fails as unavailable.
    pub retry_for: Duration,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            replicas: 1,
            retry_for: Duration::from_secs(10),
        }
    }
}

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

/// A read copy's view of how current it is. `lag` is set from the last
/// message the mirror received, so it freezes during a partition;
/// `since_active` (the time since the mirror last heard from its origin,
/// refreshed by a heartbeat every second) is the staleness signal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CopyState {
    /// The newest revision the copy holds.
    pub last: Revision,
    /// Events the origin had that the copy did not, when it last heard.
    pub lag: u64,
    /// Since the copy last heard from its origin; None before it ever did.
    pub since_active: Option<Duration>,
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
    options: LogOptions,
    /// A read copy (a mirror of another region's stream): appends are
    /// refused, since over a leafnode they would land in the owner's
    /// stream, past its command checks.
    copy: bool,
    /// The newest revision an append through this handle (or a clone of
    /// it) was acknowledged at: what this process has told a client is
    /// written. Queries wait for their projection to reach it, so a read
    /// sees every write the same process acknowledged before it.
    acknowledged: Arc<AtomicU64>,
}

impl EventLog {
    /// [`EventLog::open_with`] the default options: one replica.
    pub async fn open(client: async_nats::Client, id: StreamId) -> Result<Self, LogError> {
        Self::open_with(client, id, LogOptions::default()).await
    }

    /// Creates the stream if needed, scales an existing one to
    /// `options.replicas`, and checks that the server kept the
    /// configuration Fleetlog asked for.
    pub async fn open_with(
        client: async_nats::Client,
        id: StreamId,
        options: LogOptions,
    ) -> Result<Self, LogError> {
        let wanted = stream::Config {
            subjects: vec![id.all_subjects()],
            discard: stream::DiscardPolicy::New,
            duplicate_window: Duration::from_secs(120),
            ..kept_as(&id, options)
        };
        Self::open_as(client, id, options, wanted).await
    }

    /// A read copy, in the connected region, of `id`'s stream, which the
    /// region `id.region()` owns: a JetStream mirror of it from that
    /// region's domain (`$JS.<region>.API`), created if needed. A mirror
    /// keeps the origin's sequence numbers, so every revision read here is
    /// the owner's. Appends are refused ([`LogError::ReadCopy`]).
    pub async fn open_copy(
        client: async_nats::Client,
        id: StreamId,
        options: LogOptions,
    ) -> Result<Self, LogError> {
        let wanted = stream::Config {
            mirror: Some(stream::Source {
                name: id.stream_name(),
                external: Some(stream::External {
                    api_prefix: format!("$JS.{}.API", id.region()),
                    delivery_prefix: None,
                }),
                ..Default::default()
            }),
            ..kept_as(&id, options)
        };
        Self::open_as(client, id, options, wanted).await
    }

    /// Creates or scales the stream `wanted` describes, checks what the
    /// server echoed, and opens it (a read copy when it is a mirror).
    async fn open_as(
        client: async_nats::Client,
        id: StreamId,
        options: LogOptions,
        wanted: stream::Config,
    ) -> Result<Self, LogError> {
        let features = ServerFeatures::detect(&client)?;
        let js = jetstream::new(client.clone());
        let stream = ensure_stream(&js, wanted.clone()).await?;
        let mut echoed = stream.clone();
        let info = echoed
            .info()
            .await
            .map_err(|e| LogError::unavailable("reading the event stream", e))?;
        check_echoed_config(&wanted, &info.config)?;
        Ok(EventLog {
            client,
            js,
            stream,
            id,
            features,
            options,
            copy: wanted.mirror.is_some(),
            acknowledged: Arc::default(),
        })
    }

    /// Whether this is a read copy of another region's stream.
    pub fn is_copy(&self) -> bool {
        self.copy
    }

    /// How far a read copy is behind its origin, as far as it knows. None
    /// for a stream this region owns.
    pub async fn copy_state(&self) -> Result<Option<CopyState>, LogError> {
        if !self.copy {
            return Ok(None);
        }
        let mut stream = self.stream.clone();
        let info = stream
            .info()
            .await
            .map_err(|e| LogError::unavailable("reading the read copy", e))?;
        Ok(Some(CopyState {
            last: Revision(info.state.last_sequence),
            lag: info.mirror.as_ref().map_or(0, |m| m.lag),
            since_active: info.mirror.as_ref().and_then(|m| m.active),
        }))
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
        let this = self;
        self.retrying("reading the stream state", "", move || async move {
            this.check_connected()?;
            let mut stream = this.stream.clone();
            match stream.info().await {
                Ok(info) => Ok(info.state.clone()),
                Err(err) => Err(Failure::transient(err.to_string())),
            }
        })
        .await
    }

    /// While the connection is down an attempt is not even sent: the
    /// client reconnects by itself (to another node of a cluster), and the
    /// call retries until then or its deadline.
    fn check_connected(&self) -> Result<(), Failure> {
        match self.client.connection_state() {
            async_nats::connection::State::Connected => Ok(()),
            state => Err(Failure::transient(format!(
                "not connected to NATS ({state})"
            ))),
        }
    }

    /// When the current call's retries end: the log's own budget, or the
    /// caller's deadline when that comes first.
    fn retry_until(&self) -> Instant {
        let own = Instant::now() + self.options.retry_for;
        CALL_DEADLINE
            .try_with(|deadline| (*deadline).min(own))
            .unwrap_or(own)
    }

    /// Runs `attempt` until it succeeds or fails for good, retrying its
    /// transient failures with backoff until [`Self::retry_until`]; an
    /// attempt without an answer in time counts as transient. `what` names
    /// the call in the error; `subject` is the one a write conflicted on.
    async fn retrying<T, F>(
        &self,
        what: &str,
        subject: &str,
        mut attempt: impl FnMut() -> F,
    ) -> Result<T, LogError>
    where
        F: Future<Output = Result<T, Failure>>,
    {
        let until = self.retry_until();
        let mut backoff = FIRST_BACKOFF;
        let mut tries = 0u32;
        loop {
            tries += 1;
            let attempt_ends = until.min(Instant::now() + ATTEMPT_TIMEOUT);
            let failure = match tokio::time::timeout_at(attempt_ends, attempt()).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(failure)) => failure,
                Err(_) => Failure::transient(format!("no answer within {ATTEMPT_TIMEOUT:?}")),
            };
            let (reason, in_flight) = match failure {
                Failure::Final(err) => return Err(err),
                Failure::Transient { reason, in_flight } => (reason, in_flight),
            };
            if Instant::now() + backoff >= until {
                return Err(if in_flight {
                    LogError::Conflict {
                        subject: subject.to_owned(),
                    }
                } else {
                    LogError::Unavailable(format!("{what}: {reason} (tried {tries} times)"))
                });
            }
            tracing::debug!(subject, tries, reason, "retrying {what}");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// The last event of a resource, read through the stream leader.
    pub async fn last(&self, key: &StorageKey) -> Result<Option<StoredEvent>, LogError> {
        let subject = self.id.resource_subject(key);
        self.last_on(&subject).await
    }

    async fn last_on(&self, subject: &str) -> Result<Option<StoredEvent>, LogError> {
        let this = self;
        let message = self
            .retrying("reading the current state", subject, move || async move {
                this.check_connected()?;
                match this.stream.get_last_raw_message_by_subject(subject).await {
                    Ok(message) => Ok(Some(message)),
                    Err(err) => match err.kind() {
                        stream::LastRawMessageErrorKind::NoMessageFound => Ok(None),
                        // No leader yet, or none reachable: it comes back.
                        _ => Err(Failure::transient(err.to_string())),
                    },
                }
            })
            .await?;
        message
            .map(|message| {
                StoredEvent::decode(
                    Revision(message.sequence),
                    message.subject.as_str(),
                    &message.payload,
                )
            })
            .transpose()
    }

    /// The sequence of the newest event on any subject matching `filter`
    /// (a wildcard such as one shard's subjects); `Revision::NONE` if none.
    pub async fn last_revision_on(&self, filter: &str) -> Result<Revision, LogError> {
        let this = self;
        self.retrying(
            "reading the last event of a subject filter",
            filter,
            move || async move {
                this.check_connected()?;
                match this.stream.get_last_raw_message_by_subject(filter).await {
                    Ok(message) => Ok(Revision(message.sequence)),
                    Err(err) => match err.kind() {
                        stream::LastRawMessageErrorKind::NoMessageFound => Ok(Revision::NONE),
                        _ => Err(Failure::transient(err.to_string())),
                    },
                }
            },
        )
        .await
    }

    /// One event by sequence, through the stream leader.
    pub async fn get(&self, revision: Revision) -> Result<StoredEvent, LogError> {
        let this = self;
        let message = self
            .retrying("reading an event", "", move || async move {
                this.check_connected()?;
                this.stream
                    .get_raw_message(revision.get())
                    .await
                    .map_err(|e| Failure::transient(e.to_string()))
            })
            .await?;
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
        if self.copy {
            return Err(LogError::ReadCopy {
                stream: self.id.stream_name(),
                owner: self.id.region().to_string(),
            });
        }
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
        let subject = self.id.resource_subject(key);
        let payload = Bytes::from(change.encode_to_vec());
        // Scoped by subject: a client reusing a request id for another
        // resource must not be answered with the first resource's event.
        let message_id = format!("{command}@{key}");
        // Every attempt sends the same message ID and expected sequence, so
        // a retry of a write that was stored after all (its answer lost
        // with a node) is recognised, never written twice.
        let (this, payload, message_id, target) = (self, &payload, &message_id, &subject);
        let published = self
            .retrying("appending an event", &subject, move || async move {
                this.check_connected()?;
                let publish = PublishMessage::build()
                    .payload(payload.clone())
                    .message_id(message_id)
                    .expected_last_subject_sequence(expected.get())
                    .header(COMMAND_ID_HEADER, command.as_str());
                let outcome = match this.js.send_publish(target.clone(), publish).await {
                    Ok(ack) => ack.await,
                    Err(err) => Err(err),
                };
                match outcome {
                    Ok(ack) => Ok(Ok(ack)),
                    Err(err) => match classify_publish_error(&err) {
                        PublishFailure::WrongLastSequence => Ok(Err(())),
                        PublishFailure::InFlight => Err(Failure::in_flight(err.to_string())),
                        PublishFailure::NoLeader => Err(Failure::transient(err.to_string())),
                        PublishFailure::Unavailable => Err(Failure::Final(LogError::unavailable(
                            "appending an event",
                            err,
                        ))),
                    },
                }
            })
            .await?;
        match published {
            // R3 checks the message ID before the expected sequence: an
            // identical retry of a stored write is a duplicate.
            Ok(ack) if ack.duplicate => Ok(Appended::Earlier(Box::new(
                self.get(Revision(ack.sequence)).await?,
            ))),
            Ok(ack) => Ok(Appended::Written(Revision(ack.sequence))),
            // A single 2.12+ server answers an identical retry with a wrong
            // last sequence instead.
            Err(()) => match self.last_on(&subject).await? {
                Some(last) if last.change.command_id == command.as_str() => {
                    Ok(Appended::Earlier(Box::new(last)))
                }
                _ => Err(LogError::WrongLastSequence {
                    subject,
                    expected: expected.get(),
                }),
            },
        }
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

/// Why one attempt of a log call failed.
enum Failure {
    /// It passes by itself: an election, a reconnect, a write in flight
    /// (`in_flight`: another write to the same subject, or a duplicate of
    /// this one, was still being stored).
    Transient { reason: String, in_flight: bool },
    /// Retrying cannot help.
    Final(LogError),
}

impl Failure {
    fn transient(reason: String) -> Self {
        Failure::Transient {
            reason,
            in_flight: false,
        }
    }

    fn in_flight(reason: String) -> Self {
        Failure::Transient {
            reason,
            in_flight: true,
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum PublishFailure {
    WrongLastSequence,
    /// Another write to the subject still in flight (10164), a duplicate
    /// of this one still being stored (10158).
    InFlight,
    /// No stream leader answers yet: during an election only the leader
    /// subscribes to the stream's subjects, so a publish gets "no
    /// responders" (async-nats: `StreamNotFound`), or 10008 (cluster not
    /// available), or 10163 (a new leader not ready); an answer that timed
    /// out or a connection that broke mid-publish passes too.
    NoLeader,
    Unavailable,
}

fn classify_publish_error(err: &jetstream::context::PublishError) -> PublishFailure {
    let code = std::error::Error::source(err)
        .and_then(|source| source.downcast_ref::<jetstream::Error>())
        .map(|e| e.error_code().0);
    classify_publish(err.kind(), code)
}

fn classify_publish(kind: PublishErrorKind, code: Option<u64>) -> PublishFailure {
    match (kind, code) {
        (PublishErrorKind::WrongLastSequence, _) => PublishFailure::WrongLastSequence,
        (PublishErrorKind::Other, Some(10164 | 10158)) => PublishFailure::InFlight,
        (PublishErrorKind::Other, Some(10008 | 10163)) => PublishFailure::NoLeader,
        (
            PublishErrorKind::StreamNotFound
            | PublishErrorKind::TimedOut
            | PublishErrorKind::BrokenPipe
            | PublishErrorKind::MaxAckPending,
            _,
        ) => PublishFailure::NoLeader,
        _ => PublishFailure::Unavailable,
    }
}

/// Creates the stream `wanted` describes, or finds it and scales it to the
/// wanted replica count (a region grown from one server to a cluster), and
/// checks that the server kept its subjects and replicas.
pub async fn ensure_stream(
    js: &jetstream::Context,
    wanted: stream::Config,
) -> Result<stream::Stream, LogError> {
    let replicas = wanted.num_replicas;
    let mut stream = js.get_or_create_stream(wanted.clone()).await.map_err(|e| {
        LogError::unavailable(
            &format!("creating stream {} with {replicas} replica(s)", wanted.name),
            e,
        )
    })?;
    let mut config = stream
        .info()
        .await
        .map_err(|e| LogError::unavailable("reading the stream", e))?
        .config
        .clone();
    if config.num_replicas != replicas {
        tracing::info!(
            stream = %wanted.name,
            from = config.num_replicas,
            to = replicas,
            "scaling the stream's replicas"
        );
        config.num_replicas = replicas;
        js.update_stream(config).await.map_err(|e| {
            LogError::unavailable(
                &format!("scaling stream {} to {replicas} replica(s)", wanted.name),
                e,
            )
        })?;
        stream = js
            .get_stream(&wanted.name)
            .await
            .map_err(|e| LogError::unavailable("reading the stream", e))?;
        config = stream
            .info()
            .await
            .map_err(|e| LogError::unavailable("reading the stream", e))?
            .config
            .clone();
    }
    let mirror_of = |config: &stream::Config| {
        config.mirror.as_ref().map(|m| {
            (
                m.name.clone(),
                m.external.as_ref().map(|e| e.api_prefix.clone()),
            )
        })
    };
    if mirror_of(&config) != mirror_of(&wanted) {
        let describe = |m: Option<(String, Option<String>)>| match m {
            None => "its own subjects".to_owned(),
            Some((name, api)) => format!("a mirror of {name} via {}", api.unwrap_or_default()),
        };
        return Err(LogError::Unsupported {
            feature: "the stream's origin",
            detail: format!(
                "stream {} exists as {}, expected {} (is another region's fleetd configured with this region's name?)",
                wanted.name,
                describe(mirror_of(&config)),
                describe(mirror_of(&wanted))
            ),
        });
    }
    if config.subjects != wanted.subjects {
        return Err(LogError::Unsupported {
            feature: "the stream's subjects",
            detail: format!(
                "stream {} exists with subjects {:?}, expected {:?}",
                wanted.name, config.subjects, wanted.subjects
            ),
        });
    }
    if config.num_replicas != replicas {
        return Err(LogError::Unsupported {
            feature: "replicated streams",
            detail: format!(
                "stream {} has {} replica(s), expected {replicas}",
                wanted.name, config.num_replicas
            ),
        });
    }
    Ok(stream)
}

/// How every event stream is kept, a region's own and its read copies of
/// the others alike: on file, never trimmed, nothing deleted, readable by
/// direct get, with the configured replicas.
fn kept_as(id: &StreamId, options: LogOptions) -> stream::Config {
    stream::Config {
        name: id.stream_name(),
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        allow_direct: true,
        deny_delete: true,
        num_replicas: options.replicas,
        ..Default::default()
    }
}

/// Older servers drop config fields they do not know instead of failing;
/// compare what came back with what was asked (subjects and replicas are
/// [`ensure_stream`]'s).
fn check_echoed_config(wanted: &stream::Config, echoed: &stream::Config) -> Result<(), LogError> {
    let mismatch =
        |feature: &'static str, detail: String| LogError::Unsupported { feature, detail };
    if echoed.allow_direct != wanted.allow_direct {
        return Err(mismatch(
            "direct get",
            "the server ignored allow_direct".into(),
        ));
    }
    // A mirror deduplicates nothing: its origin did.
    if wanted.mirror.is_none() && echoed.duplicate_window != wanted.duplicate_window {
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
    fn publish_failures_are_retried_by_kind() {
        use PublishErrorKind as Kind;
        for (kind, code, expected) in [
            (
                Kind::WrongLastSequence,
                Some(10071),
                PublishFailure::WrongLastSequence,
            ),
            (Kind::Other, Some(10164), PublishFailure::InFlight),
            (Kind::Other, Some(10158), PublishFailure::InFlight),
            (Kind::Other, Some(10008), PublishFailure::NoLeader),
            (Kind::Other, Some(10163), PublishFailure::NoLeader),
            (Kind::StreamNotFound, None, PublishFailure::NoLeader),
            (Kind::TimedOut, None, PublishFailure::NoLeader),
            (Kind::BrokenPipe, None, PublishFailure::NoLeader),
            (Kind::MaxAckPending, None, PublishFailure::NoLeader),
            (Kind::Other, Some(10077), PublishFailure::Unavailable),
            (Kind::MaxPayloadExceeded, None, PublishFailure::Unavailable),
            (Kind::Other, None, PublishFailure::Unavailable),
        ] {
            assert_eq!(classify_publish(kind, code), expected, "{kind:?} {code:?}");
        }
    }

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
