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
use fleetlog_events::log::LogOptions;
use fleetlog_events::{EventLog, Id, StreamId};
use fleetlog_projections::Converter;
use fleetlog_projections::active::ProjectionSet;
use fleetlog_projections::query_lang::PageTokenKey;
use fleetlog_proto::devices::v1::device_service_server::DeviceServiceServer;
use fleetlog_proto::devices::v1::provisioning_approval_request_service_server::ProvisioningApprovalRequestServiceServer;
use fleetlog_proto::devices::v1::provisioning_policy_service_server::ProvisioningPolicyServiceServer;
use fleetlog_proto::devices::v1alpha2::device_service_server::DeviceServiceServer as V1alpha2DeviceServiceServer;
use fleetlog_proto::devices::v1alpha2::provisioning_approval_request_service_server::ProvisioningApprovalRequestServiceServer as V1alpha2ProvisioningApprovalRequestServiceServer;
use fleetlog_proto::devices::v1alpha2::provisioning_policy_service_server::ProvisioningPolicyServiceServer as V1alpha2ProvisioningPolicyServiceServer;
use fleetlog_proto::iam::v1::role_binding_service_server::RoleBindingServiceServer;
use fleetlog_proto::iam::v1::service_account_service_server::ServiceAccountServiceServer;
use fleetlog_proto::meta::v1::Deployment;
use fleetlog_proto::meta::v1::deployment::Stage;
use fleetlog_proto::meta::v1::deployment_service_server::DeploymentServiceServer;
use fleetlog_proto::meta::v1::region_service_server::RegionServiceServer;
use fleetlog_proto::meta::v1::service_service_server::ServiceServiceServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::Config;

use crate::devices;
use crate::devices::flows::logs::DeviceLogs;
use crate::engine::access::{AuthenticateLayer, Authorizer};
use crate::engine::feeds::WatchFeeds;
use crate::engine::{Engine, ServiceContext};
use crate::fence::Fence;
use crate::gateway;
use crate::iam::authorizer::IamAuthorizer;
use crate::iam::{self, RoleBindingApi, ServiceAccountApi};
use crate::meta;
use crate::meta::api::{DeploymentApi, RegionApi, ServiceApi};
use crate::telemetry::Metrics;
use crate::upgrade::UpgradeController;
use fleetlog_model::convert::VersionConverter;
use fleetlog_model::meta::deployment;
use fleetlog_model::meta::names::DeploymentName;

mod bootstrap;
mod copies;
mod served;
mod supervise;
mod tls;

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

impl Role {
    /// What this role cannot run without, checked before anything starts.
    pub fn check(self, config: &Config) -> Result<(), String> {
        if config.nats_url.is_none() && self != Role::All {
            return Err(format!(
                "the {} role needs a NATS server: set FLEETLOG_NATS_URL (or nats_url in the \
                 config file); only `fleetd all` starts its own",
                format!("{self:?}").to_lowercase()
            ));
        }
        Ok(())
    }
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
    // Before anything is made on disk: a misconfigured role leaves nothing behind.
    role.check(&config).map_err(anyhow::Error::msg)?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating the data dir {}", config.data_dir.display()))?;

    // Without a URL this is the all role (checked above): it runs its own.
    let (managed, nats_url) = match &config.nats_url {
        Some(url) => (None, url.clone()),
        None => {
            let managed =
                managed_nats::ManagedNats::start(&config.nats_server_bin, &config.data_dir).await?;
            let url = managed.url.clone();
            (Some(managed), url)
        }
    };
    let result = serve(role, &config, &nats_url, shutdown, ready).await;
    if let Some(managed) = managed {
        managed.stop().await;
    }
    result
}

/// What every service's projections share in one process.
#[derive(Clone)]
struct Projections {
    dir: std::path::PathBuf,
    reconnects: tokio::sync::watch::Receiver<u64>,
    failed: CancellationToken,
    metrics: Arc<Metrics>,
}

