//! `/metrics` is present and moving: gRPC calls counted by method and code
//! with their latency, projection lag, open watches, the upgrade state; and
//! the spans of a command exported over OTLP to a collector, in the caller's
//! trace when it sent W3C `traceparent`.

use crate::common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{PARENT, REGION, Sandbox, create, device, device_name};
use fleetlog_model::devices::DEFAULT_VERSION;
use fleetlog_proto::devices::v1::device_service_client::DeviceServiceClient;
use fleetlog_proto::devices::v1::{CreateDeviceRequest, GetDeviceRequest, WatchDevicesRequest};
use fleetlog_tests::{FleetdProcess, NatsServer, eventually};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use tonic::Code;

const DEVICES: &str = "fleetlog.devices.v1.DeviceService";
const DEPLOYMENT: &str = "services/devices.fleetlog.io/deployments/eu1";

/// One scrape of `/metrics`.
struct Scrape {
    /// (metric name, labels) → value.
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

impl Scrape {
    async fn of(http: &reqwest::Client, addr: std::net::SocketAddr) -> anyhow::Result<Self> {
        let response = http.get(format!("http://{addr}/metrics")).send().await?;
        anyhow::ensure!(response.status().is_success(), "{}", response.status());
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        anyhow::ensure!(
            content_type.starts_with("application/openmetrics-text; version=1.0.0"),
            "content type {content_type}"
        );
        let text = response.text().await?;
        anyhow::ensure!(
            text.ends_with("# EOF\n"),
            "an OpenMetrics exposition ends with # EOF"
        );
        Ok(Scrape {
            samples: text.lines().filter_map(parse_sample).collect(),
        })
    }

    /// The sum of the samples of `name` whose labels include `labels`
    /// (0 when there are none: a counter not yet incremented).
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels).sum()
    }

    /// The one sample of `name` with `labels`.
    fn one(&self, name: &str, labels: &[(&str, &str)]) -> anyhow::Result<f64> {
        let found: Vec<f64> = self.matching(name, labels).collect();
        match found.as_slice() {
            [value] => Ok(*value),
            _ => anyhow::bail!("{} samples of {name} {labels:?}", found.len()),
        }
    }

    fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&str, &str)],
    ) -> impl Iterator<Item = f64> + 'a {
        self.samples
            .iter()
            .filter(move |(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).is_some_and(|found| found == v))
            })
            .map(|(_, _, value)| *value)
    }

    fn requests(&self, method: &str, code: &str) -> f64 {
        self.sum(
            "fleetlog_grpc_requests_total",
            &[("service", DEVICES), ("method", method), ("code", code)],
        )
    }

    fn open_watches(&self) -> f64 {
        self.sum("fleetlog_watch_streams_open", &[("service", "devices")])
    }

    fn devices_projection(&self, metric: &str) -> anyhow::Result<f64> {
        self.one(
            metric,
            &[
                ("service", "devices"),
                ("region", REGION),
                ("version", DEFAULT_VERSION),
            ],
        )
    }
}

/// `name{k="v",...} value` (label values here hold no quotes or commas).
fn parse_sample(line: &str) -> Option<(String, BTreeMap<String, String>, f64)> {
    if line.starts_with('#') || line.is_empty() {
        return None;
    }
    let (series, value) = line.rsplit_once(' ')?;
    let value = value.parse().ok()?;
    let (name, labels) = match series.split_once('{') {
        Some((name, rest)) => {
            let labels = rest
                .strip_suffix('}')?
                .split(',')
                .filter(|l| !l.is_empty())
                .map(|label| {
                    let (k, v) = label.split_once('=')?;
                    Some((k.to_owned(), v.trim_matches('"').to_owned()))
                })
                .collect::<Option<BTreeMap<_, _>>>()?;
            (name, labels)
        }
        None => (series, BTreeMap::new()),
    };
    Some((name.to_owned(), labels, value))
}

