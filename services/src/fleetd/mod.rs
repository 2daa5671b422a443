//! fleetd: roles, startup and shutdown.
//!
//! Shutdown order: health goes NOT_SERVING, the gRPC server drains, watch
//! tasks end, the projector finishes its current batch, the managed
//! nats-server stops.

pub mod config;
mod managed_nats;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use arc_swap::ArcSwap;
use fleetlog_events::{EventLog, Id, StreamId};
use fleetlog_projections::query_lang::PageTokenKey;
use fleetlog_projections::{AsWritten, Projection, Projector};
use fleetlog_proto::devices::v1::device_service_server::DeviceServiceServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::Config;

use crate::devices::{self, device::DeviceApi};
use crate::engine::{Engine, ServiceContext};

/// What one fleetd process does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// Everything in one process, with a managed nats-server when no NATS URL
    /// is configured.
    All,
    /// Commands, queries (from a local projection) and watch.
    Api,
    /// Projections and the query API; commands are refused.
    Projector,
}

/// The addresses a started fleetd serves on.
#[derive(Clone, Copy, Debug)]
pub struct Ready {
    pub grpc: SocketAddr,
    pub http: SocketAddr,
}

/// Runs fleetd until `shutdown` fires. `ready` receives the bound addresses
/// once every service answers.
pub async fn run(
    role: Role,
    config: Config,
    shutdown: CancellationToken,
    ready: Option<tokio::sync::oneshot::Sender<Ready>>,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating the data dir {}", config.data_dir.display()))?;
    if config.bootstrap_admin_key.is_some() {
        tracing::warn!("authentication is not enforced yet; the bootstrap admin key is unused");
    }

    let (managed, nats_url) = match (&config.nats_url, role) {
        (Some(url), _) => (None, url.clone()),
        (None, Role::All) => {
            let managed =
                managed_nats::ManagedNats::start(&config.nats_server_bin, &config.data_dir).await?;
            let url = managed.url.clone();
            (Some(managed), url)
        }
        (None, _) => anyhow::bail!("FLEETLOG_NATS_URL is required for the {role:?} role"),
    };
    let result = serve(role, &config, &nats_url, shutdown, ready).await;
    if let Some(managed) = managed {
        managed.stop().await;
    }
    result
}

