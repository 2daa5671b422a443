//! Telemetry: Prometheus metrics at `/metrics`, tracing spans, and the
//! optional OTLP export of those spans.
//!
//! One [`Metrics`] per fleetd process (tests run several in one process, so
//! nothing here is a global): `fleetd::run` makes it, puts
//! [`Metrics::grpc_layer`] on the gRPC server and [`routes`] on the HTTP
//! listener. Counters and gauges move where things happen (a call ends, a
//! watch opens or closes); projection lag and the upgrade state are read
//! when `/metrics` is scraped.
//!
//! Spans: every gRPC call gets a DEBUG span `grpc` (OpenTelemetry RPC
//! conventions: `rpc.service`, `rpc.method`, `rpc.grpc.status_code`), every
//! command an INFO span (`create`, `update`, `delete`, `act`) with
//! `resource`, `shard`, `command_id` and, once appended, `revision`; watch
//! tasks a DEBUG span. [`otlp`] installs the subscriber of the `fleetd`
//! binary, which exports them when an OTLP endpoint is configured.

mod grpc;
mod metrics;
pub mod otlp;

pub use grpc::{GrpcMetricsLayer, GrpcMetricsService, MeteredBody, MeteredFuture};
pub use metrics::{CONTENT_TYPE, Metrics, OpenWatch, routes};
