//! TLS on both listeners from a certificate made by ops/tls-selfsigned.sh:
//! a gRPC call and an HTTPS request complete the handshake and are served;
//! plaintext is refused.

use crate::common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use common::{PARENT, Sandbox};
use fleetlog_proto::devices::v1::ListDevicesRequest;
use fleetlog_proto::devices::v1::device_service_client::DeviceServiceClient;
use fleetlog_services::fleetd::config::TlsFiles;
use fleetlog_tests::{ADMIN_KEY, Bearer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

/// Makes a self-signed pair with the script users run.
fn self_signed(dir: &Path) -> anyhow::Result<TlsFiles> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ops/tls-selfsigned.sh");
    let output = std::process::Command::new(&script)
        .arg(dir)
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    anyhow::ensure!(
        output.status.success(),
        "{} failed: {}",
        script.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(TlsFiles {
        cert_file: dir.join("fleetd.crt"),
        key_file: dir.join("fleetd.key"),
    })
}

#[tokio::test]
async fn grpc_and_http_are_served_over_tls() -> anyhow::Result<()> {
    let certs = tempfile::tempdir()?;
    let tls = self_signed(certs.path())?;
    let cert_pem = std::fs::read(&tls.cert_file)?;
    let sandbox = Sandbox::start_with(|config| config.tls = Some(tls.clone())).await?;

    // gRPC: the handshake verifies the server against the certificate.
    let channel =
        Endpoint::from_shared(format!("https://localhost:{}", sandbox.ready.grpc.port()))?
            .tls_config(
                ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(&cert_pem))
                    .domain_name("localhost"),
            )?
            .connect()
            .await
            .context("TLS handshake with the gRPC listener")?;
    let mut client = DeviceServiceClient::with_interceptor(channel, Bearer::new(ADMIN_KEY)?);
    let listed = client
        .list_devices(ListDevicesRequest {
            parent: PARENT.into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert!(listed.devices.is_empty());

    // Plaintext gRPC to the TLS port gets no answer.
    let plain = Endpoint::from_shared(sandbox.grpc_url())?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(2))
        .connect()
        .await;
    if let Ok(plain) = plain {
        let mut plain = DeviceServiceClient::with_interceptor(plain, Bearer::new(ADMIN_KEY)?);
        let refused = plain
            .list_devices(ListDevicesRequest {
                parent: PARENT.into(),
                ..Default::default()
            })
            .await;
        assert!(
            refused.is_err(),
            "plaintext gRPC was served on the TLS port"
        );
    }

    // HTTPS: a rustls client trusting only this certificate.
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(&cert_pem) {
        roots.add(cert?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client_config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config));
    let tcp = tokio::net::TcpStream::connect(sandbox.ready.http).await?;
    let server_name = rustls::pki_types::ServerName::try_from("localhost")?;
    let mut stream =
        tokio::time::timeout(Duration::from_secs(10), connector.connect(server_name, tcp))
            .await?
            .context("TLS handshake with the HTTP listener")?;
    stream
        .write_all(
            format!(
                "GET /v1/{PARENT}/devices HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {ADMIN_KEY}\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .await?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await??;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("application/json"), "{answer}");

    // Plain HTTP to the TLS port is not served.
    let plain = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()?
        .get(format!("http://{}/healthz", sandbox.ready.http))
        .send()
        .await;
    assert!(
        plain.as_ref().map_or(true, |r| !r.status().is_success()),
        "plain HTTP was served on the TLS port: {plain:?}"
    );
    sandbox.stop().await
}
