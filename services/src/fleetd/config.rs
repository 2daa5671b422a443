//! fleetd configuration: one YAML file that states its `version` (unknown keys
//! rejected), with a `FLEETLOG_*` environment variable per key on top.
//!
//! Every key is declared once, in the `config_keys!` list just below: its
//! name, type, default, variable, parser and doc line. The file's format, the
//! environment overrides, the keys listed and suggested in errors, the origin
//! each error names (file and line, or variable) and the `Debug` redaction all
//! follow from that list. `ops/config.md` documents every key (a test below
//! holds its key table to the list); `ops/config/*.yaml` are the examples (the
//! tests below parse them, so they cannot rot).

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// The config file format version this build reads.
pub const CONFIG_VERSION: u32 = 1;

/// JetStream keeps at most this many replicas of a stream.
pub const MAX_REPLICAS: usize = 5;

/// The servers `nats_url` names: one URL, or several comma-separated.
pub fn nats_servers(urls: &str) -> Result<Vec<async_nats::ServerAddr>, String> {
    let servers = urls
        .split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .map(|url| {
            url.parse::<async_nats::ServerAddr>()
                .map_err(|e| format!("{url}: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if servers.is_empty() {
        return Err("no URL".into());
    }
    Ok(servers)
}

// The keys, in the order `ops/config.md` lists them and serde names them in
// an unknown-key error. Each is `key: Type = default, how;`, `how` being
// `file_only(FileType)`, `env(VARIABLE, Parser)`, `secret(VARIABLE, Parser)`
// or `pair(…)` (see `config_keys!` at the end of the file).
config_keys! {
    /// The config file format version ([`CONFIG_VERSION`]); a file must
    /// state it.
    version: u32 = CONFIG_VERSION, file_only(u32);
    /// NATS server to use, or a cluster's nodes comma-separated (the
    /// client fails over between them); when unset, `fleetd all` starts
    /// its own.
    nats_url: Option<String> = None, env(FLEETLOG_NATS_URL, Text);
    /// gRPC (and gRPC-Web) listen address.
    listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 7400)),
        env(FLEETLOG_LISTEN, Address);
    /// HTTP listen address (health, REST, SSE, metrics, console).
    http_listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 7401)),
        env(FLEETLOG_HTTP_LISTEN, Address);
    /// Projections and the managed nats-server's store.
    data_dir: PathBuf = PathBuf::from("./data"), env(FLEETLOG_DATA_DIR, PathName);
    /// The region this process serves.
    region: String = "local".into(), env(FLEETLOG_REGION, Text);
    /// The region that owns Meta and IAM (their streams live there; every
    /// other region reads them from read copies); unset: this region.
    leading_region: Option<String> = None, env(FLEETLOG_LEADING_REGION, Text);
    /// Where other regions send the commands this region owns (`host:port`
    /// or a URL), written into this region's Deployment when fleetd
    /// registers it; unset: `{region}.devices.fleetlog.io`.
    regional_domain: Option<String> = None, env(FLEETLOG_REGIONAL_DOMAIN, Text);
    /// Admin key to create on first start.
    bootstrap_admin_key: Option<String> = None,
        secret(FLEETLOG_BOOTSTRAP_ADMIN_KEY, Text);
    /// The nats-server binary for the managed server.
    nats_server_bin: PathBuf = PathBuf::from("nats-server"),
        env(FLEETLOG_NATS_SERVER, PathName);
    /// Copies of every stream fleetd creates: 1 on one server, 3 on a
    /// three-node cluster (JetStream allows at most 5).
    nats_replicas: usize = 1, env(FLEETLOG_NATS_REPLICAS, Count);
    /// Longest a call retries a transient NATS state (a stream leader
    /// election, a reconnect to another node, a write in flight) before it
    /// answers UNAVAILABLE, in milliseconds; a shorter client deadline
    /// wins.
    nats_retry_ms: u64 = 10_000, env(FLEETLOG_NATS_RETRY_MS, Milliseconds);
    /// This process's name in metrics and logs; unset: `{role}-{host}-{pid}`.
    process_name: Option<String> = None, env(FLEETLOG_PROCESS_NAME, Text);
    /// Longest wait for a query's `min_revision`, in milliseconds.
    read_wait_ms: u64 = 5000, env(FLEETLOG_READ_WAIT_MS, Milliseconds);
    /// The Devices API version a new region starts on (later versions are
    /// reached by upgrades); ignored once the region's Deployment exists.
    devices_initial_version: String = crate::devices::DEFAULT_VERSION.into(),
        env(FLEETLOG_DEVICES_INITIAL_VERSION, Text);
    /// A device whose agent sends no heartbeat for this long (milliseconds)
    /// is marked offline.
    heartbeat_timeout_ms: u64 = 60_000, env(FLEETLOG_HEARTBEAT_TIMEOUT_MS, Milliseconds);
    /// Largest request message (bytes); larger ones are refused with
    /// OUT_OF_RANGE before they are decoded.
    max_request_bytes: usize = 4 * 1024 * 1024, env(FLEETLOG_MAX_REQUEST_BYTES, Bytes);
    /// When set, gRPC and HTTP are served over TLS with this pair.
    /// [`Config::load`] checked that both files hold PEM that belong together.
    tls: Option<TlsFiles> = None, pair(TlsFiles, "a mapping with cert_file and key_file", {
        /// PEM certificate chain, leaf first.
        cert_file: FLEETLOG_TLS_CERT,
        /// PEM private key of that certificate.
        key_file: FLEETLOG_TLS_KEY,
    });
    /// OTLP/gRPC collector to export traces to (`http://127.0.0.1:4317`).
    otlp_endpoint: Option<String> = None, env(FLEETLOG_OTLP_ENDPOINT, Text);
    /// Web origins (`https://console.example.com`, or `*`) whose pages may
    /// call fleetd through gRPC-Web and REST; empty: none (no CORS).
    cors_allowed_origins: Vec<String> = Vec::new(),
        env(FLEETLOG_CORS_ALLOWED_ORIGINS, OriginList);
}