impl Projections {
    /// Opens a service's projections (one per API version, `version`
    /// active), starts feeding the active one from `log` and exports their
    /// progress.
    fn open(
        &self,
        log: &EventLog,
        versions: &'static [&'static str],
        converter: fn(&str) -> VersionConverter,
        version: &str,
    ) -> anyhow::Result<Arc<ProjectionSet>> {
        let service = log.id().service();
        let set = ProjectionSet::open(
            log.clone(),
            // The log's region: a read copy's projections are named after
            // the region that owns it.
            self.dir.join(format!("{service}-{}", log.id().region())),
            Arc::new(move |version: &str| Arc::new(converter(version)) as Arc<dyn Converter>),
            self.reconnects.clone(),
            self.failed.clone(),
            version,
        )
        .with_context(|| format!("opening the {service} projections"))?;
        set.feed(version, false)?;
        self.metrics.observe_projections(log, &set, versions);
        Ok(set)
    }
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
    let role_name = format!("{role:?}").to_lowercase();
    let process = config
        .process_name
        .clone()
        .unwrap_or_else(|| default_process_name(&role_name));
    tracing::info!(process, "fleetd process");
    let metrics = Arc::new(Metrics::new(&role_name, &config.region, &process));
    let log_options = LogOptions {
        replicas: config.nats_replicas,
        retry_for: config.nats_retry(),
    };
    let devices_log = open_log(&client, devices::SERVICE, &region, true, log_options).await?;
    // Meta and IAM live in the leading region; any other reads them from
    // read copies (docs/adr/0007).
    let meta_region = Id::parse(config.meta_region())?;
    let leads = meta_region == region;
    let meta_log = open_log(&client, meta::SERVICE, &meta_region, leads, log_options).await?;
    let iam_log = open_log(&client, iam::SERVICE, &meta_region, leads, log_options).await?;
    let device_logs =
        DeviceLogs::open(client.clone(), region.clone(), config.nats_replicas).await?;
    let tasks = TaskTracker::new();
    let page_tokens = page_token_key(&config.data_dir)?;
    let projector_failed = CancellationToken::new();
    let accept_commands = role != Role::Projector;

    let projections = Projections {
        dir: config.data_dir.join("projections"),
        reconnects,
        failed: projector_failed.clone(),
        metrics: metrics.clone(),
    };
    // IAM first: every call is authenticated against it.
    let iam_set = projections.open(&iam_log, iam::VERSIONS, |_| iam::converter(), iam::V1)?;
    let auth: Arc<dyn Authorizer> = Arc::new(IamAuthorizer::new(
        iam_set.active().clone(),
        config.bootstrap_admin_key.as_deref(),
    ));
    // Then Meta: the Devices deployment says which version is current.
    let meta_set = projections.open(&meta_log, meta::VERSIONS, |_| meta::converter(), meta::V1)?;
    // What every service's context shares; each has its own log,
    // projections and write gate.
    // Other regions' Devices, from read copies (filled as Meta names them).
    let devices_copies = crate::engine::ReadCopies::default();
    let context = |log: &EventLog,
                   set: &ProjectionSet,
                   versions: &'static [&'static str],
                   settle_writes: bool,
                   copies: crate::engine::ReadCopies| {
        Arc::new(ServiceContext {
            log: log.clone(),
            active: set.active().clone(),
            versions,
            write_gate: Default::default(),
            region: region.clone(),
            runs: &[devices::SERVICE_DOMAIN],
            page_tokens: page_tokens.clone(),
            read_wait: config.read_wait(),
            shutdown: shutdown.clone(),
            tasks: tasks.clone(),
            feeds: WatchFeeds::new(log.clone(), tasks.clone(), shutdown.clone()),
            accept_commands,
            settle_writes,
            auth: auth.clone(),
            open_watches: metrics.open_watches(log.id().service().as_str()),
            copies,
        })
    };
    let iam_ctx = context(&iam_log, &iam_set, iam::VERSIONS, true, Default::default());
    if accept_commands
        && leads
        && config.bootstrap_admin_key.is_none()
        && let Some(key) = bootstrap::admin_key(&iam_ctx).await?
    {
        // Shown this once: only its hash is kept.
        println!("fleetd bootstrap admin key (shown once, keep it safe): {key}");
    }
    // Meta writes settle too: a registration is visible (and checked
    // against) from its answer on, so a Service and then its Deployment can
    // be created back to back.
    let meta_ctx = context(
        &meta_log,
        &meta_set,
        meta::VERSIONS,
        true,
        Default::default(),
    );
    let deployments = Engine::<Deployment>::new(meta_ctx.clone());
    let deployment_name = deployment::deployment_name(devices::SERVICE_DOMAIN, &region)?;
    if accept_commands && leads {
        bootstrap::register(
            &meta_ctx,
            &region,
            &config.devices_initial_version,
            config.regional_domain(),
        )
        .await?;
    }
    let current =
        wait_for_deployment(&deployments, &deployment_name, &meta_region, &shutdown).await?;
    tracing::info!(deployment = %deployment_name, version = %current.current_version, "devices deployment");

    let devices_set = projections.open(
        &devices_log,
        devices::VERSIONS,
        devices::converter,
        &current.current_version,
    )?;
    metrics.observe_deployment(meta_set.active(), &deployment_name);
    let ctx = context(
        &devices_log,
        &devices_set,
        devices::VERSIONS,
        false,
        devices_copies.clone(),
    );

    let controller_stop = CancellationToken::new();
    let copies_task = tokio::spawn(
        copies::CopyKeeper {
            client: client.clone(),
            region: region.clone(),
            options: log_options,
            meta: meta_set.active().clone(),
            devices: devices_set.active().clone(),
            projections: projections.clone(),
            copies: devices_copies.clone(),
        }
        .run(controller_stop.clone()),
    );
    // Every api process of the region takes part in the switch fence.
    let (fence, fence_task) = if accept_commands {
        let fence = Fence::join(
            client.clone(),
            &region,
            config.nats_replicas,
            &process,
            &current.current_version,
        )
        .await?;
        let task = fence.keep_alive(controller_stop.clone());
        (Some(fence), Some(task))
    } else {
        (None, None)
    };
    let held_until_reconciled = if accept_commands
        && fleetlog_model::meta::deployment::stage(&current) == Stage::Switching
    {
        tracing::info!("started during a switch: writes wait for this process to take part");
        Some(ctx.write_gate.clone().write_owned().await)
    } else {
        None
    };
    let controller = UpgradeController {
        deployments: deployments.clone(),
        meta_log: meta_log.clone(),
        name: deployment_name,
        projections: devices_set.clone(),
        service: ctx.clone(),
        writes: accept_commands,
        fence,
        held_until_reconciled,
    };
    let controller_task = tokio::spawn(controller.run(controller_stop.clone()));
    let devices_apis = devices::apis(&ctx, &iam_ctx, device_logs, config.heartbeat_timeout());
    let limit = config.max_request_bytes;

    let (health, health_service) = tonic_health::server::health_reporter();
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

    // One set of routes serves gRPC, gRPC-Web (the layer below) and, in
    // process, the REST gateway. Health and reflection need no credentials
    // (probes and generic clients); every resource service is authenticated.
    let router = crate::routing::Router::new(
        &fleetlog_proto::catalog::CATALOG,
        &[meta::SERVICE, iam::SERVICE],
        region.clone(),
        meta_region.clone(),
        meta_set.active().clone(),
        limit,
    );
    let mut served = served::Served::new(
        tonic::service::Routes::new(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha),
        crate::routing::RouteLayer::new(router),
        AuthenticateLayer::new(auth.clone()),
    );
    macro_rules! serve {
        ($($server:ident($api:expr)),* $(,)?) => {
            $(served.add($server::new($api).max_decoding_message_size(limit));)*
        };
    }
    serve!(
        DeviceServiceServer(devices_apis.device_v1),
        V1alpha2DeviceServiceServer(devices_apis.device_v1alpha2),
        ProvisioningPolicyServiceServer(devices_apis.policies),
        ProvisioningApprovalRequestServiceServer(devices_apis.approval_requests),
        V1alpha2ProvisioningPolicyServiceServer(devices_apis.policies_v1alpha2),
        V1alpha2ProvisioningApprovalRequestServiceServer(devices_apis.approval_requests_v1alpha2),
        ServiceAccountServiceServer(ServiceAccountApi::new(iam_ctx.clone())),
        RoleBindingServiceServer(RoleBindingApi::new(iam_ctx.clone())),
        RegionServiceServer(RegionApi::new(Engine::new(meta_ctx.clone()))),
        ServiceServiceServer(ServiceApi::new(Engine::new(meta_ctx.clone()))),
        DeploymentServiceServer(DeploymentApi::new(deployments.clone())),
    );
    let missing = served.missing_from(&fleetlog_proto::catalog::CATALOG);
    if !missing.is_empty() {
        anyhow::bail!(
            "the API declares services fleetd does not serve: {} (add them in fleetd::serve)",
            missing.join(", ")
        );
    }
    let service_names = served.names().to_vec();
    let routes = served.into_routes();

    let mut grpc_server = tonic::transport::Server::builder();
    if let Some(tls) = &config.tls {
        let identity = tls::identity(tls)?;
        grpc_server = grpc_server
            .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
            .context("the TLS certificate and key")?;
    }
    let grpc_shutdown = shutdown.clone();
    let cors = gateway::cors::layer(&config.cors_allowed_origins);
    let grpc = grpc_server
        .accept_http1(true)
        // Outermost: a browser's preflight is answered before gRPC-Web.
        .layer(tower::util::option_layer(cors.clone()))
        .layer(tonic_web::GrpcWebLayer::new())
        .layer(metrics.grpc_layer())
        .add_routes(routes.clone())
        .serve_with_incoming_shutdown(
            // Without TCP_NODELAY small responses wait for delayed ACKs (~40 ms).
            tonic::transport::server::TcpIncoming::from(grpc_listener).with_nodelay(Some(true)),
            async move { grpc_shutdown.cancelled().await },
        );
    let grpc_task = tokio::spawn(async move { grpc.await.map_err(anyhow::Error::from) });

    // REST calls are gRPC calls in process, measured by the same layer.
    let metered = tower::ServiceBuilder::new()
        .layer(metrics.grpc_layer())
        .service(routes);
    let mut http_app = gateway::router(gateway::Gateway::new(metered), limit)
        .merge(crate::telemetry::routes(metrics.clone()));
    if let Some(cors) = cors {
        http_app = http_app.layer(cors);
    }
    let http_task = tokio::spawn(tls::serve_http(
        http_listener,
        http_app,
        config.tls.clone(),
        shutdown.clone(),
    ));

    for service in service_names {
        health
            .set_service_status(service, tonic_health::ServingStatus::Serving)
            .await;
    }
    health
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    // Scripts and tests wait for exactly this line on stdout.
    println!("fleetd ready grpc={} http={}", addrs.grpc, addrs.http);
    tracing::info!(grpc = %addrs.grpc, http = %addrs.http, ?role, "fleetd ready");
    if let Some(ready) = ready {
        let _ = ready.send(addrs);
    }

    let mut servers = [
        supervise::Essential::task("gRPC server", grpc_task),
        supervise::Essential::task("HTTP server", http_task),
        supervise::Essential::failure_signal("projector", projector_failed.clone()),
    ];
    let stopped = supervise::until_shutdown(&shutdown, &mut servers).await;
    tracing::info!("shutting down");
    health
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
    let drain = Duration::from_secs(10);
    let [grpc, http, _] = &mut servers;
    if !grpc.drain(drain).await {
        tracing::warn!("gRPC connections did not drain within {drain:?}");
    }
    http.drain(drain).await;
    tasks.close();
    if tokio::time::timeout(drain, tasks.wait()).await.is_err() {
        tracing::warn!("watch tasks did not stop within {drain:?}");
    }
    controller_stop.cancel();
    let _ = controller_task.await;
    let _ = copies_task.await;
    if let Some(task) = fence_task {
        // Leaves the fence: a stopped process holds up no switch.
        let _ = task.await;
    }
    devices_set.shutdown().await;
    meta_set.shutdown().await;
    iam_set.shutdown().await;
    client.flush().await.ok();
    tracing::info!("fleetd stopped");
    stopped
}

