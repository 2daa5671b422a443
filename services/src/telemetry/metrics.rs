//! The metrics of one fleetd and their `/metrics` endpoint.
//!
//! | metric | labels | what |
//! | --- | --- | --- |
//! | `fleetlog_grpc_requests_total` | service, method, code | calls finished |
//! | `fleetlog_grpc_request_duration_seconds` | service, method, code | call latency (histogram) |
//! | `fleetlog_watch_streams_open` | service | watch calls streaming now |
//! | `fleetlog_stream_last_sequence` | service, region | the log's newest event |
//! | `fleetlog_projection_applied_revision` | service, region, version | the last event a fed projection applied |
//! | `fleetlog_projection_lag_events` | service, region, version | last sequence − applied |
//! | `fleetlog_read_copy_seconds_since_heard` | service, region | a read copy of another region's log: since it last heard from its origin (the staleness signal; grows during a partition) |
//! | `fleetlog_read_copy_lag_events` | service, region | events the origin had that the copy did not, when it last heard (freezes during a partition) |
//! | `fleetlog_upgrade_stage` | deployment, stage | 1 for the current stage, 0 for the others |
//! | `fleetlog_upgrade_ready_shards`, `fleetlog_upgrade_pending_shards` | deployment | shard counts of the upgrade in progress |
//! | `fleetlog_upgrade_switch_pause_seconds` | deployment | the write pause the last switch measured |
//! | `fleetlog_api_version_info` | deployment, current_version, target_version | 1 |
//! | `fleetlog_fleetd_info` | role, region, version | 1 |
//!
//! The exposition is OpenMetrics text (prometheus-client's encoder), served
//! with its content type; Prometheus reads it natively.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use arc_swap::ArcSwap;
use fleetlog_events::EventLog;
use fleetlog_projections::Projection;
use fleetlog_projections::active::ProjectionSet;
use fleetlog_proto::meta::v1::Deployment;
use fleetlog_proto::meta::v1::deployment::Stage;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use super::grpc::{CallLabels, Durations, GrpcMetrics, GrpcMetricsLayer, new_duration_histogram};

/// The content type of the exposition.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Longest a scrape waits for the log's last sequence.
const STREAM_STATE_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabels {
    service: String,
}

/// Every metric of one fleetd process.
pub struct Metrics {
    registry: Registry,
    grpc: Arc<GrpcMetrics>,
    watch_streams: Family<ServiceLabels, Gauge>,
    sources: Arc<Mutex<Sources>>,
    /// One scrape at a time: each refreshes the snapshot it encodes.
    scraping: tokio::sync::Mutex<()>,
}

/// What scrapes read.
#[derive(Default)]
struct Sources {
    streams: Vec<ObservedStream>,
    deployment: Option<ObservedDeployment>,
    snapshot: Snapshot,
}

struct ObservedStream {
    service: String,
    region: String,
    log: EventLog,
    projections: Arc<ProjectionSet>,
    versions: &'static [&'static str],
}

struct ObservedDeployment {
    name: String,
    meta: Arc<ArcSwap<Projection>>,
}

/// The values read at the last scrape.
#[derive(Clone, Debug, Default)]
struct Snapshot {
    streams: Vec<StreamSample>,
    deployment: Option<(String, Deployment)>,
}