/// A PEM certificate (chain, leaf first) and its private key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// A key as `ops/config.md`'s table lists it (`tls.cert_file` for one in a
/// section) and its environment variable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Setting {
    key: &'static str,
    var: Option<&'static str>,
}

/// Every [`Setting`], in the declaration's order.
fn settings() -> impl Iterator<Item = Setting> {
    SETTINGS.iter().flat_map(|s| s.iter().copied())
}

/// How an environment variable's text becomes a key's value. The file holds
/// the same `Value`, read by serde, so that its errors carry line and column.
trait Parse {
    type Value: DeserializeOwned;
    /// On error, what is wrong, for "environment variable NAME=…: {error}".
    fn parse(text: &str) -> Result<Self::Value, String>;
}

/// A string, as given.
struct Text;
/// A path, as given (relative ones start at fleetd's working directory).
struct PathName;
/// `IP:PORT`.
struct Address;
struct Milliseconds;
struct Bytes;
/// A small whole number (a replica count).
struct Count;
/// Comma-separated web origins: a variable holds one string, the file a list.
struct OriginList;

impl Parse for Text {
    type Value = String;
    fn parse(text: &str) -> Result<String, String> {
        Ok(text.to_owned())
    }
}

impl Parse for PathName {
    type Value = PathBuf;
    fn parse(text: &str) -> Result<PathBuf, String> {
        Ok(PathBuf::from(text))
    }
}

impl Parse for Address {
    type Value = SocketAddr;
    fn parse(text: &str) -> Result<SocketAddr, String> {
        trimmed(text, "IP:PORT, e.g. 127.0.0.1:7400 or [::]:7400")
    }
}

impl Parse for Milliseconds {
    type Value = u64;
    fn parse(text: &str) -> Result<u64, String> {
        trimmed(text, "a whole number of milliseconds")
    }
}

impl Parse for Count {
    type Value = usize;
    fn parse(text: &str) -> Result<usize, String> {
        trimmed(text, "a whole number")
    }
}

impl Parse for Bytes {
    type Value = usize;
    fn parse(text: &str) -> Result<usize, String> {
        trimmed(text, "a whole number of bytes")
    }
}

