//! fleetd configuration: one YAML file that states its `version` (unknown keys
//! rejected), with a `FLEETLOG_*` environment variable per key on top.
//!
//! `ops/config.md` documents every key; `ops/config/*.yaml` are the examples
//! (the tests below parse them, so they cannot rot).

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;

/// The config file format version this build reads.
pub const CONFIG_VERSION: u32 = 1;

/// The keys a config file may hold, in the order `ops/config.md` lists them.
pub const KEYS: &[&str] = &[
    "version",
    "nats_url",
    "listen",
    "http_listen",
    "data_dir",
    "region",
    "bootstrap_admin_key",
    "nats_server_bin",
    "read_wait_ms",
    "devices_initial_version",
    "heartbeat_timeout_ms",
    "max_request_bytes",
    "tls",
    "otlp_endpoint",
    "cors_allowed_origins",
];

/// The keys under `tls:`.
const TLS_KEYS: &[&str] = &["cert_file", "key_file"];

/// Each key and the environment variable that overrides it.
pub const ENV_VARS: &[(&str, &str)] = &[
    ("nats_url", "FLEETLOG_NATS_URL"),
    ("listen", "FLEETLOG_LISTEN"),
    ("http_listen", "FLEETLOG_HTTP_LISTEN"),
    ("data_dir", "FLEETLOG_DATA_DIR"),
    ("region", "FLEETLOG_REGION"),
    ("bootstrap_admin_key", "FLEETLOG_BOOTSTRAP_ADMIN_KEY"),
    ("nats_server_bin", "FLEETLOG_NATS_SERVER"),
    ("read_wait_ms", "FLEETLOG_READ_WAIT_MS"),
    (
        "devices_initial_version",
        "FLEETLOG_DEVICES_INITIAL_VERSION",
    ),
    ("heartbeat_timeout_ms", "FLEETLOG_HEARTBEAT_TIMEOUT_MS"),
    ("max_request_bytes", "FLEETLOG_MAX_REQUEST_BYTES"),
    ("tls.cert_file", "FLEETLOG_TLS_CERT"),
    ("tls.key_file", "FLEETLOG_TLS_KEY"),
    ("otlp_endpoint", "FLEETLOG_OTLP_ENDPOINT"),
    ("cors_allowed_origins", "FLEETLOG_CORS_ALLOWED_ORIGINS"),
];

#[derive(Clone, PartialEq)]
pub struct Config {
    pub version: u32,
    /// NATS server to use; when unset, `fleetd all` starts its own.
    pub nats_url: Option<String>,
    /// gRPC (and gRPC-Web) listen address.
    pub listen: SocketAddr,
    /// HTTP listen address (health, REST, SSE, metrics, console).
    pub http_listen: SocketAddr,
    /// Projections and the managed nats-server's store.
    pub data_dir: PathBuf,
    /// The region this process serves.
    pub region: String,
    /// Admin key to create on first start.
    pub bootstrap_admin_key: Option<String>,
    /// The nats-server binary for the managed server.
    pub nats_server_bin: PathBuf,
    /// Longest wait for a query's `min_revision`, in milliseconds.
    pub read_wait_ms: u64,
    /// The Devices API version a new region starts on (later versions are
    /// reached by upgrades); ignored once the region's Deployment exists.
    pub devices_initial_version: String,
    /// A device whose agent sends no heartbeat for this long (milliseconds)
    /// is marked offline.
    pub heartbeat_timeout_ms: u64,
    /// Largest request message (bytes); larger ones are refused with
    /// RESOURCE_EXHAUSTED before they are decoded.
    pub max_request_bytes: usize,
    /// When set, gRPC and HTTP are served over TLS with this pair.
    /// [`Config::load`] checked that both files hold PEM that belong together.
    pub tls: Option<TlsFiles>,
    /// OTLP/gRPC collector to export traces to (`http://127.0.0.1:4317`).
    pub otlp_endpoint: Option<String>,
    /// Web origins (`https://console.example.com`, or `*`) whose pages may
    /// call fleetd through gRPC-Web and REST; empty: none (no CORS).
    pub cors_allowed_origins: Vec<String>,
}

/// A PEM certificate (chain, leaf first) and its private key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            version: CONFIG_VERSION,
            nats_url: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 7400)),
            http_listen: SocketAddr::from(([127, 0, 0, 1], 7401)),
            data_dir: PathBuf::from("./data"),
            region: "local".into(),
            bootstrap_admin_key: None,
            nats_server_bin: PathBuf::from("nats-server"),
            read_wait_ms: 5000,
            devices_initial_version: crate::devices::DEFAULT_VERSION.into(),
            heartbeat_timeout_ms: 60_000,
            max_request_bytes: 4 * 1024 * 1024,
            tls: None,
            otlp_endpoint: None,
            cors_allowed_origins: Vec::new(),
        }
    }
}

impl fmt::Debug for Config {
    /// Like the derived one, without the bootstrap admin key's value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("version", &self.version)
            .field("nats_url", &self.nats_url)
            .field("listen", &self.listen)
            .field("http_listen", &self.http_listen)
            .field("data_dir", &self.data_dir)
            .field("region", &self.region)
            .field(
                "bootstrap_admin_key",
                &self.bootstrap_admin_key.as_ref().map(|_| "<redacted>"),
            )
            .field("nats_server_bin", &self.nats_server_bin)
            .field("read_wait_ms", &self.read_wait_ms)
            .field("devices_initial_version", &self.devices_initial_version)
            .field("heartbeat_timeout_ms", &self.heartbeat_timeout_ms)
            .field("max_request_bytes", &self.max_request_bytes)
            .field("tls", &self.tls)
            .field("otlp_endpoint", &self.otlp_endpoint)
            .field("cors_allowed_origins", &self.cors_allowed_origins)
            .finish()
    }
}