#[derive(Clone, Debug)]
struct StreamSample {
    service: String,
    region: String,
    /// None when the log did not answer in time.
    last_sequence: Option<u64>,
    /// (version, applied revision) of every fed projection.
    applied: Vec<(&'static str, u64)>,
    /// For a read copy of another region's log: how current it is.
    copy: Option<fleetlog_events::CopyState>,
}

impl Metrics {
    /// `role` and `region` label `fleetlog_fleetd_info`; `process` labels
    /// every metric, so the series of a region's fleetd processes stay
    /// apart wherever they are scraped into one place.
    pub fn new(role: &str, region: &str, process: &str) -> Self {
        let mut registry = Registry::with_labels(std::iter::once((
            std::borrow::Cow::Borrowed("process"),
            std::borrow::Cow::Owned(process.to_owned()),
        )));
        let requests = Family::<CallLabels, Counter>::default();
        let durations: Durations = Family::new_with_constructor(new_duration_histogram);
        registry.register(
            "fleetlog_grpc_requests",
            "gRPC calls finished, by method and status code",
            requests.clone(),
        );
        registry.register(
            "fleetlog_grpc_request_duration_seconds",
            "gRPC call latency from request to the status (a server stream's lifetime)",
            durations.clone(),
        );
        let grpc = Arc::new(GrpcMetrics::new(&requests, &durations, served_methods()));
        let watch_streams = Family::<ServiceLabels, Gauge>::default();
        registry.register(
            "fleetlog_watch_streams_open",
            "Watch calls streaming now",
            watch_streams.clone(),
        );
        registry.register(
            "fleetlog_fleetd",
            "This fleetd",
            Info::new(vec![
                ("role", role.to_owned()),
                ("region", region.to_owned()),
                ("version", env!("CARGO_PKG_VERSION").to_owned()),
            ]),
        );
        let sources = Arc::new(Mutex::new(Sources::default()));
        registry.register_collector(Box::new(SnapshotCollector(sources.clone())));
        Metrics {
            registry,
            grpc,
            watch_streams,
            sources,
            scraping: tokio::sync::Mutex::new(()),
        }
    }

    /// The layer for the gRPC server (inside `GrpcWebLayer`).
    pub fn grpc_layer(&self) -> GrpcMetricsLayer {
        GrpcMetricsLayer {
            metrics: self.grpc.clone(),
        }
    }

    /// The open-watches gauge of `service`, for its `ServiceContext`.
    pub fn open_watches(&self, service: &str) -> Gauge {
        self.watch_streams.get_or_create_owned(&ServiceLabels {
            service: service.to_owned(),
        })
    }

    /// Reports the lag of `projections` (those of `versions` being fed)
    /// behind `log` at every scrape.
    pub fn observe_projections(
        &self,
        log: &EventLog,
        projections: &Arc<ProjectionSet>,
        versions: &'static [&'static str],
    ) {
        lock(&self.sources).streams.push(ObservedStream {
            service: log.id().service().to_string(),
            region: log.id().region().to_string(),
            log: log.clone(),
            projections: projections.clone(),
            versions,
        });
    }

    /// Reports the upgrade state of Deployment `name` as the Meta
    /// projection `meta` holds it, at every scrape.
    pub fn observe_deployment(&self, meta: &Arc<ArcSwap<Projection>>, name: &impl ToString) {
        lock(&self.sources).deployment = Some(ObservedDeployment {
            name: name.to_string(),
            meta: meta.clone(),
        });
    }

