//! The tracing subscriber of the `fleetd` binary: log lines on stderr
//! (`RUST_LOG`, default `info`) and, when an OTLP endpoint is configured
//! (`otlp_endpoint`, `FLEETLOG_OTLP_ENDPOINT`), the spans of calls and
//! commands exported to an OTLP/gRPC collector in batches, as service
//! `fleetd`.
//!
//! The subscriber is process-global, which is why the binary installs it
//! and in-process fleetds (tests) do not.

use anyhow::Context as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

/// The `service.name` of exported spans.
const SERVICE_NAME: &str = "fleetd";

/// The installed subscriber; [`Tracing::shutdown`] exports what is still
/// buffered.
pub struct Tracing {
    provider: Option<SdkTracerProvider>,
}

/// Installs the global subscriber. Must run inside the Tokio runtime when
/// `otlp_endpoint` is set (the exporter's gRPC channel lives on it).
pub fn init(otlp_endpoint: Option<&str>) -> anyhow::Result<Tracing> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let Some(endpoint) = otlp_endpoint else {
        tracing_subscriber::registry()
            .with(filter)
            .with(log_lines())
            .try_init()
            .context("installing the tracing subscriber")?;
        return Ok(Tracing { provider: None });
    };
    let provider = provider(endpoint)?;
    // `RUST_LOG` filters the log lines only: the export takes the call
    // spans (DEBUG) and every INFO span (commands) whatever the log level,
    // except those of the exporter's own transport, which would trace its
    // exports.
    let exported = Targets::new()
        .with_default(LevelFilter::INFO)
        .with_target(super::grpc::SPAN_TARGET, LevelFilter::DEBUG)
        .with_target("h2", LevelFilter::OFF)
        .with_target("hyper", LevelFilter::OFF)
        .with_target("hyper_util", LevelFilter::OFF)
        .with_target("tonic", LevelFilter::OFF)
        .with_target("tower", LevelFilter::OFF)
        .with_target("opentelemetry", LevelFilter::OFF)
        .with_target("opentelemetry_sdk", LevelFilter::OFF)
        .with_target("opentelemetry_otlp", LevelFilter::OFF);
    tracing_subscriber::registry()
        .with(log_lines().with_filter(filter))
        .with(
            tracing_opentelemetry::layer()
                .with_tracer(provider.tracer(SERVICE_NAME))
                .with_filter(exported),
        )
        .try_init()
        .context("installing the tracing subscriber")?;
    tracing::info!(endpoint, "exporting spans over OTLP");
    Ok(Tracing {
        provider: Some(provider),
    })
}

/// Log lines on stderr, coloured on a terminal.
fn log_lines<S>() -> impl tracing_subscriber::Layer<S> + Send + Sync
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
}

fn provider(endpoint: &str) -> anyhow::Result<SdkTracerProvider> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .with_context(|| format!("the OTLP exporter for {endpoint}"))?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(Resource::builder().with_service_name(SERVICE_NAME).build())
        .build())
}

impl Tracing {
    /// Exports the spans still buffered and stops the exporter.
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else {
            return;
        };
        // Blocks until the export is done: off the async threads.
        match tokio::task::spawn_blocking(move || provider.shutdown()).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => eprintln!("fleetd: flushing the OTLP exporter: {err}"),
            Err(err) => eprintln!("fleetd: flushing the OTLP exporter: {err}"),
        }
    }
}