/// Why a configuration was refused. Every message names where the bad value
/// came from (the file and line, or the environment variable) and what to do.
#[derive(Debug)]
pub enum ConfigError {
    /// The config file cannot be read.
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The config file is not valid YAML, has an unknown key, a value of the
    /// wrong type, no or another version, or a value that fails a check.
    Parse {
        path: PathBuf,
        line: Option<usize>,
        column: Option<usize>,
        message: String,
    },
    /// A `FLEETLOG_*` variable holds a value that does not parse or fails a
    /// check.
    Env {
        name: &'static str,
        value: String,
        message: String,
    },
    /// A value set in code (not from a file or the environment) is invalid.
    Invalid(String),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read { path, source } => {
                write!(
                    f,
                    "cannot read the config file {}: {source}",
                    path.display()
                )
            }
            ConfigError::Parse {
                path,
                line,
                column,
                message,
            } => {
                write!(f, "{}", path.display())?;
                if let Some(line) = line {
                    write!(f, ":{line}")?;
                    if let Some(column) = column {
                        write!(f, ":{column}")?;
                    }
                }
                write!(f, ": {message}")
            }
            ConfigError::Env {
                name,
                value,
                message,
            } => write!(f, "environment variable {name}={value:?}: {message}"),
            ConfigError::Invalid(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConfigError::Read { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// The file as written: every key optional, so the file says only what it
/// changes. The field order is [`KEYS`]' (serde lists them in errors).
#[derive(Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping of fleetd config keys (see ops/config.md)"
)]
struct FileConfig {
    /// Checked before, by [`VersionProbe`].
    #[allow(dead_code)]
    version: Option<u32>,
    nats_url: Option<String>,
    listen: Option<SocketAddr>,
    http_listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    region: Option<String>,
    bootstrap_admin_key: Option<String>,
    nats_server_bin: Option<PathBuf>,
    read_wait_ms: Option<u64>,
    devices_initial_version: Option<String>,
    heartbeat_timeout_ms: Option<u64>,
    max_request_bytes: Option<usize>,
    tls: Option<FileTls>,
    otlp_endpoint: Option<String>,
    cors_allowed_origins: Option<Vec<String>>,
}

#[derive(Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with cert_file and key_file"
)]
struct FileTls {
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
}

/// Only the version, read before anything else: a file for another version
/// is refused for that reason, not for keys this build does not know.
#[derive(Deserialize)]
#[serde(expecting = "a mapping of fleetd config keys (see ops/config.md)")]
struct VersionProbe {
    #[serde(default)]
    version: Option<u32>,
}

/// Where a value came from, for error messages.
enum Origin {
    File { line: Option<usize> },
    Env { name: &'static str, value: String },
}

struct Sources<'a> {
    file: Option<(&'a Path, &'a str)>,
    origins: HashMap<&'static str, Origin>,
}

impl Sources<'_> {
    fn set_by_file(&mut self, key: &'static str) {
        let line = self.file.and_then(|(_, text)| line_of(text, key));
        self.origins.insert(key, Origin::File { line });
    }

    fn set_by_env(&mut self, key: &'static str, name: &'static str, value: &str) {
        self.origins.insert(
            key,
            Origin::Env {
                name,
                value: value.to_owned(),
            },
        );
    }

    /// `key`'s value `shown` is refused because it `problem` ("is not …").
    fn invalid(&self, key: &'static str, shown: &str, problem: impl fmt::Display) -> ConfigError {
        match (self.origins.get(key), self.file) {
            (Some(Origin::Env { name, value }), _) => ConfigError::Env {
                name,
                value: value.clone(),
                message: format!("{key} {problem}"),
            },
            (Some(Origin::File { line }), Some((path, _))) => ConfigError::Parse {
                path: path.to_owned(),
                line: *line,
                column: None,
                message: format!("{key} {shown:?} {problem}"),
            },
            _ => ConfigError::Invalid(format!("{key} {shown:?} {problem}")),
        }
    }
}