    /// Reads what is read at scrape time and encodes every metric.
    pub async fn render(&self) -> String {
        let _one = self.scraping.lock().await;
        let snapshot = self.read_sources().await;
        lock(&self.sources).snapshot = snapshot;
        let mut text = String::with_capacity(16 * 1024);
        if let Err(err) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            // Writing to a String does not fail; a metric that cannot be
            // encoded is a bug, reported in place of the exposition.
            text.clear();
            let _ = writeln!(text, "# encoding the metrics failed: {err}");
        }
        text
    }

    async fn read_sources(&self) -> Snapshot {
        let (streams, deployment) = {
            let sources = lock(&self.sources);
            let streams: Vec<_> = sources
                .streams
                .iter()
                .map(|s| {
                    // Applied first, then the last sequence: lag is never negative.
                    let applied = s
                        .versions
                        .iter()
                        .filter(|v| s.projections.is_fed(v))
                        .filter_map(|v| Some((*v, s.projections.get(v).ok()?.applied().get())))
                        .collect::<Vec<_>>();
                    (s.service.clone(), s.region.clone(), s.log.clone(), applied)
                })
                .collect();
            let deployment = sources.deployment.as_ref().and_then(|d| {
                let projection = d.meta.load_full();
                match fleetlog_model::stored::stored::<Deployment>(&projection, &d.name) {
                    Ok(found) => found.map(|found| (d.name.clone(), found)),
                    Err(err) => {
                        tracing::debug!(error = %err, "metrics: reading the deployment");
                        None
                    }
                }
            });
            (streams, deployment)
        };
        let streams = futures::future::join_all(streams.into_iter().map(
            |(service, region, log, applied)| async move {
                let (last_sequence, copy) = if log.is_copy() {
                    match tokio::time::timeout(STREAM_STATE_TIMEOUT, log.copy_state()).await {
                        Ok(Ok(Some(copy))) => (Some(copy.last.get()), Some(copy)),
                        Ok(Ok(None)) | Err(_) => (None, None),
                        Ok(Err(err)) => {
                            tracing::debug!(error = %err, "metrics: reading the read copy's state");
                            (None, None)
                        }
                    }
                } else {
                    match tokio::time::timeout(STREAM_STATE_TIMEOUT, log.last_revision()).await {
                        Ok(Ok(last)) => (Some(last.get()), None),
                        Ok(Err(err)) => {
                            tracing::debug!(error = %err, "metrics: reading the stream state");
                            (None, None)
                        }
                        Err(_) => (None, None),
                    }
                };
                StreamSample {
                    service,
                    region,
                    last_sequence,
                    applied,
                    copy,
                }
            },
        ))
        .await;
        Snapshot {
            streams,
            deployment,
        }
    }
}

/// `/metrics`, without authentication (scrapers).
pub fn routes(metrics: Arc<Metrics>) -> axum::Router {
    axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(
                |axum::extract::State(metrics): axum::extract::State<Arc<Metrics>>| async move {
                    (
                        [(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)],
                        metrics.render().await,
                    )
                },
            ),
        )
        .with_state(metrics)
}

/// Holds a watch call's place in `fleetlog_watch_streams_open` until dropped.
pub struct OpenWatch(Gauge);

impl OpenWatch {
    pub fn new(gauge: &Gauge) -> Self {
        gauge.inc();
        OpenWatch(gauge.clone())
    }
}

impl Drop for OpenWatch {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Encodes the snapshot the current scrape read.
#[derive(Debug)]
struct SnapshotCollector(Arc<Mutex<Sources>>);

impl std::fmt::Debug for Sources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sources").finish_non_exhaustive()
    }
}