async fn serve(
    role: Role,
    config: &Config,
    nats_url: &str,
    shutdown: CancellationToken,
    ready: Option<tokio::sync::oneshot::Sender<Ready>>,
) -> anyhow::Result<()> {
    let (reconnected, reconnects) = tokio::sync::watch::channel(0u64);
    let client = connect_nats(nats_url, role, &shutdown, reconnected).await?;
    let region = Id::parse(&config.region)?;
    let stream = StreamId::new(Id::parse(devices::SERVICE)?, region.clone());
    let log = tokio::time::timeout(
        Duration::from_secs(30),
        EventLog::open(client.clone(), stream),
    )
    .await
    .context("NATS did not answer within 30 s")??;
    tracing::info!(server = %log.features().version, stream = %log.id().stream_name(), "event log open");
    if !log.features().full {
        tracing::warn!(
            server = %log.features().version,
            "nats-server is older than 2.12: later features (atomic batches, reservations) are unavailable"
        );
    }

    let projection_dir = config.data_dir.join("projections").join(format!(
        "{}-{}-{}",
        devices::SERVICE,
        region,
        devices::API_VERSION
    ));
    let projection = Projection::open(&projection_dir, devices::API_VERSION)?;
    let tasks = TaskTracker::new();
    let projector_stop = CancellationToken::new();
    let projector =
        Projector::new(log.clone(), projection.clone(), Arc::new(AsWritten)).restart_on(reconnects);
    let projector_task = tokio::spawn({
        let stop = projector_stop.clone();
        let shutdown = shutdown.clone();
        async move {
            if let Err(err) = projector.run(stop).await {
                tracing::error!(error = %err, "the projector stopped; shutting down");
                shutdown.cancel();
            }
        }
    });

    let ctx = Arc::new(ServiceContext {
        log: log.clone(),
        active: Arc::new(ArcSwap::new(projection.clone())),
        api_version: devices::API_VERSION.to_owned(),
        region,
        page_tokens: page_token_key(&config.data_dir)?,
        read_wait: config.read_wait(),
        shutdown: shutdown.clone(),
        tasks: tasks.clone(),
        accept_commands: role != Role::Projector,
    });

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_not_serving::<DeviceServiceServer<DeviceApi>>()
        .await;
    health
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(fleetlog_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(fleetlog_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

    let grpc_listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding the gRPC address {}", config.listen))?;
    let http_listener = TcpListener::bind(config.http_listen)
        .await
        .with_context(|| format!("binding the HTTP address {}", config.http_listen))?;
    let addrs = Ready {
        grpc: grpc_listener.local_addr()?,
        http: http_listener.local_addr()?,
    };

    let grpc_shutdown = shutdown.clone();
    let grpc = tonic::transport::Server::builder()
        .accept_http1(true)
        .layer(tonic_web::GrpcWebLayer::new())
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(DeviceServiceServer::new(DeviceApi::new(Engine::new(
            ctx.clone(),
        ))))
        .serve_with_incoming_shutdown(
            // Without TCP_NODELAY small responses wait for delayed ACKs (~40 ms).
            tonic::transport::server::TcpIncoming::from(grpc_listener).with_nodelay(Some(true)),
            async move { grpc_shutdown.cancelled().await },
        );
    let grpc_task = tokio::spawn(grpc);

    let http_shutdown = shutdown.clone();
    let http_app = axum::Router::new().route("/healthz", axum::routing::get(|| async { "ok\n" }));
    let http_task = tokio::spawn(async move {
        axum::serve(http_listener, http_app)
            .with_graceful_shutdown(async move { http_shutdown.cancelled().await })
            .await
    });

    health.set_serving::<DeviceServiceServer<DeviceApi>>().await;
    health
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    // Scripts and tests wait for exactly this line on stdout.
    println!("fleetd ready grpc={} http={}", addrs.grpc, addrs.http);
    tracing::info!(grpc = %addrs.grpc, http = %addrs.http, ?role, "fleetd ready");
    if let Some(ready) = ready {
        let _ = ready.send(addrs);
    }

    shutdown.cancelled().await;
    tracing::info!("shutting down");
    health
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
    let drain = Duration::from_secs(10);
    if tokio::time::timeout(drain, grpc_task).await.is_err() {
        tracing::warn!("gRPC connections did not drain within {drain:?}");
    }
    let _ = tokio::time::timeout(drain, http_task).await;
    tasks.close();
    if tokio::time::timeout(drain, tasks.wait()).await.is_err() {
        tracing::warn!("watch tasks did not stop within {drain:?}");
    }
    projector_stop.cancel();
    let _ = projector_task.await;
    client.flush().await.ok();
    tracing::info!("fleetd stopped");
    Ok(())
}

/// Connects to NATS, retrying for a while: the server may still be starting.
/// `reconnected` counts re-established connections, for the projector.
async fn connect_nats(
    url: &str,
    role: Role,
    shutdown: &CancellationToken,
    reconnected: tokio::sync::watch::Sender<u64>,
) -> anyhow::Result<async_nats::Client> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let reconnected = reconnected.clone();
        let attempt = async_nats::ConnectOptions::new()
            .name(format!("fleetd-{role:?}").to_lowercase())
            .event_callback(move |event| {
                let reconnected = reconnected.clone();
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            tracing::info!("connected to NATS");
                            reconnected.send_modify(|n| *n += 1);
                        }
                        async_nats::Event::Disconnected => tracing::warn!("NATS connection lost"),
                        other => tracing::debug!(event = %other, "NATS event"),
                    }
                }
            })
            .connect(url)
            .await;
        match attempt {
            Ok(client) => return Ok(client),
            Err(err) if tokio::time::Instant::now() < deadline && !shutdown.is_cancelled() => {
                tracing::debug!(error = %err, url, "NATS not reachable yet");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(err) => {
                return Err(err).with_context(|| format!("connecting to NATS at {url}"));
            }
        }
    }
}

/// Page tokens must verify on every fleetd sharing a data dir and across
/// restarts, so the key lives in the data dir.
fn page_token_key(data_dir: &Path) -> anyhow::Result<PageTokenKey> {
    let path = data_dir.join("page-token.key");
    if let Ok(bytes) = std::fs::read(&path)
        && let Ok(key) = <[u8; 32]>::try_from(bytes.as_slice())
    {
        return Ok(PageTokenKey::new(key));
    }
    let key = PageTokenKey::random();
    std::fs::write(&path, key.as_bytes()).with_context(|| format!("writing {}", path.display()))?;
    Ok(key)
}
