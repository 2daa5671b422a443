//! The effective settings: each from a flag, else its environment variable,
//! else the config file, else the default.
//!
//! The config file is YAML (`--config FILE`, `FLEETCTL_CONFIG`, or
//! `$XDG_CONFIG_HOME/fleetlog/fleetctl.yaml`, else
//! `~/.config/fleetlog/fleetctl.yaml`):
//!
//! ```yaml
//! endpoint: https://fleet.example.com:7400
//! key: fl1:projects/…
//! output: yaml
//! api_version: v1
//! ca_cert: fleetd.crt          # relative to the file's directory
//! tls_server_name: fleet.example.com
//! ```
//!
//! Unknown keys are refused, so a typo never silently falls back to a default.

use std::path::{Path, PathBuf};

use clap::ValueEnum;
use clap::parser::{ArgMatches, ValueSource};
use serde::Deserialize;

use crate::cli::{Cli, DEFAULT_API_VERSION, DEFAULT_ENDPOINT, Output};
use crate::error::Error;
use crate::output;

/// Where a setting came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Flag(&'static str),
    Env(&'static str),
    File,
    Default,
}

impl Source {
    pub fn describe(&self) -> String {
        match self {
            Source::Flag(flag) => format!("flag {flag}"),
            Source::Env(var) => format!("env {var}"),
            Source::File => "config file".to_owned(),
            Source::Default => "default".to_owned(),
        }
    }
}

/// A value and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sourced<T> {
    pub value: T,
    pub source: Source,
}

/// The keys of the config file.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub endpoint: Option<String>,
    pub key: Option<String>,
    pub output: Option<String>,
    pub api_version: Option<String>,
    pub ca_cert: Option<PathBuf>,
    pub tls_server_name: Option<String>,
}

/// The effective settings of one fleetctl run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The config file consulted, and whether it exists.
    pub file: Option<PathBuf>,
    pub file_found: bool,
    pub endpoint: Sourced<String>,
    pub key: Sourced<Option<String>>,
    pub output: Sourced<Output>,
    pub api_version: Sourced<String>,
    pub ca_cert: Sourced<Option<PathBuf>>,
    pub tls_server_name: Sourced<Option<String>>,
}

/// One command-line setting: its value (from the flag or the environment)
/// and which of the two it came from.
#[derive(Debug, Clone)]
pub struct Given<T> {
    pub value: Option<T>,
    pub from_env: bool,
}

impl<T> Default for Given<T> {
    fn default() -> Self {
        Given {
            value: None,
            from_env: false,
        }
    }
}

/// What the command line (and environment) said.
#[derive(Debug, Clone, Default)]
pub struct Flags {
    pub config: Option<PathBuf>,
    pub endpoint: Given<String>,
    pub key: Given<String>,
    pub output: Given<Output>,
    pub api_version: Given<String>,
    pub ca_cert: Given<PathBuf>,
    pub tls_server_name: Given<String>,
}

impl Flags {
    /// The global options of `cli`, with their sources from `matches`.
    pub fn from_cli(cli: &Cli, matches: &ArgMatches) -> Flags {
        fn given<T: Clone>(value: &Option<T>, matches: &ArgMatches, id: &str) -> Given<T> {
            let from_env = matches!(
                matches
                    .try_get_raw(id)
                    .ok()
                    .flatten()
                    .and(matches.value_source(id)),
                Some(ValueSource::EnvVariable)
            );
            Given {
                value: value.clone(),
                from_env,
            }
        }
        Flags {
            config: cli.config.clone(),
            endpoint: given(&cli.endpoint, matches, "endpoint"),
            key: given(&cli.key, matches, "key"),
            output: given(&cli.output, matches, "output"),
            api_version: given(&cli.api_version, matches, "api_version"),
            ca_cert: given(&cli.ca_cert, matches, "ca_cert"),
            tls_server_name: given(&cli.tls_server_name, matches, "tls_server_name"),
        }
    }
}

