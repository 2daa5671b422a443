//! TLS for both listeners from one configured certificate and key (rustls
//! with the ring provider): tonic's for gRPC, axum-server's for HTTP.

use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::config::TlsFiles;

/// The gRPC server's identity from the configured PEM files.
pub fn identity(tls: &TlsFiles) -> anyhow::Result<tonic::transport::Identity> {
    let cert = std::fs::read(&tls.cert_file)
        .with_context(|| format!("reading the TLS certificate {}", tls.cert_file.display()))?;
    let key = std::fs::read(&tls.key_file)
        .with_context(|| format!("reading the TLS key {}", tls.key_file.display()))?;
    Ok(tonic::transport::Identity::from_pem(cert, key))
}

/// Serves `app` on `listener` until `shutdown`, over TLS when configured.
pub async fn serve_http(
    listener: TcpListener,
    app: axum::Router,
    tls: Option<TlsFiles>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let Some(tls) = tls else {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await?;
        return Ok(());
    };
    // rustls needs a process-wide provider; only ring is built in. Another
    // fleetd in the same process may have installed it already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config =
        axum_server::tls_rustls::RustlsConfig::from_pem_file(&tls.cert_file, &tls.key_file)
            .await
            .with_context(|| {
                format!(
                    "loading the TLS certificate {} and key {}",
                    tls.cert_file.display(),
                    tls.key_file.display()
                )
            })?;
    let handle = axum_server::Handle::new();
    tokio::spawn({
        let handle = handle.clone();
        async move {
            shutdown.cancelled().await;
            // Open event streams end with the watch tasks; do not wait on them.
            handle.graceful_shutdown(Some(Duration::from_secs(5)));
        }
    });
    axum_server::from_tcp_rustls(listener.into_std()?, config)?
        .handle(handle)
        .serve(app.into_make_service())
        .await?;
    Ok(())
}