#[tokio::test]
async fn metrics_are_present_and_moving() -> anyhow::Result<()> {
    let sandbox = Sandbox::start().await?;
    let http = reqwest::Client::new();
    let addr = sandbox.ready.http;
    let mut client = sandbox.client().await?;
    let before = Scrape::of(&http, addr).await?;
    assert_eq!(
        before.one(
            "fleetlog_fleetd_info",
            &[("role", "all"), ("region", REGION)]
        )?,
        1.0
    );

    const CREATED: usize = 3;
    let mut last_revision = 0;
    for i in 0..CREATED {
        let created = create(&mut client, &format!("m{i}"), device(&[], 3)).await?;
        last_revision = common::revision(&created);
    }
    for i in 0..CREATED {
        client
            .get_device(GetDeviceRequest {
                name: device_name(&format!("m{i}")),
                // Read-your-writes: the projection may not have applied it yet.
                min_revision: last_revision,
                ..Default::default()
            })
            .await?;
    }
    let missing = client
        .get_device(GetDeviceRequest {
            name: device_name("absent"),
            ..Default::default()
        })
        .await;
    assert_eq!(common::code(missing), Code::NotFound);

    let after = Scrape::of(&http, addr).await?;
    // Counted exactly, by method and code: a call is recorded before the
    // client sees its status.
    assert_eq!(
        after.requests("CreateDevice", "OK") - before.requests("CreateDevice", "OK"),
        CREATED as f64
    );
    assert_eq!(
        after.requests("GetDevice", "OK") - before.requests("GetDevice", "OK"),
        CREATED as f64
    );
    assert_eq!(
        after.requests("GetDevice", "NOT_FOUND") - before.requests("GetDevice", "NOT_FOUND"),
        1.0
    );
    let latencies = |scrape: &Scrape, suffix: &str| {
        scrape.sum(
            &format!("fleetlog_grpc_request_duration_seconds_{suffix}"),
            &[
                ("service", DEVICES),
                ("method", "CreateDevice"),
                ("code", "OK"),
            ],
        )
    };
    assert_eq!(
        latencies(&after, "count") - latencies(&before, "count"),
        CREATED as f64
    );
    assert!(latencies(&after, "sum") > latencies(&before, "sum"));
    // Every call fits in the +Inf bucket, and real calls take more than 0.
    let inf = after.sum(
        "fleetlog_grpc_request_duration_seconds_bucket",
        &[("method", "CreateDevice"), ("code", "OK"), ("le", "+Inf")],
    );
    assert_eq!(inf, latencies(&after, "count"));

    // Projection lag: the applied revision moved, the lag is never negative
    // and comes back to 0.
    let applied = "fleetlog_projection_applied_revision";
    let lag = "fleetlog_projection_lag_events";
    assert!(after.devices_projection(applied)? > before.devices_projection(applied)?);
    assert!(after.devices_projection(lag)? >= 0.0);
    let mut caught_up = false;
    for _ in 0..100 {
        let scrape = Scrape::of(&http, addr).await?;
        let lag = scrape.devices_projection(lag)?;
        assert!(lag >= 0.0);
        let last = scrape.one(
            "fleetlog_stream_last_sequence",
            &[("service", "devices"), ("region", REGION)],
        )?;
        assert!(last >= scrape.devices_projection(applied)?);
        if lag == 0.0 {
            assert_eq!(last, scrape.devices_projection(applied)?);
            caught_up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(caught_up, "the devices projection caught up");
    for service in ["iam", "meta"] {
        assert!(
            after.one(lag, &[("service", service), ("region", REGION)])? >= 0.0,
            "{service}"
        );
    }

    // The upgrade state of the region's Devices deployment.
    for (stage, value) in [("READY", 1.0), ("INITIAL_SYNCING", 0.0), ("SWITCHING", 0.0)] {
        assert_eq!(
            after.one(
                "fleetlog_upgrade_stage",
                &[("deployment", DEPLOYMENT), ("stage", stage)]
            )?,
            value,
            "{stage}"
        );
    }
    assert_eq!(
        after.one(
            "fleetlog_api_version_info",
            &[
                ("deployment", DEPLOYMENT),
                ("current_version", DEFAULT_VERSION)
            ]
        )?,
        1.0
    );
    assert_eq!(
        after.one(
            "fleetlog_upgrade_pending_shards",
            &[("deployment", DEPLOYMENT)]
        )?,
        0.0
    );

    // An open watch shows while it streams, and not once dropped.
    assert_eq!(after.open_watches(), 0.0);
    let mut watch = client
        .watch_devices(WatchDevicesRequest {
            parent: PARENT.into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), watch.message())
            .await??
            .ok_or_else(|| anyhow::anyhow!("the watch ended"))?;
        if message.is_current {
            break;
        }
    }
    let watching = Scrape::of(&http, addr).await?;
    assert_eq!(watching.open_watches(), 1.0);
    drop(watch);
    let closed = eventually(Duration::from_secs(10), || {
        let http = http.clone();
        async move {
            Scrape::of(&http, addr).await.is_ok_and(|s| {
                s.open_watches() == 0.0 && s.requests("WatchDevices", "CANCELLED") == 1.0
            })
        }
    })
    .await;
    assert!(
        closed,
        "the dropped watch is closed and counted as CANCELLED"
    );

    sandbox.stop().await
}

/// One span as the collector received it.
struct ExportedSpan {
    /// The resource's `service.name`.
    service: String,
    name: String,
    /// Lowercase hex, as in `traceparent`.
    trace_id: String,
    attributes: BTreeMap<String, String>,
}

/// The spans one OTLP collector received.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<ExportedSpan>>>,
}