/// The config file to read: the one given (which must exist), else the
/// default location (which may not).
pub fn config_path(given: Option<&Path>) -> (Option<PathBuf>, bool) {
    if let Some(path) = given {
        return (Some(path.to_owned()), true);
    }
    let non_empty = |var: &str| std::env::var_os(var).filter(|v| !v.is_empty());
    let dir = non_empty("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| non_empty("HOME").map(|home| PathBuf::from(home).join(".config")));
    (
        dir.map(|dir| dir.join("fleetlog").join("fleetctl.yaml")),
        false,
    )
}

/// Parses a config file's text; `path` names it in errors.
pub fn parse_file(text: &str, path: &Path) -> Result<FileConfig, Error> {
    let fail = |err: serde_yaml::Error| Error::Config(format!("{}: {err}", path.display()));
    // An empty file (or one with only comments) is no settings.
    let value: serde_yaml::Value = serde_yaml::from_str(text).map_err(fail)?;
    if value.is_null() {
        return Ok(FileConfig::default());
    }
    serde_yaml::from_str(text).map_err(fail)
}

/// Reads the config file, if there is one.
fn read_file(path: Option<&Path>, required: bool) -> Result<(FileConfig, bool), Error> {
    let Some(path) = path else {
        return Ok((FileConfig::default(), false));
    };
    match std::fs::read_to_string(path) {
        Ok(text) => Ok((parse_file(&text, path)?, true)),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound && !required => {
            Ok((FileConfig::default(), false))
        }
        Err(err) => Err(Error::Config(format!(
            "cannot read the config file {}: {err}",
            path.display()
        ))),
    }
}

/// Flag > environment > file > default, for each setting.
pub fn resolve(
    flags: Flags,
    file: FileConfig,
    path: Option<PathBuf>,
    found: bool,
) -> Result<Settings, Error> {
    fn pick<T>(
        given: Given<T>,
        flag: &'static str,
        env: &'static str,
        file: Option<T>,
    ) -> Option<Sourced<T>> {
        match given.value {
            Some(value) => Some(Sourced {
                value,
                source: if given.from_env {
                    Source::Env(env)
                } else {
                    Source::Flag(flag)
                },
            }),
            None => file.map(|value| Sourced {
                value,
                source: Source::File,
            }),
        }
    }
    fn or_default<T>(picked: Option<Sourced<T>>, default: T) -> Sourced<T> {
        picked.unwrap_or(Sourced {
            value: default,
            source: Source::Default,
        })
    }
    fn optional<T>(picked: Option<Sourced<T>>) -> Sourced<Option<T>> {
        match picked {
            Some(Sourced { value, source }) => Sourced {
                value: Some(value),
                source,
            },
            None => Sourced {
                value: None,
                source: Source::Default,
            },
        }
    }

    let file_output = match file.output.as_deref() {
        None => None,
        Some(text) => Some(Output::from_str(text.trim(), true).map_err(|_| {
            Error::Config(format!(
                "{}: output: {text:?} is not one of table, json, yaml",
                path.as_deref()
                    .map_or_else(String::new, |p| p.display().to_string())
            ))
        })?),
    };
    // A relative ca_cert in the file is relative to the file.
    let base = path.as_deref().and_then(Path::parent).map(Path::to_owned);
    let file_ca = file.ca_cert.map(|ca| match &base {
        Some(base) if ca.is_relative() => base.join(ca),
        _ => ca,
    });
    Ok(Settings {
        endpoint: or_default(
            pick(
                flags.endpoint,
                "--endpoint",
                "FLEETLOG_ENDPOINT",
                file.endpoint,
            ),
            DEFAULT_ENDPOINT.to_owned(),
        ),
        key: optional(pick(flags.key, "--key", "FLEETLOG_KEY", file.key)),
        output: or_default(
            pick(flags.output, "--output", "", file_output),
            Output::Table,
        ),
        api_version: or_default(
            pick(
                flags.api_version,
                "--api-version",
                "FLEETLOG_API_VERSION",
                file.api_version,
            ),
            DEFAULT_API_VERSION.to_owned(),
        ),
        ca_cert: optional(pick(
            flags.ca_cert,
            "--ca-cert",
            "FLEETLOG_CA_CERT",
            file_ca,
        )),
        tls_server_name: optional(pick(
            flags.tls_server_name,
            "--tls-server-name",
            "",
            file.tls_server_name,
        )),
        file: path,
        file_found: found,
    })
}

/// The settings of this run: reads the config file and applies precedence.
pub fn load(flags: Flags) -> Result<Settings, Error> {
    let (path, required) = config_path(flags.config.as_deref());
    let (file, found) = read_file(path.as_deref(), required)?;
    resolve(flags, file, path, found)
}

impl Settings {
    /// The connection these settings describe.
    pub fn connection(&self) -> crate::connect::Connection {
        crate::connect::Connection {
            endpoint: self.endpoint.value.clone(),
            key: self.key.value.clone(),
            ca_cert: self.ca_cert.value.clone(),
            tls_server_name: self.tls_server_name.value.clone(),
        }
    }
}

/// `fleetctl config show`: the effective settings, the key redacted.
pub fn show(settings: &Settings) -> Result<(), Error> {
    let key = if settings
        .key
        .value
        .as_deref()
        .is_some_and(|k| !k.trim().is_empty())
    {
        "<redacted>".to_owned()
    } else {
        "<none>".to_owned()
    };
    let file = settings
        .file
        .as_deref()
        .map_or_else(|| "-".to_owned(), |p| p.display().to_string());
    let file_state = if settings.file_found {
        "read"
    } else {
        "not found"
    };
    let path_text = |p: &Option<PathBuf>| p.as_deref().map(|p| p.display().to_string());
    let rows: Vec<(&str, String, String)> = vec![
        ("config", file, file_state.to_owned()),
        (
            "endpoint",
            settings.endpoint.value.clone(),
            settings.endpoint.source.describe(),
        ),
        ("key", key, settings.key.source.describe()),
        (
            "output",
            output_name(settings.output.value).to_owned(),
            settings.output.source.describe(),
        ),
        (
            "api_version",
            settings.api_version.value.clone(),
            settings.api_version.source.describe(),
        ),
        (
            "ca_cert",
            path_text(&settings.ca_cert.value).unwrap_or_else(|| "-".to_owned()),
            settings.ca_cert.source.describe(),
        ),
        (
            "tls_server_name",
            settings
                .tls_server_name
                .value
                .clone()
                .unwrap_or_else(|| "-".to_owned()),
            settings.tls_server_name.source.describe(),
        ),
    ];
    match settings.output.value {
        Output::Table => {
            let table: Vec<Vec<String>> = rows
                .into_iter()
                .map(|(k, v, s)| vec![k.to_owned(), v, s])
                .collect();
            output::write_stdout(&output::format_table(
                &["SETTING", "VALUE", "SOURCE"],
                &table,
            ))?;
        }
        out => {
            let mut map = serde_json::Map::new();
            for (name, value, source) in rows {
                map.insert(
                    name.to_owned(),
                    serde_json::json!({ "value": value, "source": source }),
                );
            }
            output::print_value(&serde_json::Value::Object(map), out)?;
        }
    }
    Ok(())
}

pub fn output_name(out: Output) -> &'static str {
    match out {
        Output::Table => "table",
        Output::Json => "json",
        Output::Yaml => "yaml",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flag<T>(value: T) -> Given<T> {
        Given {
            value: Some(value),
            from_env: false,
        }
    }

    fn env<T>(value: T) -> Given<T> {
        Given {
            value: Some(value),
            from_env: true,
        }
    }

    #[test]
    fn flag_beats_env_beats_file_beats_default() {
        let file = FileConfig {
            endpoint: Some("http://file:1".into()),
            key: Some("file-key".into()),
            output: Some("YAML".into()),
            api_version: Some("v1alpha2".into()),
            ca_cert: Some("ca.pem".into()),
            tls_server_name: None,
        };
        let flags = Flags {
            endpoint: flag("http://flag:1".into()),
            key: env("env-key".into()),
            ..Default::default()
        };
        let path = PathBuf::from("/etc/fleetlog/fleetctl.yaml");
        let s = resolve(flags, file, Some(path), true).expect("valid");
        assert_eq!(s.endpoint.value, "http://flag:1");
        assert_eq!(s.endpoint.source, Source::Flag("--endpoint"));
        assert_eq!(s.key.value.as_deref(), Some("env-key"));
        assert_eq!(s.key.source, Source::Env("FLEETLOG_KEY"));
        assert_eq!(s.output.value, Output::Yaml);
        assert_eq!(s.output.source, Source::File);
        assert_eq!(s.api_version.value, "v1alpha2");
        assert_eq!(
            s.ca_cert.value.as_deref(),
            Some(Path::new("/etc/fleetlog/ca.pem"))
        );
        assert_eq!(s.tls_server_name.source, Source::Default);

        let s = resolve(Flags::default(), FileConfig::default(), None, false).expect("valid");
        assert_eq!(s.endpoint.value, DEFAULT_ENDPOINT);
        assert_eq!(s.output.value, Output::Table);
        assert_eq!(s.api_version.value, DEFAULT_API_VERSION);
        assert_eq!(s.key.value, None);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let path = Path::new("/x/fleetctl.yaml");
        let err = parse_file("endpoint: http://a:1\nkee: x\n", path).expect_err("typo");
        let Error::Config(message) = err else {
            panic!("{err:?}")
        };
        assert!(message.contains("/x/fleetctl.yaml"), "{message}");
        assert!(message.contains("kee"), "{message}");
        assert_eq!(
            parse_file("# nothing\n", path).expect("empty"),
            FileConfig::default()
        );
        let file = parse_file("output: xml\n", path).expect("parses");
        let err =
            resolve(Flags::default(), file, Some(path.to_owned()), true).expect_err("bad output");
        assert!(matches!(err, Error::Config(m) if m.contains("xml")));
    }
}