impl Parse for OriginList {
    type Value = Vec<String>;
    fn parse(text: &str) -> Result<Vec<String>, String> {
        Ok(text
            .split(',')
            .map(str::trim)
            .filter(|o| !o.is_empty())
            .map(str::to_owned)
            .collect())
    }
}

/// A number or address, blanks around it ignored (a string or path is taken
/// as given).
fn trimmed<T: FromStr>(text: &str, expected: &str) -> Result<T, String>
where
    T::Err: fmt::Display,
{
    text.trim()
        .parse()
        .map_err(|e| format!("{e}; expected {expected}"))
}

/// `text`, the value of the variable `name`, read by `P`.
fn parse_env<P: Parse>(name: &'static str, text: &str) -> Result<P::Value, ConfigError> {
    P::parse(text).map_err(|message| ConfigError::Env {
        name,
        value: text.to_owned(),
        message,
    })
}

/// The environment as [`Config::load`] sees it: an empty variable is unset.
type Vars<'a> = dyn Fn(&'static str) -> Option<String> + 'a;

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
        let mut sources = Sources {
            file,
            origins: HashMap::new(),
        };
        let mut layer = match file {
            Some((path, text)) => parse_file(path, text)?,
            None => FileConfig::default(),
        };
        layer.mark_file(&mut sources);
        // An empty variable counts as unset.
        let var = |name: &'static str| env(name).filter(|v| !v.is_empty());
        layer.apply_env(&var, &mut sources)?;
        let config = layer.finish(&sources)?;
        config.check(&sources, check_files)?;
        Ok(config)
    }

    /// The checks that need more than the type; errors name the value's
    /// origin.
    fn check(&self, sources: &Sources<'_>, check_files: bool) -> Result<(), ConfigError> {
        if let Err(e) = fleetlog_events::Id::parse(&self.region) {
            return Err(sources.invalid(
                keys::region::NAME,
                &self.region,
                format_args!("is not a valid region ID: {e}"),
            ));
        }
        if let Some(leading) = &self.leading_region
            && let Err(e) = fleetlog_events::Id::parse(leading)
        {
            return Err(sources.invalid(
                keys::leading_region::NAME,
                leading,
                format_args!("is not a valid region ID: {e}"),
            ));
        }
        if !crate::devices::VERSIONS.contains(&self.devices_initial_version.as_str()) {
            return Err(sources.invalid(
                keys::devices_initial_version::NAME,
                &self.devices_initial_version,
                format_args!(
                    "is not a Devices API version; use one of {}",
                    crate::devices::VERSIONS.join(", ")
                ),
            ));
        }
        if self.max_request_bytes == 0 {
            return Err(sources.invalid(keys::max_request_bytes::NAME, "0", "must be at least 1"));
        }
        if self.listen == self.http_listen && self.listen.port() != 0 {
            let (listen, http_listen) = (keys::listen::NAME, keys::http_listen::NAME);
            // Blame the one that was set: with both set, http_listen.
            let (key, other) = match sources.origins.get(http_listen) {
                Some(_) => (http_listen, listen),
                None => (listen, http_listen),
            };
            return Err(sources.invalid(
                key,
                &self.listen.to_string(),
                format_args!("is also {other}: gRPC and HTTP need different ports"),
            ));
        }
        if let Some(urls) = &self.nats_url
            && let Err(e) = nats_servers(urls)
        {
            return Err(sources.invalid(
                keys::nats_url::NAME,
                urls,
                format_args!(
                    "is rejected: {e}; write it like nats://127.0.0.1:4222, or a cluster's nodes \
                     comma-separated: nats://n1:4222,nats://n2:4222,nats://n3:4222"
                ),
            ));
        }
        if !(1..=MAX_REPLICAS).contains(&self.nats_replicas) {
            return Err(sources.invalid(
                keys::nats_replicas::NAME,
                &self.nats_replicas.to_string(),
                format_args!(
                    "must be 1 to {MAX_REPLICAS} (JetStream's limit); 1 on one server, 3 on a \
                     three-node cluster"
                ),
            ));
        }
        if let Some(name) = &self.process_name
            && (name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)))
        {
            return Err(sources.invalid(
                keys::process_name::NAME,
                name,
                "may hold only letters, digits, '-', '_' and '.' (it names the process in metrics)",
            ));
        }
        if let Some(endpoint) = &self.otlp_endpoint {
            let rest = endpoint
                .strip_prefix("http://")
                .or_else(|| endpoint.strip_prefix("https://"));
            if rest.is_none_or(|host| host.is_empty()) {
                return Err(sources.invalid(
                    keys::otlp_endpoint::NAME,
                    endpoint,
                    "is not an OTLP/gRPC collector URL: it must start with http:// or \
                     https://, e.g. http://127.0.0.1:4317",
                ));
            }
        }
        for origin in &self.cors_allowed_origins {
            if let Err(problem) = check_origin(origin) {
                return Err(sources.invalid(keys::cors_allowed_origins::NAME, origin, problem));
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

    /// This region's endpoint for the others: `regional_domain`, or
    /// `{region}.devices.fleetlog.io`.
    pub fn regional_domain(&self) -> String {
        self.regional_domain
            .clone()
            .unwrap_or_else(|| format!("{}.{}", self.region, crate::devices::SERVICE_DOMAIN))
    }

    /// The region whose streams hold Meta and IAM: `leading_region`, or
    /// this region when unset.
    pub fn meta_region(&self) -> &str {
        self.leading_region.as_deref().unwrap_or(&self.region)
    }

    pub fn nats_retry(&self) -> Duration {
        Duration::from_millis(self.nats_retry_ms)
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
            .map_err(|e| ConfigError::Invalid(format!("{}: {e}", keys::tls::cert_file)))?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|e| ConfigError::Invalid(format!("{}: {e}", keys::tls::key_file)))?;
        Ok((certs, key))
    }

    fn check(&self) -> Result<(), (&'static str, String, String)> {
        self.read_checked().map(|_| ())
    }

    /// Errors are (key, path, problem).
    #[allow(clippy::type_complexity)]
    fn read_checked(&self) -> Result<(Vec<u8>, Vec<u8>), (&'static str, String, String)> {
        let (cert_key, key_key) = (keys::tls::cert_file, keys::tls::key_file);
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
        let cert_pem = read(cert_key, &self.cert_file, &cert_path)?;
        let key_pem = read(key_key, &self.key_file, &key_path)?;
        let certs = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| {
                (
                    cert_key,
                    cert_path.clone(),
                    format!("is not a PEM certificate file: {e}"),
                )
            })?;
        if certs.is_empty() {
            return Err((
                cert_key,
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
            (key_key, key_path.clone(), problem)
        })?;
        let provider = rustls::crypto::ring::default_provider();
        if let Err(e) = rustls::sign::CertifiedKey::from_der(certs, key, &provider) {
            let problem = match e {
                rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
                    format!(
                        "does not match the certificate in {cert_path:?} \
                         ({cert_key}); use the key the certificate was made for"
                    )
                }
                other => format!("cannot be used with the certificate {cert_path:?}: {other}"),
            };
            return Err((key_key, key_path, problem));
        }
        Ok((cert_pem, key_pem))
    }
}

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
                line: line_of(text, keys::version::NAME),
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