impl Collector for SnapshotCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let snapshot = lock(&self.0).snapshot.clone();
        let mut last = Vec::new();
        let mut applied = Vec::new();
        let mut lag = Vec::new();
        let mut copy_heard = Vec::new();
        let mut copy_lag = Vec::new();
        for stream in &snapshot.streams {
            let labels = vec![
                ("service", stream.service.as_str()),
                ("region", stream.region.as_str()),
            ];
            if let Some(copy) = &stream.copy {
                // Never heard yet: as stale as can be said.
                let heard = copy.since_active.map_or(f64::INFINITY, |d| d.as_secs_f64());
                copy_heard.push((labels.clone(), heard));
                copy_lag.push((labels.clone(), to_i64(copy.lag)));
            }
            if let Some(sequence) = stream.last_sequence {
                last.push((labels.clone(), to_i64(sequence)));
            }
            for (version, revision) in &stream.applied {
                let mut labels = labels.clone();
                labels.push(("version", version));
                if let Some(sequence) = stream.last_sequence {
                    lag.push((labels.clone(), to_i64(sequence.saturating_sub(*revision))));
                }
                applied.push((labels, to_i64(*revision)));
            }
        }
        gauge(
            &mut encoder,
            "fleetlog_stream_last_sequence",
            "The sequence of the newest event in the service's stream.",
            &last,
        )?;
        gauge(
            &mut encoder,
            "fleetlog_projection_applied_revision",
            "The last event a fed projection applied.",
            &applied,
        )?;
        gauge(
            &mut encoder,
            "fleetlog_projection_lag_events",
            "Events in the stream a fed projection has not applied yet.",
            &lag,
        )?;
        {
            let mut family = encoder.encode_descriptor(
                "fleetlog_read_copy_seconds_since_heard",
                "Since a read copy of another region's log last heard from its origin: its staleness.",
                None,
                MetricType::Gauge,
            )?;
            for (labels, seconds) in &copy_heard {
                ConstGauge::new(*seconds).encode(family.encode_family(labels)?)?;
            }
        }
        gauge(
            &mut encoder,
            "fleetlog_read_copy_lag_events",
            "Events the origin had that a read copy did not, when it last heard (freezes during a partition).",
            &copy_lag,
        )?;

        let Some((name, deployment)) = &snapshot.deployment else {
            return Ok(());
        };
        let state = deployment.upgrade_state.clone().unwrap_or_default();
        let current = Stage::try_from(state.stage).unwrap_or(Stage::Ready);
        let stages: Vec<_> = [Stage::Ready, Stage::InitialSyncing, Stage::Switching]
            .into_iter()
            .map(|stage| {
                (
                    vec![
                        ("deployment", name.as_str()),
                        ("stage", stage.as_str_name()),
                    ],
                    i64::from(stage == current),
                )
            })
            .collect();
        gauge(
            &mut encoder,
            "fleetlog_upgrade_stage",
            "1 for the stage the deployment's upgrade is in, 0 for the others.",
            &stages,
        )?;
        let of_deployment = || vec![("deployment", name.as_str())];
        gauge(
            &mut encoder,
            "fleetlog_upgrade_ready_shards",
            "Shards reported ready for the upgrade in progress.",
            &[(of_deployment(), to_i64(state.ready_shards.len() as u64))],
        )?;
        gauge(
            &mut encoder,
            "fleetlog_upgrade_pending_shards",
            "Shards not yet ready for the upgrade in progress.",
            &[(of_deployment(), to_i64(state.pending_shards.len() as u64))],
        )?;
        let pause = state.switch_pause.map_or(0.0, |d| {
            Duration::try_from(d).map_or(0.0, |d| d.as_secs_f64())
        });
        {
            let mut family = encoder.encode_descriptor(
                "fleetlog_upgrade_switch_pause_seconds",
                "The write pause the deployment's last version switch measured.",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(pause).encode(family.encode_family(&of_deployment())?)?;
        }
        let mut info = encoder.encode_descriptor(
            "fleetlog_api_version",
            "The API version the deployment serves, and its upgrade target.",
            None,
            MetricType::Info,
        )?;
        info.encode_info(&vec![
            ("deployment", name.as_str()),
            ("current_version", deployment.current_version.as_str()),
            ("target_version", state.target_version.as_str()),
        ])?;
        Ok(())
    }
}

/// One gauge family of labelled values.
fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: &[(Vec<(&str, &str)>, i64)],
) -> std::fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in samples {
        ConstGauge::new(*value).encode(family.encode_family(labels)?)?;
    }
    Ok(())
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// (full service name, method name) of every gRPC method fleetd serves:
/// fleetlog's services, health and reflection.
fn served_methods() -> Vec<(String, String)> {
    let mut methods: Vec<(String, String)> = fleetlog_proto::DESCRIPTOR_POOL
        .services()
        .flat_map(|service| {
            service
                .methods()
                .map(|method| (service.full_name().to_owned(), method.name().to_owned()))
                .collect::<Vec<_>>()
        })
        .collect();
    if let Ok(health) = prost_reflect::DescriptorPool::decode(tonic_health::pb::FILE_DESCRIPTOR_SET)
    {
        for service in health.services() {
            for method in service.methods() {
                methods.push((service.full_name().to_owned(), method.name().to_owned()));
            }
        }
    }
    for reflection in [
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ] {
        methods.push((reflection.to_owned(), "ServerReflectionInfo".to_owned()));
    }
    methods
}

/// The sources only change in single pushes and stores: a panic elsewhere
/// cannot leave them half-updated, so poisoning is ignored.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
