//! Where and as whom fleetctl connects: the gRPC channel (plain or TLS) and
//! the `authorization: Bearer <key>` every call carries.

use std::path::PathBuf;
use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::cli::DEFAULT_ENDPOINT;
use crate::error::Error;

/// A channel that sends the configured key on every call.
pub type AuthedChannel = InterceptedService<Channel, Auth>;

/// Adds `authorization: Bearer <key>` to every call when a key is configured.
#[derive(Debug, Clone, Default)]
pub struct Auth {
    header: Option<MetadataValue<Ascii>>,
}

impl Auth {
    /// An interceptor for `key`; no key (or an empty one) sends no credentials.
    pub fn new(key: Option<&str>) -> Result<Self, Error> {
        let header = match key.map(str::trim).filter(|k| !k.is_empty()) {
            None => None,
            Some(key) => {
                let mut value = MetadataValue::try_from(format!("Bearer {key}")).map_err(|_| {
                    Error::Usage(
                        "the API key (--key / FLEETLOG_KEY / the config file's `key`) contains \
                         characters that cannot be sent in a header"
                            .to_owned(),
                    )
                })?;
                value.set_sensitive(true);
                Some(value)
            }
        };
        Ok(Auth { header })
    }
}

impl Interceptor for Auth {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(header) = &self.header {
            request
                .metadata_mut()
                .insert("authorization", header.clone());
        }
        Ok(request)
    }
}

/// `endpoint` with `http://` added when it has no scheme (`127.0.0.1:7400`); an
/// empty endpoint (e.g. `FLEETLOG_ENDPOINT=`) means the default.
pub fn normalize_endpoint(endpoint: &str) -> String {
    let endpoint = endpoint.trim();
    if endpoint.is_empty() {
        DEFAULT_ENDPOINT.to_owned()
    } else if endpoint.contains("://") {
        endpoint.to_owned()
    } else {
        format!("http://{endpoint}")
    }
}

/// Where and as whom to connect. Commands check their arguments first and connect
/// only then, so a usage error never waits for the network.
#[derive(Debug, Clone, Default)]
pub struct Connection {
    pub endpoint: String,
    pub key: Option<String>,
    /// A PEM certificate (or bundle) to trust for an `https://` endpoint,
    /// beside the system's roots.
    pub ca_cert: Option<PathBuf>,
    /// The name to verify the server's certificate against, when it is not
    /// the endpoint's host.
    pub tls_server_name: Option<String>,
}

impl Connection {
    /// A connected channel carrying the key; a failure names the endpoint.
    pub async fn channel(&self) -> Result<AuthedChannel, Error> {
        let (channel, auth) = open_channel(self).await?;
        Ok(InterceptedService::new(channel, auth))
    }
}

/// Where the system's CA bundle usually is (`SSL_CERT_FILE` first).
const SYSTEM_CA_BUNDLES: [&str; 4] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
    "/etc/ssl/ca-bundle.pem",
];

/// The system's CA certificates, if a bundle is found (tonic is built
/// without a root store of its own).
fn system_roots() -> Option<Certificate> {
    let from_env = std::env::var_os("SSL_CERT_FILE").map(PathBuf::from);
    from_env
        .into_iter()
        .chain(SYSTEM_CA_BUNDLES.iter().map(PathBuf::from))
        .find_map(|path| std::fs::read(path).ok())
        .map(Certificate::from_pem)
}

/// The TLS settings for an `https://` endpoint.
fn tls_config(conn: &Connection) -> Result<ClientTlsConfig, Error> {
    let mut tls = ClientTlsConfig::new().assume_http2(true);
    if let Some(roots) = system_roots() {
        tls = tls.ca_certificate(roots);
    }
    if let Some(path) = &conn.ca_cert {
        let pem = std::fs::read(path).map_err(|err| {
            Error::Config(format!(
                "cannot read the CA certificate {} (--ca-cert / FLEETLOG_CA_CERT / ca_cert): {err}",
                path.display()
            ))
        })?;
        if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
            return Err(Error::Config(format!(
                "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                path.display()
            )));
        }
        tls = tls.ca_certificate(Certificate::from_pem(pem));
    }
    if let Some(name) = conn.tls_server_name.as_deref().filter(|n| !n.is_empty()) {
        tls = tls.domain_name(name);
    }
    Ok(tls)
}

/// The gRPC channel every fleetctl client uses, and the credentials to
/// attach; a failure names the endpoint. `https://` endpoints use TLS.
pub async fn open_channel(conn: &Connection) -> Result<(Channel, Auth), Error> {
    let auth = Auth::new(conn.key.as_deref())?;
    let uri = normalize_endpoint(&conn.endpoint);
    let mut endpoint = Endpoint::from_shared(uri.clone())
        .map_err(|err| Error::Config(format!("invalid endpoint '{}': {err}", conn.endpoint)))?
        .connect_timeout(Duration::from_secs(10))
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20))
        .keep_alive_while_idle(true);
    if uri.starts_with("https://") {
        endpoint = endpoint.tls_config(tls_config(conn)?).map_err(|source| {
            Error::Config(format!(
                "TLS settings for {uri}: {}",
                crate::error::chain(&source)
            ))
        })?;
    } else if conn.ca_cert.is_some() {
        return Err(Error::Usage(format!(
            "--ca-cert is given but the endpoint {uri} is not https://"
        )));
    }
    let channel = endpoint.connect().await.map_err(|source| Error::Connect {
        endpoint: uri,
        source,
    })?;
    Ok((channel, auth))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_without_scheme_gets_http() {
        assert_eq!(
            normalize_endpoint("127.0.0.1:7400"),
            "http://127.0.0.1:7400"
        );
        assert_eq!(normalize_endpoint("https://x:1"), "https://x:1");
        assert_eq!(normalize_endpoint(" "), DEFAULT_ENDPOINT);
    }

    #[test]
    fn auth_header_is_sent_when_a_key_is_set() {
        let mut auth = Auth::new(Some("s3cret")).expect("valid key");
        let request = auth.call(tonic::Request::new(())).expect("intercepted");
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        assert_eq!(header, Some("Bearer s3cret"));

        let mut auth = Auth::new(None).expect("no key");
        let request = auth.call(tonic::Request::new(())).expect("intercepted");
        assert!(request.metadata().get("authorization").is_none());

        assert!(Auth::new(Some("bad\nkey")).is_err());
    }

    #[tokio::test]
    async fn ca_cert_needs_https_and_a_readable_pem() {
        let conn = Connection {
            endpoint: "http://127.0.0.1:1".into(),
            ca_cert: Some("/nonexistent.pem".into()),
            ..Default::default()
        };
        assert!(matches!(open_channel(&conn).await, Err(Error::Usage(_))));
        let conn = Connection {
            endpoint: "https://127.0.0.1:1".into(),
            ca_cert: Some("/nonexistent/fleetlog-ca.pem".into()),
            ..Default::default()
        };
        match open_channel(&conn).await {
            Err(Error::Config(message)) => {
                assert!(message.contains("fleetlog-ca.pem"), "{message}")
            }
            other => panic!("{other:?}"),
        }
    }
}