/// The keys inside the section `section` (`cert_file` in `tls`).
fn section_keys(section: &str) -> Vec<&'static str> {
    settings()
        .filter_map(|s| s.key.strip_prefix(section)?.strip_prefix('.'))
        .collect()
}

/// For "unknown field `x`, expected …": the known key `x` most likely meant
/// (a small typo, another case, dashes, or the environment variable's name).
fn suggest_key(message: &str) -> Option<&'static str> {
    let (scope, rest) = message.split_once("unknown field `")?;
    let unknown = rest.split('`').next()?;
    // serde_yaml names the section an unknown key is in: "tls: unknown …".
    let in_section = scope
        .split_once(':')
        .map(|(section, _)| section_keys(section))
        .unwrap_or_default();
    let known = if in_section.is_empty() {
        KEYS
    } else {
        &in_section
    };
    let normal = unknown.to_ascii_lowercase().replace('-', "_");
    let normal = normal.strip_prefix("fleetlog_").unwrap_or(&normal);
    if let Some(setting) =
        settings().find(|s| s.var.is_some_and(|v| v.eq_ignore_ascii_case(unknown)))
    {
        return Some(setting.key.split('.').next().unwrap_or(setting.key));
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

/// Makes, from the list of keys at the top of the file: [`Config`] with its
/// `Default` and `Debug`; `FileConfig`, the file's serde struct, which also
/// takes the environment's values; [`KEYS`]; `SETTINGS`; and a module
/// `keys::<key>` per key with its name, so code naming a key cannot misspell
/// it. A key's `how`:
///
/// * `file_only(T)`: only the file sets it, as a `T`.
/// * `env(VARIABLE, Parser)`: the file or `VARIABLE` sets it; `Parser` is a
///   [`Parse`] whose `Value` the file holds and the field's type converts
///   from (`T` into `Option<T>` for an optional key).
/// * `secret(VARIABLE, Parser)`: the same, but `Debug` does not show the
///   value and no origin (which would hold the variable's value) is kept,
///   so it must not be checked.
/// * `pair(Value, "expecting", { a: VARIABLE_A, b: VARIABLE_B })`: a section
///   `key: { a: …, b: … }` of two paths set together (each from the file or
///   its variable) or not at all; the field is `Option<Value>`.
macro_rules! config_keys {
    (@key $key:ident: $ty:ty, file_only($file:ty)) => {
        pub mod $key {
            use super::super::*;

            pub const NAME: &str = stringify!($key);
            pub const SETTINGS: &[Setting] = &[Setting { key: NAME, var: None }];
            pub type File = $file;

            pub fn shown(value: &$ty) -> &$ty {
                value
            }

            pub fn mark(file: &Option<File>, sources: &mut Sources<'_>) {
                if file.is_some() {
                    sources.set_by_file(NAME);
                }
            }

            pub fn env(
                _: &mut Option<File>,
                _: &Vars<'_>,
                _: &mut Sources<'_>,
            ) -> Result<(), ConfigError> {
                Ok(())
            }

            pub fn finish(
                layer: Option<File>,
                value: &mut $ty,
                _: &Sources<'_>,
            ) -> Result<(), ConfigError> {
                if let Some(v) = layer {
                    *value = v.into();
                }
                Ok(())
            }
        }
    };
    (@key $key:ident: $ty:ty, env($var:ident, $parse:ty)) => {
        pub mod $key {
            use super::super::*;

            pub const NAME: &str = stringify!($key);
            pub const VAR: &str = stringify!($var);
            pub const SETTINGS: &[Setting] = &[Setting { key: NAME, var: Some(VAR) }];
            pub type File = <$parse as Parse>::Value;

            pub fn shown(value: &$ty) -> &$ty {
                value
            }

            pub fn mark(file: &Option<File>, sources: &mut Sources<'_>) {
                if file.is_some() {
                    sources.set_by_file(NAME);
                }
            }

            pub fn env(
                layer: &mut Option<File>,
                var: &Vars<'_>,
                sources: &mut Sources<'_>,
            ) -> Result<(), ConfigError> {
                if let Some(text) = var(VAR) {
                    *layer = Some(parse_env::<$parse>(VAR, &text)?);
                    sources.set_by_env(NAME, VAR, &text);
                }
                Ok(())
            }

            pub fn finish(
                layer: Option<File>,
                value: &mut $ty,
                _: &Sources<'_>,
            ) -> Result<(), ConfigError> {
                if let Some(v) = layer {
                    *value = v.into();
                }
                Ok(())
            }
        }
    };
    (@key $key:ident: $ty:ty, secret($var:ident, $parse:ty)) => {
        pub mod $key {
            use super::super::*;

            pub const NAME: &str = stringify!($key);
            pub const VAR: &str = stringify!($var);
            pub const SETTINGS: &[Setting] = &[Setting { key: NAME, var: Some(VAR) }];
            pub type File = <$parse as Parse>::Value;

            pub fn shown(value: &$ty) -> Option<&'static str> {
                value.as_ref().map(|_| "<redacted>")
            }

            pub fn mark(_: &Option<File>, _: &mut Sources<'_>) {}

            pub fn env(
                layer: &mut Option<File>,
                var: &Vars<'_>,
                _: &mut Sources<'_>,
            ) -> Result<(), ConfigError> {
                if let Some(text) = var(VAR) {
                    *layer = Some(parse_env::<$parse>(VAR, &text)?);
                }
                Ok(())
            }

            pub fn finish(
                layer: Option<File>,
                value: &mut $ty,
                _: &Sources<'_>,
            ) -> Result<(), ConfigError> {
                if let Some(v) = layer {
                    *value = v.into();
                }
                Ok(())
            }
        }
    };
    (@key $key:ident: $ty:ty, pair($value:ident, $expecting:literal, {
        $(#[doc = $a_doc:literal])* $a:ident: $a_var:ident,
        $(#[doc = $b_doc:literal])* $b:ident: $b_var:ident $(,)?
    })) => {
        // The members' names are constants named after them: `keys::tls::cert_file`.
        #[allow(non_upper_case_globals)]
        pub mod $key {
            use super::super::*;

            pub const NAME: &str = stringify!($key);
            pub const $a: &str = concat!(stringify!($key), ".", stringify!($a));
            pub const $b: &str = concat!(stringify!($key), ".", stringify!($b));
            pub const SETTINGS: &[Setting] = &[
                Setting { key: $a, var: Some(stringify!($a_var)) },
                Setting { key: $b, var: Some(stringify!($b_var)) },
            ];

            /// The section as the file holds it; each member's variable
            /// then sets that member alone.
            #[derive(Default, Deserialize)]
            #[serde(deny_unknown_fields, expecting = $expecting)]
            pub struct File {
                $(#[doc = $a_doc])*
                $a: Option<PathBuf>,
                $(#[doc = $b_doc])*
                $b: Option<PathBuf>,
            }

            pub fn shown(value: &$ty) -> &$ty {
                value
            }

            pub fn mark(file: &Option<File>, sources: &mut Sources<'_>) {
                if let Some(file) = file {
                    if file.$a.is_some() {
                        sources.set_by_file($a);
                    }
                    if file.$b.is_some() {
                        sources.set_by_file($b);
                    }
                }
            }

            pub fn env(
                layer: &mut Option<File>,
                var: &Vars<'_>,
                sources: &mut Sources<'_>,
            ) -> Result<(), ConfigError> {
                if let Some(text) = var(stringify!($a_var)) {
                    sources.set_by_env($a, stringify!($a_var), &text);
                    layer.get_or_insert_with(File::default).$a = Some(PathBuf::from(text));
                }
                if let Some(text) = var(stringify!($b_var)) {
                    sources.set_by_env($b, stringify!($b_var), &text);
                    layer.get_or_insert_with(File::default).$b = Some(PathBuf::from(text));
                }
                Ok(())
            }

            pub fn finish(
                layer: Option<File>,
                value: &mut $ty,
                sources: &Sources<'_>,
            ) -> Result<(), ConfigError> {
                let Some(file) = layer else {
                    return Ok(());
                };
                // Naming both variables tells whoever set one in the
                // environment where the other goes.
                let unpaired = |set: &'static str, unset: &str, path: PathBuf| {
                    sources.invalid(
                        set,
                        &path.display().to_string(),
                        format_args!(
                            "is set but {unset} is not: set both ({} and {} in the \
                             environment) or neither",
                            stringify!($a_var),
                            stringify!($b_var),
                        ),
                    )
                };
                *value = match (file.$a, file.$b) {
                    (Some(a), Some(b)) => Some($value { $a: a, $b: b }),
                    (None, None) => None,
                    (Some(path), None) => return Err(unpaired($a, $b, path)),
                    (None, Some(path)) => return Err(unpaired($b, $a, path)),
                };
                Ok(())
            }
        }
    };
    ($(
        $(#[doc = $doc:literal])*
        $key:ident: $ty:ty = $default:expr, $how:ident $args:tt;
    )*) => {
        /// fleetd's settings: the defaults, then the file, then the
        /// environment ([`Config::load`]).
        #[derive(Clone, PartialEq)]
        pub struct Config {
            $(
                $(#[doc = $doc])*
                pub $key: $ty,
            )*
        }

        impl Default for Config {
            fn default() -> Self {
                Config {
                    $($key: $default,)*
                }
            }
        }

        impl fmt::Debug for Config {
            /// Like the derived one, without a secret's value.
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct("Config")
                    $(.field(keys::$key::NAME, &keys::$key::shown(&self.$key)))*
                    .finish()
            }
        }

        /// The keys a config file may hold, in the order `ops/config.md`
        /// lists them.
        pub const KEYS: &[&str] = &[$(keys::$key::NAME),*];

        /// Per key, what `ops/config.md`'s table lists: the key, or a
        /// section's members, with their variables.
        const SETTINGS: &[&[Setting]] = &[$(keys::$key::SETTINGS),*];

        /// Per key, its name and how the file and the environment set it.
        mod keys {
            $(super::config_keys!(@key $key: $ty, $how $args);)*
        }

        /// The file as written: every key optional, so the file says only
        /// what it changes; then the environment's values on top. The field
        /// order is [`KEYS`]' (serde lists them in errors).
        #[derive(Default, Deserialize)]
        #[serde(
            deny_unknown_fields,
            expecting = "a mapping of fleetd config keys (see ops/config.md)"
        )]
        struct FileConfig {
            $($key: Option<keys::$key::File>,)*
        }

        impl FileConfig {
            /// Records the line of each key the file sets.
            fn mark_file(&self, sources: &mut Sources<'_>) {
                $(keys::$key::mark(&self.$key, sources);)*
            }

            /// Replaces what the file set with the variables that are set,
            /// in the keys' order (so the first bad variable is the error).
            fn apply_env(
                &mut self,
                var: &Vars<'_>,
                sources: &mut Sources<'_>,
            ) -> Result<(), ConfigError> {
                $(keys::$key::env(&mut self.$key, var, sources)?;)*
                Ok(())
            }

            /// The defaults with what the file and the environment set.
            fn finish(self, sources: &Sources<'_>) -> Result<Config, ConfigError> {
                let mut config = Config::default();
                $(keys::$key::finish(self.$key, &mut config.$key, sources)?;)*
                Ok(config)
            }
        }
    };
}
use config_keys;

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: &str = include_str!("../../../ops/config/all.yaml");
    const API: &str = include_str!("../../../ops/config/api.yaml");
    const PROJECTOR: &str = include_str!("../../../ops/config/projector.yaml");
    const DOC: &str = include_str!("../../../ops/config.md");
    /// The local cluster's processes (ops/cluster.sh).
    const CLUSTER: [&str; 3] = [
        include_str!("../../../ops/cluster/api-1.yaml"),
        include_str!("../../../ops/cluster/api-2.yaml"),
        include_str!("../../../ops/cluster/projector-1.yaml"),
    ];

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
        let cluster = CLUSTER
            .iter()
            .map(|text| parse(text, &[]))
            .collect::<Result<Vec<_>, _>>()?;
        for config in &cluster {
            let urls = config.nats_url.as_deref().unwrap_or_default();
            assert_eq!(nats_servers(urls).map(|s| s.len()), Ok(3), "{config:?}");
            assert_eq!(config.nats_replicas, 3, "{config:?}");
        }
        let mut names: Vec<_> = cluster.iter().map(|c| c.process_name.clone()).collect();
        names.dedup();
        assert_eq!(names.len(), 3, "every process has its own name: {names:?}");
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
        let tls_keys = section_keys(keys::tls::NAME);
        let env_vars: Vec<(&str, &str)> =
            settings().filter_map(|s| Some((s.key, s.var?))).collect();
        for key in KEYS.iter().chain(&tls_keys) {
            assert!(
                DOC.contains(&format!("`{key}`")),
                "ops/config.md lacks `{key}`"
            );
        }
        for (key, var) in &env_vars {
            assert!(DOC.contains(var), "ops/config.md lacks {var}");
            let top = key.split('.').next().unwrap_or(key);
            assert!(KEYS.contains(&top), "{key}");
        }
        assert_eq!(env_vars.len(), KEYS.len() - 2 + tls_keys.len());
    }

    /// The rows of the key table in `ops/config.md` (## Keys) as (key,
    /// variable): `tls` → `cert_file` is `tls.cert_file`, and a variable
    /// cell without code (`—`) is none.
    fn documented_settings() -> Vec<(String, Option<String>)> {
        fn code_spans(cell: &str) -> Vec<&str> {
            cell.split('`').skip(1).step_by(2).collect()
        }
        let section = DOC.split_once("\n## Keys\n").map_or("", |(_, rest)| rest);
        section
            .lines()
            .skip_while(|line| !line.starts_with('|'))
            .take_while(|line| line.starts_with('|'))
            // The header row and the row under it.
            .skip(2)
            .map(|row| {
                let mut cells = row.trim_start_matches('|').split('|');
                let key = code_spans(cells.next().unwrap_or_default()).join(".");
                let var = code_spans(cells.next().unwrap_or_default())
                    .first()
                    .map(|v| v.to_string());
                (key, var)
            })
            .collect()
    }

    #[test]
    fn the_key_table_in_ops_config_md_is_the_declaration() {
        let documented = documented_settings();
        let declared: Vec<(String, Option<String>)> = settings()
            .map(|s| (s.key.to_owned(), s.var.map(str::to_owned)))
            .collect();
        for setting in &declared {
            assert!(
                documented.contains(setting),
                "ops/config.md's key table has no row for {setting:?} \
                 (| `key` | `VARIABLE` | …, or — for no variable)"
            );
        }
        for row in &documented {
            assert!(
                declared.contains(row),
                "ops/config.md's key table has {row:?}, which config.rs does not declare"
            );
        }
        assert_eq!(
            documented, declared,
            "ops/config.md's key table is not in the declaration's order"
        );
    }

    #[test]
    fn the_tls_section_is_described_by_its_keys() {
        // The section's serde `expecting` is a literal in the declaration.
        let message = error("version: 1\ntls: yes\n", &[]);
        let members = section_keys(keys::tls::NAME).join(" and ");
        assert!(
            message.ends_with(&format!("expected a mapping with {members}")),
            "{message}"
        );
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
            nats_replicas: 2\n\
            nats_retry_ms: 4\n\
            process_name: file-api\n\
            listen: 127.0.0.1:1000\n\
            http_listen: 127.0.0.1:1001\n\
            data_dir: /file/data\n\
            region: file\n\
            leading_region: file-lead\n\
            regional_domain: file.example:7400\n\
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
                ("FLEETLOG_NATS_REPLICAS", "3"),
                ("FLEETLOG_NATS_RETRY_MS", "14"),
                ("FLEETLOG_PROCESS_NAME", "env-api"),
                ("FLEETLOG_LISTEN", "127.0.0.1:2000"),
                ("FLEETLOG_HTTP_LISTEN", "127.0.0.1:2001"),
                ("FLEETLOG_DATA_DIR", "/env/data"),
                ("FLEETLOG_REGION", "env"),
                ("FLEETLOG_LEADING_REGION", "env-lead"),
                ("FLEETLOG_REGIONAL_DOMAIN", "env.example:7400"),
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
            nats_replicas: 3,
            nats_retry_ms: 14,
            process_name: Some("env-api".into()),
            listen: SocketAddr::from(([127, 0, 0, 1], 2000)),
            http_listen: SocketAddr::from(([127, 0, 0, 1], 2001)),
            data_dir: "/env/data".into(),
            region: "env".into(),
            leading_region: Some("env-lead".into()),
            regional_domain: Some("env.example:7400".into()),
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
            (
                "FLEETLOG_NATS_URL",
                "nats://n1:4222,http://n2:4222",
                "http://n2:4222: ",
            ),
            ("FLEETLOG_NATS_URL", ",", "no URL"),
            ("FLEETLOG_NATS_REPLICAS", "0", "must be 1 to 5"),
            ("FLEETLOG_NATS_REPLICAS", "7", "must be 1 to 5"),
            ("FLEETLOG_NATS_REPLICAS", "three", "expected a whole number"),
            ("FLEETLOG_NATS_RETRY_MS", "10s", "milliseconds"),
            ("FLEETLOG_PROCESS_NAME", "api 1", "may hold only letters"),
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
