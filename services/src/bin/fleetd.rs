//! `fleetd all|api|projector [--config FILE]`.

use clap::Parser;
use fleetlog_services::fleetd::{self, Config, Role};
use fleetlog_services::telemetry;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(name = "fleetd", version, about = "The Fleetlog server")]
struct Args {
    /// all: everything in one process; api: commands, queries, watch;
    /// projector: projections and queries.
    #[arg(value_enum)]
    role: Role,
    /// A YAML config file; FLEETLOG_* environment variables override it.
    #[arg(long)]
    config: Option<std::path::PathBuf>,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let config = match Config::load(args.config.as_deref(), |k| std::env::var(k).ok()) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("fleetd: {err}");
            return std::process::ExitCode::from(2);
        }
    };
    if let Err(message) = args.role.check(&config) {
        eprintln!("fleetd: {message}");
        return std::process::ExitCode::from(2);
    }
    // After the config: it says where spans go.
    let spans = match telemetry::otlp::init(config.otlp_endpoint.as_deref()) {
        Ok(spans) => spans,
        Err(err) => {
            eprintln!("fleetd: {err:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let shutdown = CancellationToken::new();
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            wait_for_signal().await;
            shutdown.cancel();
        }
    });
    let result = fleetd::run(args.role, config, shutdown, None).await;
    spans.shutdown().await;
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("fleetd: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