impl Config {
    /// Reads `file` (if any), then applies overrides from `env`, then checks
    /// the result (including that the TLS files exist and hold a matching
    /// PEM certificate and key).
    pub fn load(
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                Config::build(Some((path, text.as_str())), env, true)
            }
            None => Config::build(None, env, true),
        }
    }

    /// [`Config::load`] for a file already read: `path` only names it in
    /// errors.
    pub fn load_str(
        path: &Path,
        text: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        Config::build(Some((path, text)), env, true)
    }

    fn build(
        file: Option<(&Path, &str)>,
        env: impl Fn(&str) -> Option<String>,
        check_files: bool,
    ) -> Result<Config, ConfigError> {
        let mut config = Config::default();
        let mut sources = Sources {
            file,
            origins: HashMap::new(),
        };
        let (mut cert_file, mut key_file) = (None, None);
        if let Some((path, text)) = file {
            let parsed = parse_file(path, text)?;
            config.apply_file(parsed, &mut sources, &mut cert_file, &mut key_file);
        }

        // An empty variable counts as unset.
        let var = |name: &'static str| env(name).filter(|v| !v.is_empty());
        if let Some(v) = var("FLEETLOG_NATS_URL") {
            sources.set_by_env("nats_url", "FLEETLOG_NATS_URL", &v);
            config.nats_url = Some(v);
        }
        if let Some(v) = var("FLEETLOG_LISTEN") {
            config.listen = parse_env("FLEETLOG_LISTEN", &v, ADDRESS)?;
            sources.set_by_env("listen", "FLEETLOG_LISTEN", &v);
        }
        if let Some(v) = var("FLEETLOG_HTTP_LISTEN") {
            config.http_listen = parse_env("FLEETLOG_HTTP_LISTEN", &v, ADDRESS)?;
            sources.set_by_env("http_listen", "FLEETLOG_HTTP_LISTEN", &v);
        }
        if let Some(v) = var("FLEETLOG_DATA_DIR") {
            sources.set_by_env("data_dir", "FLEETLOG_DATA_DIR", &v);
            config.data_dir = PathBuf::from(v);
        }
        if let Some(v) = var("FLEETLOG_REGION") {
            sources.set_by_env("region", "FLEETLOG_REGION", &v);
            config.region = v;
        }
        if let Some(v) = var("FLEETLOG_BOOTSTRAP_ADMIN_KEY") {
            config.bootstrap_admin_key = Some(v);
        }
        if let Some(v) = var("FLEETLOG_NATS_SERVER") {
            sources.set_by_env("nats_server_bin", "FLEETLOG_NATS_SERVER", &v);
            config.nats_server_bin = PathBuf::from(v);
        }
        if let Some(v) = var("FLEETLOG_READ_WAIT_MS") {
            config.read_wait_ms = parse_env("FLEETLOG_READ_WAIT_MS", &v, MILLISECONDS)?;
        }
        if let Some(v) = var("FLEETLOG_DEVICES_INITIAL_VERSION") {
            sources.set_by_env(
                "devices_initial_version",
                "FLEETLOG_DEVICES_INITIAL_VERSION",
                &v,
            );
            config.devices_initial_version = v;
        }
        if let Some(v) = var("FLEETLOG_HEARTBEAT_TIMEOUT_MS") {
            config.heartbeat_timeout_ms =
                parse_env("FLEETLOG_HEARTBEAT_TIMEOUT_MS", &v, MILLISECONDS)?;
        }
        if let Some(v) = var("FLEETLOG_MAX_REQUEST_BYTES") {
            config.max_request_bytes = parse_env("FLEETLOG_MAX_REQUEST_BYTES", &v, BYTES)?;
            sources.set_by_env("max_request_bytes", "FLEETLOG_MAX_REQUEST_BYTES", &v);
        }
        if let Some(v) = var("FLEETLOG_TLS_CERT") {
            sources.set_by_env("tls.cert_file", "FLEETLOG_TLS_CERT", &v);
            cert_file = Some(PathBuf::from(v));
        }
        if let Some(v) = var("FLEETLOG_TLS_KEY") {
            sources.set_by_env("tls.key_file", "FLEETLOG_TLS_KEY", &v);
            key_file = Some(PathBuf::from(v));
        }
        if let Some(v) = var("FLEETLOG_OTLP_ENDPOINT") {
            sources.set_by_env("otlp_endpoint", "FLEETLOG_OTLP_ENDPOINT", &v);
            config.otlp_endpoint = Some(v);
        }
        if let Some(v) = var("FLEETLOG_CORS_ALLOWED_ORIGINS") {
            sources.set_by_env("cors_allowed_origins", "FLEETLOG_CORS_ALLOWED_ORIGINS", &v);
            config.cors_allowed_origins = v
                .split(',')
                .map(str::trim)
                .filter(|o| !o.is_empty())
                .map(str::to_owned)
                .collect();
        }

        config.tls = match (cert_file, key_file) {
            (Some(cert_file), Some(key_file)) => Some(TlsFiles {
                cert_file,
                key_file,
            }),
            (None, None) => None,
            (Some(cert), None) => {
                return Err(sources.invalid(
                    "tls.cert_file",
                    &cert.display().to_string(),
                    "is set but tls.key_file is not: set both (FLEETLOG_TLS_CERT and \
                     FLEETLOG_TLS_KEY in the environment) or neither",
                ));
            }
            (None, Some(key)) => {
                return Err(sources.invalid(
                    "tls.key_file",
                    &key.display().to_string(),
                    "is set but tls.cert_file is not: set both (FLEETLOG_TLS_CERT and \
                     FLEETLOG_TLS_KEY in the environment) or neither",
                ));
            }
        };
        config.check(&sources, check_files)?;
        Ok(config)
    }

    fn apply_file(
        &mut self,
        file: FileConfig,
        sources: &mut Sources<'_>,
        cert_file: &mut Option<PathBuf>,
        key_file: &mut Option<PathBuf>,
    ) {
        if let Some(v) = file.nats_url {
            sources.set_by_file("nats_url");
            self.nats_url = Some(v);
        }
        if let Some(v) = file.listen {
            sources.set_by_file("listen");
            self.listen = v;
        }
        if let Some(v) = file.http_listen {
            sources.set_by_file("http_listen");
            self.http_listen = v;
        }
        if let Some(v) = file.data_dir {
            sources.set_by_file("data_dir");
            self.data_dir = v;
        }
        if let Some(v) = file.region {
            sources.set_by_file("region");
            self.region = v;
        }
        if let Some(v) = file.bootstrap_admin_key {
            self.bootstrap_admin_key = Some(v);
        }
        if let Some(v) = file.nats_server_bin {
            sources.set_by_file("nats_server_bin");
            self.nats_server_bin = v;
        }
        if let Some(v) = file.read_wait_ms {
            self.read_wait_ms = v;
        }
        if let Some(v) = file.devices_initial_version {
            sources.set_by_file("devices_initial_version");
            self.devices_initial_version = v;
        }
        if let Some(v) = file.heartbeat_timeout_ms {
            self.heartbeat_timeout_ms = v;
        }
        if let Some(v) = file.max_request_bytes {
            sources.set_by_file("max_request_bytes");
            self.max_request_bytes = v;
        }
        if let Some(tls) = file.tls {
            if let Some(v) = tls.cert_file {
                sources.set_by_file("tls.cert_file");
                *cert_file = Some(v);
            }
            if let Some(v) = tls.key_file {
                sources.set_by_file("tls.key_file");
                *key_file = Some(v);
            }
        }
        if let Some(v) = file.otlp_endpoint {
            sources.set_by_file("otlp_endpoint");
            self.otlp_endpoint = Some(v);
        }
        if let Some(v) = file.cors_allowed_origins {
            sources.set_by_file("cors_allowed_origins");
            self.cors_allowed_origins = v;
        }
    }

    /// The checks that need more than the type; errors name the value's
    /// origin.
    fn check(&self, sources: &Sources<'_>, check_files: bool) -> Result<(), ConfigError> {
        if let Err(e) = fleetlog_events::Id::parse(&self.region) {
            return Err(sources.invalid(
                "region",
                &self.region,
                format_args!("is not a valid region ID: {e}"),
            ));
        }
        if !crate::devices::VERSIONS.contains(&self.devices_initial_version.as_str()) {
            return Err(sources.invalid(
                "devices_initial_version",
                &self.devices_initial_version,
                format_args!(
                    "is not a Devices API version; use one of {}",
                    crate::devices::VERSIONS.join(", ")
                ),
            ));
        }
        if self.max_request_bytes == 0 {
            return Err(sources.invalid("max_request_bytes", "0", "must be at least 1"));
        }
        if self.listen == self.http_listen && self.listen.port() != 0 {
            let (key, other) = match sources.origins.get("http_listen") {
                Some(_) => ("http_listen", "listen"),
                None => ("listen", "http_listen"),
            };
            return Err(sources.invalid(
                key,
                &self.listen.to_string(),
                format_args!("is also {other}: gRPC and HTTP need different ports"),
            ));
        }
        if let Some(url) = &self.nats_url
            && let Err(e) = url.parse::<async_nats::ServerAddr>()
        {
            return Err(sources.invalid(
                "nats_url",
                url,
                format_args!("is rejected: {e}; write it like nats://127.0.0.1:4222"),
            ));
        }
        if let Some(endpoint) = &self.otlp_endpoint {
            let rest = endpoint
                .strip_prefix("http://")
                .or_else(|| endpoint.strip_prefix("https://"));
            if rest.is_none_or(|host| host.is_empty()) {
                return Err(sources.invalid(
                    "otlp_endpoint",
                    endpoint,
                    "is not an OTLP/gRPC collector URL: it must start with http:// or \
                     https://, e.g. http://127.0.0.1:4317",
                ));
            }
        }
        for origin in &self.cors_allowed_origins {
            if let Err(problem) = check_origin(origin) {
                return Err(sources.invalid("cors_allowed_origins", origin, problem));
            }
        }
        if check_files && let Some(tls) = &self.tls {
            tls.check()
                .map_err(|(key, path, problem)| sources.invalid(key, &path, problem))?;
        }
        Ok(())
    }

    pub fn read_wait(&self) -> Duration {
        Duration::from_millis(self.read_wait_ms)
    }

    pub fn heartbeat_timeout(&self) -> Duration {
        Duration::from_millis(self.heartbeat_timeout_ms.max(1))
    }
}