fn text_of(attributes: &[KeyValue]) -> BTreeMap<String, String> {
    attributes
        .iter()
        .filter_map(|kv| {
            let value = match kv.value.as_ref()?.value.as_ref()? {
                Value::StringValue(s) => s.clone(),
                Value::IntValue(i) => i.to_string(),
                Value::BoolValue(b) => b.to_string(),
                Value::DoubleValue(d) => d.to_string(),
                _ => return None,
            };
            Some((kv.key.clone(), value))
        })
        .collect()
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().expect("collector lock");
        for resource_spans in request.into_inner().resource_spans {
            let resource = resource_spans
                .resource
                .map(|r| text_of(&r.attributes))
                .unwrap_or_default();
            let service = resource.get("service.name").cloned().unwrap_or_default();
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    spans.push(ExportedSpan {
                        service: service.clone(),
                        trace_id: span.trace_id.iter().map(|b| format!("{b:02x}")).collect(),
                        attributes: text_of(&span.attributes),
                        name: span.name,
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

#[tokio::test]
async fn command_spans_are_exported_over_otlp() -> anyhow::Result<()> {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let collector_addr = listener.local_addr()?;
    let stop = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn({
        let collector = collector.clone();
        let stop = stop.clone();
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector))
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener),
                async move { stop.cancelled().await },
            )
    });

    let nats = NatsServer::start()?;
    let data = tempfile::tempdir()?;
    let fleetd = FleetdProcess::start(
        "all",
        &[
            ("FLEETLOG_NATS_URL", nats.url()),
            ("FLEETLOG_DATA_DIR", data.path().display().to_string()),
            ("FLEETLOG_REGION", REGION.to_owned()),
            ("FLEETLOG_OTLP_ENDPOINT", format!("http://{collector_addr}")),
            ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
            // Quiet logs do not quiet the export.
            ("RUST_LOG", "warn".to_owned()),
        ],
    )?;
    let mut client = DeviceServiceClient::new(fleetlog_tests::admin(fleetd.grpc_url()).await?);
    // The caller's W3C trace context: fleetd's spans join this trace.
    const CALLERS_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
    let mut request = tonic::Request::new(CreateDeviceRequest {
        parent: PARENT.into(),
        device_id: "traced".into(),
        device: Some(device(&[], 3)),
        request_id: String::new(),
    });
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{CALLERS_TRACE}-b7ad6b7169203331-01").parse()?,
    );
    client.create_device(request).await?;
    // A call without trace context starts a trace of its own.
    create(&mut client, "untraced", device(&[], 3)).await?;
    let name = device_name("traced");

    let is_create = |span: &ExportedSpan| {
        span.service == "fleetd"
            && span.name == "create"
            && span.trace_id == CALLERS_TRACE
            && span.attributes.get("resource") == Some(&name)
            && span.attributes.contains_key("shard")
            && span.attributes.get("revision").is_some_and(|r| r != "0")
    };
    let is_call = |span: &ExportedSpan| {
        span.service == "fleetd"
            && span.name == "fleetlog.devices.v1.DeviceService/CreateDevice"
            && span.trace_id == CALLERS_TRACE
            && span.attributes.get("rpc.method").map(String::as_str) == Some("CreateDevice")
            && span
                .attributes
                .get("rpc.grpc.status_code")
                .map(String::as_str)
                == Some("0")
    };
    let is_untraced_create = |span: &ExportedSpan| {
        span.name == "create"
            && span.attributes.get("resource") == Some(&device_name("untraced"))
            && span.trace_id != CALLERS_TRACE
            && span.trace_id.chars().any(|c| c != '0')
    };
    let exported = eventually(Duration::from_secs(20), || {
        let spans = collector.spans.clone();
        let found = {
            let spans = spans.lock().expect("collector lock");
            spans.iter().any(is_create)
                && spans.iter().any(is_call)
                && spans.iter().any(is_untraced_create)
        };
        async move { found }
    })
    .await;
    let seen: Vec<_> = collector
        .spans
        .lock()
        .expect("collector lock")
        .iter()
        .map(|span| format!("{} {} {:?}", span.name, span.trace_id, span.attributes))
        .collect();
    assert!(exported, "the create's spans were exported; got {seen:#?}");
    drop(client);
    let stopped = fleetd.shut_down().await?;
    assert!(stopped.success());
    stop.cancel();
    server.await??;
    Ok(())
}