/// `{role}-{host}-{pid}`: unique among the processes of a region without
/// configuration (a host runs each pid once).
fn default_process_name(role: &str) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into());
    let host: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("{role}-{host}-{}", std::process::id())
}

/// Opens (creating if needed) the stream of one service in this region.
/// Opens `service`'s log of `region`: the stream itself when this region
/// `owns` it, else a read copy of it.
async fn open_log(
    client: &async_nats::Client,
    service: &str,
    region: &Id,
    owns: bool,
    options: LogOptions,
) -> anyhow::Result<EventLog> {
    let stream = StreamId::new(Id::parse(service)?, region.clone());
    let opening = async {
        if owns {
            EventLog::open_with(client.clone(), stream, options).await
        } else {
            EventLog::open_copy(client.clone(), stream, options).await
        }
    };
    let log = tokio::time::timeout(Duration::from_secs(30), opening)
        .await
        .context("NATS did not answer within 30 s")??;
    tracing::info!(server = %log.features().version, stream = %log.id().stream_name(), "event log open");
    if !log.features().full {
        tracing::warn!(
            server = %log.features().version,
            "nats-server is older than 2.12: later features (atomic batches, reservations) are unavailable"
        );
    }
    Ok(log)
}

/// The Deployment of this region's Devices service; a projector-role
/// process may start before an api process has registered it.
async fn wait_for_deployment(
    deployments: &Engine<Deployment>,
    name: &DeploymentName,
    meta_region: &Id,
    shutdown: &CancellationToken,
) -> anyhow::Result<Deployment> {
    let copy = deployments.context().log.is_copy();
    loop {
        if let Some(found) = UpgradeController::current(deployments, name).await? {
            return Ok(found);
        }
        if copy {
            // A region joins by its Deployment, added where Meta lives.
            tracing::info!(deployment = %name, leading_region = %meta_region, "waiting for the deployment: create it in the leading region");
        } else {
            tracing::info!(deployment = %name, "waiting for an api process to register the deployment");
        }
        tokio::select! {
            _ = shutdown.cancelled() => anyhow::bail!("shut down before {name} was registered"),
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

/// Connects to NATS, retrying for a while: the server may still be starting.
/// `reconnected` counts re-established connections, for the projector.
async fn connect_nats(
    url: &str,
    role: Role,
    shutdown: &CancellationToken,
    reconnected: tokio::sync::watch::Sender<u64>,
) -> anyhow::Result<async_nats::Client> {
    let servers = config::nats_servers(url).map_err(anyhow::Error::msg)?;
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
            .connect(servers.as_slice())
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