impl TlsFiles {
    /// Reads both files: the PEM certificate chain (leaf first) and the PEM
    /// private key, checked to belong together; for tonic's
    /// `Identity::from_pem` and axum-server's `RustlsConfig::from_pem`.
    pub fn read_pem(&self) -> Result<(Vec<u8>, Vec<u8>), ConfigError> {
        self.read_checked().map_err(|(key, path, problem)| {
            ConfigError::Invalid(format!("{key} {path:?} {problem}"))
        })
    }

    /// The parsed certificate chain and key, checked to belong together.
    pub fn read_der(
        &self,
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), ConfigError> {
        let (cert_pem, key_pem) = self.read_pem()?;
        let certs = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ConfigError::Invalid(format!("tls.cert_file: {e}")))?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|e| ConfigError::Invalid(format!("tls.key_file: {e}")))?;
        Ok((certs, key))
    }

    fn check(&self) -> Result<(), (&'static str, String, String)> {
        self.read_checked().map(|_| ())
    }

    /// Errors are (key, path, problem).
    #[allow(clippy::type_complexity)]
    fn read_checked(&self) -> Result<(Vec<u8>, Vec<u8>), (&'static str, String, String)> {
        let cert_path = self.cert_file.display().to_string();
        let key_path = self.key_file.display().to_string();
        let read = |key: &'static str, path: &Path, shown: &str| {
            std::fs::read(path).map_err(|e| {
                (
                    key,
                    shown.to_owned(),
                    format!(
                        "cannot be read: {e}; fix the path (relative paths start at \
                         fleetd's working directory), or make a pair for local use \
                         with ops/tls-selfsigned.sh"
                    ),
                )
            })
        };
        let cert_pem = read("tls.cert_file", &self.cert_file, &cert_path)?;
        let key_pem = read("tls.key_file", &self.key_file, &key_path)?;
        let certs = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| {
                (
                    "tls.cert_file",
                    cert_path.clone(),
                    format!("is not a PEM certificate file: {e}"),
                )
            })?;
        if certs.is_empty() {
            return Err((
                "tls.cert_file",
                cert_path,
                "holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into(),
            ));
        }
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
            let problem = match e {
                rustls::pki_types::pem::Error::NoItemsFound => {
                    "holds no PEM private key (-----BEGIN PRIVATE KEY-----, \
                     EC PRIVATE KEY or RSA PRIVATE KEY)"
                        .to_owned()
                }
                other => format!("is not a PEM private key file: {other}"),
            };
            ("tls.key_file", key_path.clone(), problem)
        })?;
        let provider = rustls::crypto::ring::default_provider();
        if let Err(e) = rustls::sign::CertifiedKey::from_der(certs, key, &provider) {
            let problem = match e {
                rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
                    format!(
                        "does not match the certificate in {cert_path:?} \
                         (tls.cert_file); use the key the certificate was made for"
                    )
                }
                other => format!("cannot be used with the certificate {cert_path:?}: {other}"),
            };
            return Err(("tls.key_file", key_path, problem));
        }
        Ok((cert_pem, key_pem))
    }
}

