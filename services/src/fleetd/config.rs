//! fleetd configuration: a YAML file (unknown keys rejected) with `FLEETLOG_*`
//! environment overrides on top.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The config file format version this build reads.
pub const CONFIG_VERSION: u32 = 1;

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub version: u32,
    /// NATS server to use; when unset, `fleetd all` starts its own.
    pub nats_url: Option<String>,
    /// gRPC (and gRPC-Web) listen address.
    pub listen: SocketAddr,
    /// HTTP listen address (health and, later, REST and metrics).
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
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("environment variable {name}={value:?}: {message}")]
    Env {
        name: &'static str,
        value: String,
        message: String,
    },
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    /// Reads `file` (if any), then applies overrides from `env`.
    pub fn load(
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut config = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                serde_yaml::from_str::<Config>(&text).map_err(|e| ConfigError::Parse {
                    path: path.to_owned(),
                    message: e.to_string(),
                })?
            }
            None => Config::default(),
        };
        if config.version != CONFIG_VERSION {
            return Err(ConfigError::Invalid(format!(
                "config version {} is not supported; this fleetd reads version {CONFIG_VERSION}",
                config.version
            )));
        }
        if let Some(v) = env("FLEETLOG_NATS_URL").filter(|v| !v.is_empty()) {
            config.nats_url = Some(v);
        }
        if let Some(v) = env("FLEETLOG_LISTEN") {
            config.listen = parse_env("FLEETLOG_LISTEN", &v)?;
        }
        if let Some(v) = env("FLEETLOG_HTTP_LISTEN") {
            config.http_listen = parse_env("FLEETLOG_HTTP_LISTEN", &v)?;
        }
        if let Some(v) = env("FLEETLOG_DATA_DIR") {
            config.data_dir = PathBuf::from(v);
        }
        if let Some(v) = env("FLEETLOG_REGION") {
            config.region = v;
        }
        if let Some(v) = env("FLEETLOG_BOOTSTRAP_ADMIN_KEY").filter(|v| !v.is_empty()) {
            config.bootstrap_admin_key = Some(v);
        }
        if let Some(v) = env("FLEETLOG_NATS_SERVER") {
            config.nats_server_bin = PathBuf::from(v);
        }
        if let Some(v) = env("FLEETLOG_DEVICES_INITIAL_VERSION").filter(|v| !v.is_empty()) {
            config.devices_initial_version = v;
        }
        if !crate::devices::VERSIONS.contains(&config.devices_initial_version.as_str()) {
            return Err(ConfigError::Invalid(format!(
                "devices_initial_version {:?} is not a Devices API version ({})",
                config.devices_initial_version,
                crate::devices::VERSIONS.join(", ")
            )));
        }
        if let Some(v) = env("FLEETLOG_READ_WAIT_MS") {
            config.read_wait_ms = parse_env("FLEETLOG_READ_WAIT_MS", &v)?;
        }
        if let Some(v) = env("FLEETLOG_HEARTBEAT_TIMEOUT_MS") {
            config.heartbeat_timeout_ms = parse_env("FLEETLOG_HEARTBEAT_TIMEOUT_MS", &v)?;
        }
        if let Some(v) = env("FLEETLOG_MAX_REQUEST_BYTES") {
            config.max_request_bytes = parse_env("FLEETLOG_MAX_REQUEST_BYTES", &v)?;
        }
        fleetlog_events::Id::parse(&config.region).map_err(|e| {
            ConfigError::Invalid(format!(
                "region {:?} is not a valid region ID: {e}",
                config.region
            ))
        })?;
        Ok(config)
    }

    pub fn read_wait(&self) -> Duration {
        Duration::from_millis(self.read_wait_ms)
    }

    pub fn heartbeat_timeout(&self) -> Duration {
        Duration::from_millis(self.heartbeat_timeout_ms.max(1))
    }
}

fn parse_env<T: std::str::FromStr>(name: &'static str, value: &str) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    value.parse().map_err(|e: T::Err| ConfigError::Env {
        name,
        value: value.to_owned(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn defaults_match_the_api_contract() -> Result<(), ConfigError> {
        let config = Config::load(None, env(&[]))?;
        assert_eq!(config.listen.to_string(), "127.0.0.1:7400");
        assert_eq!(config.http_listen.to_string(), "127.0.0.1:7401");
        assert_eq!(config.data_dir, PathBuf::from("./data"));
        assert_eq!(config.region, "local");
        assert_eq!(config.nats_url, None);
        Ok(())
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
    fn rejects_unknown_keys_bad_values_and_versions() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("fleetd.yaml");
        std::fs::write(&path, "version: 1\nlisen: 127.0.0.1:9000\n")?;
        let err = Config::load(Some(&path), env(&[])).expect_err("typo");
        assert!(err.to_string().contains("unknown field `lisen`"), "{err}");
        std::fs::write(&path, "version: 2\n")?;
        let err = Config::load(Some(&path), env(&[])).expect_err("version");
        assert!(err.to_string().contains("version 2"), "{err}");
        let err = Config::load(None, env(&[("FLEETLOG_LISTEN", "nope")])).expect_err("addr");
        assert!(err.to_string().contains("FLEETLOG_LISTEN"), "{err}");
        let err = Config::load(None, env(&[("FLEETLOG_REGION", "EU 1")])).expect_err("region");
        assert!(err.to_string().contains("region"), "{err}");
        Ok(())
    }
}