const ADDRESS: &str = "IP:PORT, e.g. 127.0.0.1:7400 or [::]:7400";
const MILLISECONDS: &str = "a whole number of milliseconds";
const BYTES: &str = "a whole number of bytes";

/// A web origin as browsers send it (`scheme://host[:port]`, no path), or
/// `*` for every origin.
fn check_origin(origin: &str) -> Result<(), String> {
    if origin == "*" {
        return Ok(());
    }
    let host = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .ok_or("is not a web origin: it must start with http:// or https:// (or be *)")?;
    if host.is_empty() || host.contains(['/', '?', '#', ' ']) {
        return Err(
            "is not a web origin: write scheme://host[:port] without a path, e.g. \
             https://console.example.com"
                .into(),
        );
    }
    axum::http::HeaderValue::from_str(origin)
        .map_err(|_| "is not a web origin: it has characters a header cannot carry".to_owned())?;
    Ok(())
}

fn parse_env<T: std::str::FromStr>(
    name: &'static str,
    value: &str,
    expected: &str,
) -> Result<T, ConfigError>
where
    T::Err: fmt::Display,
{
    value.trim().parse().map_err(|e: T::Err| ConfigError::Env {
        name,
        value: value.to_owned(),
        message: format!("{e}; expected {expected}"),
    })
}

/// The version first (a missing or other version is the error even when the
/// file also has keys this build does not know), then the whole file.
fn parse_file(path: &Path, text: &str) -> Result<FileConfig, ConfigError> {
    let probe: VersionProbe = serde_yaml::from_str(text).map_err(|e| yaml_error(path, e))?;
    match probe.version {
        None => {
            return Err(ConfigError::Parse {
                path: path.to_owned(),
                line: None,
                column: None,
                message: format!(
                    "the file does not say which config version it is written for; \
                     add `version: {CONFIG_VERSION}` as its first line"
                ),
            });
        }
        Some(v) if v != CONFIG_VERSION => {
            return Err(ConfigError::Parse {
                path: path.to_owned(),
                line: line_of(text, "version"),
                column: None,
                message: format!(
                    "config version {v} is not supported: this fleetd reads version \
                     {CONFIG_VERSION} (see ops/config.md)"
                ),
            });
        }
        Some(_) => {}
    }
    serde_yaml::from_str(text).map_err(|e| yaml_error(path, e))
}

/// serde_yaml's message with its " at line L column C" moved to the front
/// (`file:L:C: …`) and a suggestion for a misspelt key.
fn yaml_error(path: &Path, error: serde_yaml::Error) -> ConfigError {
    let mut message = error.to_string();
    let (mut line, mut column) = (None, None);
    if let Some(location) = error.location() {
        let suffix = format!(" at line {} column {}", location.line(), location.column());
        if let Some(stripped) = message.strip_suffix(&suffix) {
            message = stripped.to_owned();
        }
        line = Some(location.line());
        column = Some(location.column());
    }
    if let Some(suggestion) = suggest_key(&message) {
        message.push_str(&format!("; did you mean `{suggestion}`?"));
    }
    ConfigError::Parse {
        path: path.to_owned(),
        line,
        column,
        message,
    }
}

/// For "unknown field `x`, expected …": the known key `x` most likely meant
/// (a small typo, another case, dashes, or the environment variable's name).
fn suggest_key(message: &str) -> Option<&'static str> {
    let (scope, rest) = message.split_once("unknown field `")?;
    let unknown = rest.split('`').next()?;
    let known = if scope.starts_with("tls:") {
        TLS_KEYS
    } else {
        KEYS
    };
    let normal = unknown.to_ascii_lowercase().replace('-', "_");
    let normal = normal.strip_prefix("fleetlog_").unwrap_or(&normal);
    if let Some(&(key, _)) = ENV_VARS
        .iter()
        .find(|(_, var)| var.eq_ignore_ascii_case(unknown))
    {
        return Some(key.split('.').next().unwrap_or(key));
    }
    let close = known
        .iter()
        .map(|k| (edit_distance(normal, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k);
    if close.is_some() || normal.len() < 3 {
        return close;
    }
    // `cert` for `cert_file`, `nats_server` for `nats_server_bin`.
    let mut longer = known.iter().filter(|k| k.starts_with(normal));
    match (longer.next(), longer.next()) {
        (Some(&key), None) => Some(key),
        _ => None,
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

/// The (1-based) line where `key` is set, best effort: a top-level `key:`,
/// or for `parent.key` the indented `key:` after `parent:` (else the
/// parent's line).
fn line_of(text: &str, key: &str) -> Option<usize> {
    fn sets(line: &str, key: &str) -> bool {
        line.strip_prefix(key)
            .is_some_and(|rest| rest.trim_start().starts_with(':'))
    }
    let Some((parent, leaf)) = key.split_once('.') else {
        return text.lines().position(|l| sets(l, key)).map(|i| i + 1);
    };
    let start = text.lines().position(|l| sets(l, parent))?;
    for (i, line) in text.lines().enumerate().skip(start + 1) {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if trimmed.len() == line.len() {
            break;
        }
        if sets(trimmed, leaf) {
            return Some(i + 1);
        }
    }
    Some(start + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: &str = include_str!("../../../ops/config/all.yaml");
    const API: &str = include_str!("../../../ops/config/api.yaml");
    const PROJECTOR: &str = include_str!("../../../ops/config/projector.yaml");
    const DOC: &str = include_str!("../../../ops/config.md");

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    /// Parses `text` as the file `fleetd.yaml` without opening TLS files.
    fn parse(text: &str, pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::build(Some((Path::new("fleetd.yaml"), text)), env(pairs), false)
    }

    fn error(text: &str, pairs: &[(&str, &str)]) -> String {
        match parse(text, pairs) {
            Ok(config) => panic!("accepted {text:?} with {pairs:?}: {config:?}"),
            Err(err) => err.to_string(),
        }
    }

    #[test]
    fn defaults_match_the_api_contract() -> Result<(), ConfigError> {
        let config = Config::load(None, env(&[]))?;
        assert_eq!(config.listen.to_string(), "127.0.0.1:7400");
        assert_eq!(config.http_listen.to_string(), "127.0.0.1:7401");
        assert_eq!(config.data_dir, PathBuf::from("./data"));
        assert_eq!(config.region, "local");
        assert_eq!(config.nats_url, None);
        assert_eq!(config.tls, None);
        assert_eq!(config.otlp_endpoint, None);
        assert_eq!(config, Config::default());
        Ok(())
    }

    #[test]
    fn the_examples_parse() -> Result<(), ConfigError> {
        let all = parse(ALL, &[])?;
        assert_eq!(all.nats_url, None, "all manages its own nats-server");
        let api = parse(API, &[])?;
        let projector = parse(PROJECTOR, &[])?;
        for config in [&api, &projector] {
            assert!(config.nats_url.is_some(), "{config:?}");
            assert!(config.tls.is_some(), "{config:?}");
            assert_eq!(config.region, api.region);
        }
        assert_ne!(api.listen, projector.listen);
        Ok(())
    }

    #[test]
    fn the_keys_are_the_files_keys_and_all_documented() {
        // serde lists the fields it knows in an unknown-field error.
        let message = error("version: 1\nnope: 1\n", &[]);
        let listed = KEYS
            .iter()
            .map(|k| format!("`{k}`"))
            .collect::<Vec<_>>()
            .join(", ");
        assert!(message.contains(&listed), "{message}");
        for key in KEYS.iter().chain(TLS_KEYS) {
            assert!(
                DOC.contains(&format!("`{key}`")),
                "ops/config.md lacks `{key}`"
            );
        }
        for (key, var) in ENV_VARS {
            assert!(DOC.contains(var), "ops/config.md lacks {var}");
            let top = key.split('.').next().unwrap_or(key);
            assert!(KEYS.contains(&top), "{key}");
        }
        assert_eq!(ENV_VARS.len(), KEYS.len() - 2 + TLS_KEYS.len());
    }

    #[test]
    fn environment_overrides_the_file() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("fleetd.yaml");
        std::fs::write(&path, "version: 1\nregion: eu1\nlisten: 127.0.0.1:9000\n")?;
        let config = Config::load(Some(&path), env(&[("FLEETLOG_REGION", "us2")]))?;
        assert_eq!(config.region, "us2");
        assert_eq!(config.listen.port(), 9000);
        Ok(())
    }

    #[test]
    fn every_key_has_an_environment_variable_that_wins() -> Result<(), ConfigError> {
        let file = "version: 1\n\
            nats_url: nats://file:4222\n\
            listen: 127.0.0.1:1000\n\
            http_listen: 127.0.0.1:1001\n\
            data_dir: /file/data\n\
            region: file\n\
            bootstrap_admin_key: file-key\n\
            nats_server_bin: /file/nats-server\n\
            read_wait_ms: 1\n\
            devices_initial_version: v1alpha2\n\
            heartbeat_timeout_ms: 2\n\
            max_request_bytes: 3\n\
            tls:\n  cert_file: /file/crt\n  key_file: /file/key\n\
            otlp_endpoint: http://file:4317\n\
            cors_allowed_origins: [\"https://file.example\"]\n";
        let from_file = parse(file, &[])?;
        assert_eq!(from_file.region, "file");
        assert_eq!(from_file.max_request_bytes, 3);
        let config = parse(
            file,
            &[
                ("FLEETLOG_NATS_URL", "nats://env:4222"),
                ("FLEETLOG_LISTEN", "127.0.0.1:2000"),
                ("FLEETLOG_HTTP_LISTEN", "127.0.0.1:2001"),
                ("FLEETLOG_DATA_DIR", "/env/data"),
                ("FLEETLOG_REGION", "env"),
                ("FLEETLOG_BOOTSTRAP_ADMIN_KEY", "env-key"),
                ("FLEETLOG_NATS_SERVER", "/env/nats-server"),
                ("FLEETLOG_READ_WAIT_MS", "11"),
                ("FLEETLOG_DEVICES_INITIAL_VERSION", "v1"),
                ("FLEETLOG_HEARTBEAT_TIMEOUT_MS", "12"),
                ("FLEETLOG_MAX_REQUEST_BYTES", "13"),
                ("FLEETLOG_TLS_CERT", "/env/crt"),
                ("FLEETLOG_TLS_KEY", "/env/key"),
                ("FLEETLOG_OTLP_ENDPOINT", "https://env:4317"),
                (
                    "FLEETLOG_CORS_ALLOWED_ORIGINS",
                    "https://a.example, http://b.example:8080",
                ),
            ],
        )?;
        let expected = Config {
            version: 1,
            nats_url: Some("nats://env:4222".into()),
            listen: SocketAddr::from(([127, 0, 0, 1], 2000)),
            http_listen: SocketAddr::from(([127, 0, 0, 1], 2001)),
            data_dir: "/env/data".into(),
            region: "env".into(),
            bootstrap_admin_key: Some("env-key".into()),
            nats_server_bin: "/env/nats-server".into(),
            read_wait_ms: 11,
            devices_initial_version: "v1".into(),
            heartbeat_timeout_ms: 12,
            max_request_bytes: 13,
            tls: Some(TlsFiles {
                cert_file: "/env/crt".into(),
                key_file: "/env/key".into(),
            }),
            otlp_endpoint: Some("https://env:4317".into()),
            cors_allowed_origins: vec!["https://a.example".into(), "http://b.example:8080".into()],
        };
        assert_eq!(config, expected);
        // An empty variable is unset: the file's value stays.
        let config = parse(file, &[("FLEETLOG_REGION", ""), ("FLEETLOG_TLS_CERT", "")])?;
        assert_eq!(config.region, "file");
        assert_eq!(config.tls, from_file.tls);
        Ok(())
    }

    #[test]
    fn unknown_keys_are_named_with_their_line_and_a_suggestion() {
        let message = error("version: 1\n# a comment\nlisen: 127.0.0.1:9000\n", &[]);
        assert!(
            message
                .starts_with("fleetd.yaml:3:1: unknown field `lisen`, expected one of `version`"),
            "{message}"
        );
        assert!(message.ends_with("; did you mean `listen`?"), "{message}");
        let message = error("version: 1\nFLEETLOG_HTTP_LISTEN: 127.0.0.1:1\n", &[]);
        assert!(
            message.ends_with("did you mean `http_listen`?"),
            "{message}"
        );
        let message = error("version: 1\ntls:\n  cert: a\n  key_file: b\n", &[]);
        assert!(
            message.starts_with(
                "fleetd.yaml:3:3: tls: unknown field `cert`, expected `cert_file` or `key_file`"
            ),
            "{message}"
        );
        assert!(message.ends_with("did you mean `cert_file`?"), "{message}");
        let message = error("version: 1\nfrobnicate: true\n", &[]);
        assert!(!message.contains("did you mean"), "{message}");
    }

    #[test]
    fn bad_values_in_the_file_name_key_and_line() {
        let message = error("version: 1\nlisten: nope\n", &[]);
        assert_eq!(
            message,
            "fleetd.yaml:2:9: listen: invalid socket address syntax"
        );
        let message = error("version: 1\n\nread_wait_ms: -5\n", &[]);
        assert!(
            message.starts_with("fleetd.yaml:3:15: read_wait_ms:"),
            "{message}"
        );
        let message = error("version: 1\nregion: EU 1\n", &[]);
        assert!(
            message.starts_with("fleetd.yaml:2: region \"EU 1\" is not a valid region ID"),
            "{message}"
        );
        let message = error("version: 1\ndevices_initial_version: v9\n", &[]);
        assert!(
            message.starts_with("fleetd.yaml:2: devices_initial_version \"v9\" is not a Devices API version; use one of v1alpha2, v1"),
            "{message}"
        );
        let message = error("version: 1\notlp_endpoint: 127.0.0.1:4317\n", &[]);
        assert!(
            message.starts_with(
                "fleetd.yaml:2: otlp_endpoint \"127.0.0.1:4317\" is not an OTLP/gRPC collector URL"
            ),
            "{message}"
        );
        let message = error("version: 1\nhttp_listen: 127.0.0.1:7400\n", &[]);
        assert!(
            message.starts_with("fleetd.yaml:2: http_listen \"127.0.0.1:7400\" is also listen"),
            "{message}"
        );
        let message = error("- version: 1\n", &[]);
        assert!(
            message.contains("expected a mapping of fleetd config keys"),
            "{message}"
        );
        let message = error("version: 1\nlisten: [\n", &[]);
        assert!(message.starts_with("fleetd.yaml:"), "{message}");
    }

    #[test]
    fn a_file_must_state_its_version() {
        for text in ["", "# nothing yet\n", "region: eu1\n", "lisen: 1\n"] {
            let message = error(text, &[]);
            assert_eq!(
                message,
                "fleetd.yaml: the file does not say which config version it is written \
                 for; add `version: 1` as its first line",
                "{text:?}"
            );
        }
        // Without a file the built-in defaults are version 1.
        assert!(Config::load(None, env(&[])).is_ok());
    }

    #[test]
    fn another_version_is_refused_before_its_keys() {
        let message = error("# fleetd\nregion: eu1\nversion: 2\nnew_key: 1\n", &[]);
        assert_eq!(
            message,
            "fleetd.yaml:3: config version 2 is not supported: this fleetd reads version 1 \
             (see ops/config.md)"
        );
        let message = error("version: one\n", &[]);
        assert!(
            message.starts_with("fleetd.yaml:1:10: version: invalid type: string \"one\""),
            "{message}"
        );
    }

    #[test]
    fn tls_needs_both_files() {
        let message = error("version: 1\ntls:\n  cert_file: a.crt\n", &[]);
        assert_eq!(
            message,
            "fleetd.yaml:3: tls.cert_file \"a.crt\" is set but tls.key_file is not: set both \
             (FLEETLOG_TLS_CERT and FLEETLOG_TLS_KEY in the environment) or neither"
        );
        let message = error("version: 1\n", &[("FLEETLOG_TLS_KEY", "a.key")]);
        assert!(
            message.starts_with(
                "environment variable FLEETLOG_TLS_KEY=\"a.key\": tls.key_file is set but \
                 tls.cert_file is not"
            ),
            "{message}"
        );
        // The file gives one, the environment the other.
        let config = parse(
            "version: 1\ntls: { cert_file: a.crt }\n",
            &[("FLEETLOG_TLS_KEY", "a.key")],
        );
        assert!(
            matches!(config, Ok(Config { tls: Some(_), .. })),
            "{config:?}"
        );
    }

    #[test]
    fn tls_files_must_exist() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let cert = dir.path().join("missing.crt");
        let key = dir.path().join("fleetd.key");
        std::fs::write(&key, "not a key")?;
        let text = format!(
            "version: 1\ntls:\n  cert_file: {}\n  key_file: {}\n",
            cert.display(),
            key.display()
        );
        let err =
            Config::load_str(Path::new("fleetd.yaml"), &text, env(&[])).expect_err("missing cert");
        let message = err.to_string();
        assert!(
            message.starts_with(&format!(
                "fleetd.yaml:3: tls.cert_file {:?} cannot be read: No such file",
                cert.display().to_string()
            )),
            "{message}"
        );
        assert!(message.contains("ops/tls-selfsigned.sh"), "{message}");
        std::fs::write(
            &cert,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )?;
        let err =
            Config::load_str(Path::new("fleetd.yaml"), &text, env(&[])).expect_err("not a key");
        let message = err.to_string();
        assert!(
            message.starts_with("fleetd.yaml:4: tls.key_file")
                && message.contains("holds no PEM private key"),
            "{message}"
        );
        let err = Config::load(
            None,
            env(&[
                ("FLEETLOG_TLS_CERT", "/nonexistent/fleetd.crt"),
                ("FLEETLOG_TLS_KEY", "/nonexistent/fleetd.key"),
            ]),
        )
        .expect_err("missing");
        assert!(
            err.to_string().starts_with(
                "environment variable FLEETLOG_TLS_CERT=\"/nonexistent/fleetd.crt\": \
                 tls.cert_file cannot be read"
            ),
            "{err}"
        );
        Ok(())
    }

    #[test]
    fn cors_origins_are_web_origins() {
        let config = parse(
            "version: 1\ncors_allowed_origins: [\"*\", \"http://127.0.0.1:8080\"]\n",
            &[],
        );
        assert!(
            matches!(&config, Ok(c) if c.cors_allowed_origins.len() == 2),
            "{config:?}"
        );
        let message = error(
            "version: 1\ncors_allowed_origins: [\"https://a.example/app\"]\n",
            &[],
        );
        assert!(
            message.starts_with(
                "fleetd.yaml:2: cors_allowed_origins \"https://a.example/app\" is not a web origin"
            ),
            "{message}"
        );
        let message = error(
            "version: 1\n",
            &[("FLEETLOG_CORS_ALLOWED_ORIGINS", "a.example")],
        );
        assert!(
            message.starts_with("environment variable FLEETLOG_CORS_ALLOWED_ORIGINS=\"a.example\"")
                && message.contains("must start with http://"),
            "{message}"
        );
    }

    #[test]
    fn bad_environment_values_name_the_variable() {
        for (name, value, says) in [
            (
                "FLEETLOG_LISTEN",
                "nope",
                "invalid socket address syntax; expected IP:PORT",
            ),
            ("FLEETLOG_HTTP_LISTEN", "localhost:80", "expected IP:PORT"),
            (
                "FLEETLOG_READ_WAIT_MS",
                "5s",
                "expected a whole number of milliseconds",
            ),
            ("FLEETLOG_HEARTBEAT_TIMEOUT_MS", "-1", "milliseconds"),
            ("FLEETLOG_MAX_REQUEST_BYTES", "4MB", "bytes"),
            ("FLEETLOG_MAX_REQUEST_BYTES", "0", "must be at least 1"),
            ("FLEETLOG_REGION", "EU 1", "region is not a valid region ID"),
            (
                "FLEETLOG_DEVICES_INITIAL_VERSION",
                "v3",
                "is not a Devices API version",
            ),
            (
                "FLEETLOG_OTLP_ENDPOINT",
                "grpc://x:4317",
                "must start with http:// or https://",
            ),
            ("FLEETLOG_NATS_URL", "http://nats:4222", "NATS server URL"),
        ] {
            let message = error("version: 1\n", &[(name, value)]);
            let prefix = format!("environment variable {name}={value:?}: ");
            assert!(message.starts_with(&prefix), "{message}");
            assert!(message.contains(says), "{message}");
        }
        let message = error(
            "version: 1\nlisten: 127.0.0.1:7000\n",
            &[("FLEETLOG_HTTP_LISTEN", "127.0.0.1:7000")],
        );
        assert!(
            message.starts_with("environment variable FLEETLOG_HTTP_LISTEN=\"127.0.0.1:7000\": http_listen is also listen"),
            "{message}"
        );
    }

    #[test]
    fn debug_hides_the_admin_key() {
        let config = Config {
            bootstrap_admin_key: Some("secret-admin-key".into()),
            ..Config::default()
        };
        let shown = format!("{config:?}");
        assert!(!shown.contains("secret-admin-key"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }

    #[test]
    fn line_of_finds_keys() {
        let text =
            "version: 1\nregion : eu1\ntls:\n  # c\n  key_file: k\n  cert_file: c\nlisten: x\n";
        assert_eq!(line_of(text, "region"), Some(2));
        assert_eq!(line_of(text, "tls.cert_file"), Some(6));
        assert_eq!(line_of(text, "tls.key_file"), Some(5));
        assert_eq!(line_of("tls: {cert_file: a}\n", "tls.cert_file"), Some(1));
        assert_eq!(line_of(text, "data_dir"), None);
    }
}
