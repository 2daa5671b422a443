//! The command-line interface: clap types only.

use std::path::PathBuf;

use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};

use crate::devices::{self, Label};

/// The endpoint used when neither `--endpoint`, `FLEETLOG_ENDPOINT` nor the
/// config file sets one.
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:7400";

/// The API version generic commands address unless told otherwise.
pub const DEFAULT_API_VERSION: &str = "v1";

const ABOUT: &str = "The Fleetlog command-line client.

Every resource and custom action of every service and API version, from the
proto descriptors: `fleetctl api-resources` lists them.";

const EXAMPLES: &str = "Examples:
  fleetctl create projects/p/regions/eu1/devices/gw-1 --set displayName=Gateway --set labels.site=berlin
  fleetctl get projects/p/regions/eu1/devices/gw-1 -o yaml
  fleetctl list projects/p/regions/eu1/devices --filter 'labels.site = \"berlin\"' --all
  fleetctl update projects/p/regions/eu1/devices/gw-1 --set spec.loggingConfig.priority=6
  fleetctl watch projects/p/regions/eu1/devices
  fleetctl call projects/p/serviceAccounts/ops createServiceAccountKey
  fleetctl --api-version v1alpha2 get projects/p/devices/gw-1
  fleetctl delete projects/p/regions/eu1/devices/gw-1

Settings: flag > environment > config file (--config, FLEETCTL_CONFIG, else
$XDG_CONFIG_HOME/fleetlog/fleetctl.yaml or ~/.config/fleetlog/fleetctl.yaml,
keys endpoint, key, output, api_version, ca_cert, tls_server_name) > default.
`fleetctl config show` prints them.
";

/// The Fleetlog command-line client.
#[derive(Debug, Parser)]
#[command(
    name = "fleetctl",
    version,
    about = "The Fleetlog command-line client",
    long_about = ABOUT,
    after_help = EXAMPLES,
    after_long_help = format!("{EXAMPLES}\n{}", crate::error::EXIT_CODES_HELP),
    propagate_version = true
)]
pub struct Cli {
    /// gRPC endpoint of a fleetd API server (`https://` for TLS)
    /// [default: http://127.0.0.1:7400].
    #[arg(
        long,
        global = true,
        env = "FLEETLOG_ENDPOINT",
        help_heading = "Global Options"
    )]
    pub endpoint: Option<String>,

    /// API key, sent as `authorization: Bearer <key>` on every call.
    #[arg(
        long,
        global = true,
        env = "FLEETLOG_KEY",
        hide_env_values = true,
        help_heading = "Global Options"
    )]
    pub key: Option<String>,

    /// Output format [default: table].
    #[arg(
        long,
        short = 'o',
        global = true,
        value_enum,
        help_heading = "Global Options"
    )]
    pub output: Option<Output>,

    /// The config file (YAML) [default: $XDG_CONFIG_HOME/fleetlog/fleetctl.yaml
    /// or ~/.config/fleetlog/fleetctl.yaml].
    #[arg(
        long,
        global = true,
        env = "FLEETCTL_CONFIG",
        value_name = "FILE",
        help_heading = "Global Options"
    )]
    pub config: Option<PathBuf>,

    /// The API version whose names the generic commands take (v1, v1alpha2)
    /// [default: v1].
    #[arg(
        long = "api-version",
        id = "api_version",
        global = true,
        env = "FLEETLOG_API_VERSION",
        value_name = "VERSION",
        help_heading = "Global Options"
    )]
    pub api_version: Option<String>,

    /// A PEM certificate to trust for an `https://` endpoint (e.g. fleetd's
    /// self-signed one), beside the system's roots.
    #[arg(
        long,
        global = true,
        env = "FLEETLOG_CA_CERT",
        value_name = "FILE",
        help_heading = "Global Options"
    )]
    pub ca_cert: Option<PathBuf>,

    /// The name the server's certificate must carry, when it is not the
    /// endpoint's host.
    #[arg(
        long,
        global = true,
        value_name = "NAME",
        help_heading = "Global Options"
    )]
    pub tls_server_name: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns for people.
    Table,
    /// The proto3 JSON mapping (lowerCamelCase field names).
    Json,
    /// The proto3 JSON mapping, as YAML.
    Yaml,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Get resources by name (several names of one type: one BatchGet).
    Get(GetResourceArgs),
    /// List a collection, e.g. projects/p/regions/eu1/devices, regions.
    List(ListResourceArgs),
    /// Create a resource: its full name (with the new ID) and its fields.
    Create(CreateResourceArgs),
    /// Update fields of a resource.
    Update(UpdateResourceArgs),
    /// Delete resources by name.
    Delete(DeleteResourceArgs),
    /// Watch a resource or a collection and print each change.
    Watch(WatchResourceArgs),
    /// Call a custom action on a resource, e.g. createServiceAccountKey.
    Call(CallArgs),
    /// List every resource type and action of every API version.
    #[command(name = "api-resources")]
    ApiResources,
    /// Print a shell completion script.
    Completion(CompletionArgs),
    /// Show the effective settings.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Devices v1 with typed flags: shorthands for get, list, create,
    /// update, delete and watch.
    #[command(subcommand)]
    Devices(DevicesCommand),
    /// Upgrade a service's deployment in a region (fleetlog.meta.v1.DeploymentService).
    #[command(subcommand)]
    Upgrade(UpgradeCommand),
    /// Rebuild or verify a projection from the log (talks to NATS and
    /// RocksDB directly).
    #[command(subcommand)]
    Projection(crate::projection::ProjectionCommand),
}

impl Command {
    /// The subcommand names, e.g. `["devices", "update"]`.
    pub fn path(&self) -> Vec<&'static str> {
        match self {
            Command::Get(_) => vec!["get"],
            Command::List(_) => vec!["list"],
            Command::Create(_) => vec!["create"],
            Command::Update(_) => vec!["update"],
            Command::Delete(_) => vec!["delete"],
            Command::Watch(_) => vec!["watch"],
            Command::Call(_) => vec!["call"],
            Command::ApiResources => vec!["api-resources"],
            Command::Completion(_) => vec!["completion"],
            Command::Config(ConfigCommand::Show) => vec!["config", "show"],
            Command::Devices(devices) => vec!["devices", devices.name()],
            Command::Upgrade(upgrade) => vec!["upgrade", upgrade.name()],
            Command::Projection(projection) => vec!["projection", projection.name()],
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the effective settings and where each comes from (the key redacted).
    Show,
}

#[derive(Debug, Args)]
pub struct CompletionArgs {
    /// The shell to complete in.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// The body of a create, update or call: documents and `--set`.
#[derive(Debug, Clone, Default, Args)]
pub struct BodyArgs {
    /// A YAML or JSON file in the proto3 JSON form (`-` reads stdin).
    #[arg(long = "file", short = 'f', value_name = "FILE")]
    pub file: Option<String>,

    /// Set a field: `path=value` (repeatable), e.g. `displayName=x`,
    /// `labels.site=berlin`, `spec.loggingConfig.units=a.service,b.service`.
    #[arg(long = "set", value_name = "PATH=VALUE")]
    pub set: Vec<String>,
}

/// `--mask`: of get, list and watch, generic and typed.
#[derive(Debug, Clone, Default, Args)]
pub struct MaskArgs {
    /// Field paths to return, comma-separated (e.g. `name,metadata.labels`).
    #[arg(
        long = "mask",
        visible_alias = "field-mask",
        value_name = "PATHS",
        value_delimiter = ','
    )]
    pub mask: Vec<String>,
}

/// The options of a read: `get` and `devices get`, and every list.
#[derive(Debug, Clone, Default, Args)]
pub struct ReadArgs {
    #[command(flatten)]
    pub mask: MaskArgs,

    /// Wait until the read model has reached this revision.
    #[arg(long, value_name = "N")]
    pub min_revision: Option<i64>,
}

#[derive(Debug, Args)]
pub struct GetResourceArgs {
    /// Resource names, e.g. projects/p/regions/eu1/devices/gw-1.
    #[arg(required = true, value_name = "NAME")]
    pub names: Vec<String>,

    #[command(flatten)]
    pub read: ReadArgs,

    /// Keep watching and print each change (one name only).
    #[arg(long, short = 'w')]
    pub watch: bool,

    /// With --watch: only changes after this revision.
    #[arg(long, value_name = "N", requires = "watch")]
    pub resume_revision: Option<i64>,
}

#[derive(Debug, Args)]
pub struct ListResourceArgs {
    /// The collection: {parent}/{plural}, e.g. projects/p/regions/eu1/devices,
    /// regions, services/devices.fleetlog.io/deployments.
    pub collection: String,

    #[command(flatten)]
    pub page: ListPageArgs,

    /// Keep watching the collection and print each change.
    #[arg(long, short = 'w', conflicts_with_all = ["all", "page_token", "page_size", "order_by"])]
    pub watch: bool,

    /// With --watch: only changes after this revision.
    #[arg(long, value_name = "N", requires = "watch")]
    pub resume_revision: Option<i64>,
}

/// The query flags of a list: typed (`devices list`) and generic (`list`).
#[derive(Debug, Clone, Default, Args)]
pub struct ListPageArgs {
    /// AIP-160 filter, e.g. `labels.site = "berlin"`.
    #[arg(long)]
    pub filter: Option<String>,

    /// Comma-separated field paths, each optionally followed by `desc`.
    #[arg(long)]
    pub order_by: Option<String>,

    /// Maximum number of resources per page (server default 100, max 1000).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i32).range(1..))]
    pub page_size: Option<i32>,

    /// Continue from this page token (as printed for a previous page).
    #[arg(long, value_name = "TOKEN", conflicts_with = "all")]
    pub page_token: Option<String>,

    /// Follow next_page_token until the last page.
    #[arg(long)]
    pub all: bool,

    #[command(flatten)]
    pub read: ReadArgs,
}

/// `--request-id`: of every write, generic and typed.
#[derive(Debug, Clone, Default, Args)]
pub struct RequestIdArgs {
    /// Idempotency key: a retry with the same ID returns the first outcome
    /// (a delete takes it with one name only).
    #[arg(long)]
    pub request_id: Option<String>,
}

/// The conditions of an update or a delete, generic and typed.
#[derive(Debug, Clone, Default, Args)]
pub struct WriteArgs {
    /// Fail with ABORTED unless the resource is at this revision.
    #[arg(long, value_name = "N")]
    pub expected_revision: Option<i64>,

    /// If the resource does not exist: update creates it, delete succeeds.
    #[arg(long)]
    pub allow_missing: bool,

    #[command(flatten)]
    pub request: RequestIdArgs,
}

/// The options of an update besides its fields, generic and typed.
#[derive(Debug, Clone, Default, Args)]
pub struct UpdateOptions {
    /// Field paths to update, comma-separated (`*`: all); by default the
    /// fields the command sets (--set, the top-level fields of -f, or the
    /// field flags of `devices update`).
    #[arg(long, value_name = "PATHS", value_delimiter = ',')]
    pub update_mask: Option<Vec<String>>,

    #[command(flatten)]
    pub write: WriteArgs,
}

/// The options of a watch, generic and typed.
#[derive(Debug, Clone, Default, Args)]
pub struct WatchOptions {
    /// AIP-160 filter (when watching a collection).
    #[arg(long)]
    pub filter: Option<String>,

    #[command(flatten)]
    pub mask: MaskArgs,

    /// Only changes after this revision (default: the current state first).
    #[arg(long, value_name = "N")]
    pub resume_revision: Option<i64>,
}

#[derive(Debug, Args)]
pub struct CreateResourceArgs {
    /// The new resource's full name, e.g. projects/p/regions/eu1/devices/gw-1.
    pub name: String,

    #[command(flatten)]
    pub body: BodyArgs,

    #[command(flatten)]
    pub request: RequestIdArgs,
}

#[derive(Debug, Args)]
pub struct UpdateResourceArgs {
    /// The resource's full name.
    pub name: String,

    #[command(flatten)]
    pub body: BodyArgs,

    #[command(flatten)]
    pub options: UpdateOptions,
}

#[derive(Debug, Args)]
pub struct DeleteResourceArgs {
    /// Resource names.
    #[arg(required = true, value_name = "NAME")]
    pub names: Vec<String>,

    #[command(flatten)]
    pub write: WriteArgs,
}

#[derive(Debug, Args)]
pub struct WatchResourceArgs {
    /// A resource name, or a collection ({parent}/{plural}).
    pub target: String,

    #[command(flatten)]
    pub options: WatchOptions,
}

#[derive(Debug, Args)]
pub struct CallArgs {
    /// The resource the action is on (the request's `name`).
    pub name: String,

    /// The action, as `fleetctl api-resources` lists it (e.g.
    /// createServiceAccountKey; any case).
    pub action: String,

    /// The request (or, for client-streaming actions, an array of requests)
    /// as JSON or YAML.
    #[arg(
        long = "data",
        short = 'd',
        value_name = "JSON",
        conflicts_with = "file"
    )]
    pub data: Option<String>,

    #[command(flatten)]
    pub body: BodyArgs,
}

/// `fleetctl devices …`: typed flags for Devices v1, each command sugar over
/// the generic verb of the same name (see `devices.rs`).
#[derive(Debug, Subcommand)]
pub enum DevicesCommand {
    /// Create a device (`create NAME --set …`).
    Create(CreateArgs),
    /// Get one device (`get NAME`).
    Get(GetArgs),
    /// List the devices of a project and region (`list PARENT/devices`).
    List(ListArgs),
    /// Update fields of a device (`update NAME --set …`).
    Update(UpdateArgs),
    /// Delete a device (`delete NAME`).
    Delete(DeleteArgs),
    /// Watch one device, or all devices under a parent, and print each change
    /// (`watch NAME|PARENT/devices`).
    Watch(WatchArgs),
}

impl DevicesCommand {
    /// The subcommand's name on the command line.
    pub fn name(&self) -> &'static str {
        match self {
            DevicesCommand::Create(_) => "create",
            DevicesCommand::Get(_) => "get",
            DevicesCommand::List(_) => "list",
            DevicesCommand::Update(_) => "update",
            DevicesCommand::Delete(_) => "delete",
            DevicesCommand::Watch(_) => "watch",
        }
    }
}

/// The settable fields of a device, shared by `create` and `update`.
#[derive(Debug, Clone, Default, Args)]
pub struct DeviceFields {
    /// Human-readable name.
    #[arg(long)]
    pub display_name: Option<String>,

    /// Free-form description.
    #[arg(long)]
    pub description: Option<String>,

    /// A label `key=value` (repeatable). On update, the given labels replace all labels.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<Label>,

    /// journald priority threshold, 0 (emerg) to 7 (debug).
    #[arg(long, value_parser = clap::value_parser!(i32).range(0..=7))]
    pub priority: Option<i32>,

    /// Export the device's journal (`--journal-export=false` to turn it off).
    #[arg(
        long,
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    pub journal_export: Option<bool>,

    /// A systemd unit whose journal is exported (repeatable). On update, the given
    /// units replace all units.
    #[arg(long = "unit", value_name = "UNIT")]
    pub units: Vec<String>,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    #[arg(value_parser = devices::device_name, help = devices::name_help())]
    pub name: String,

    #[command(flatten)]
    pub fields: DeviceFields,

    #[command(flatten)]
    pub request: RequestIdArgs,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    #[arg(value_parser = devices::device_name, help = devices::name_help())]
    pub name: String,

    #[command(flatten)]
    pub read: ReadArgs,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[arg(value_parser = devices::device_parent, help = devices::parent_help())]
    pub parent: String,

    #[command(flatten)]
    pub page: ListPageArgs,
}

#[derive(Debug, Args)]
pub struct UpdateArgs {
    #[arg(value_parser = devices::device_name, help = devices::name_help())]
    pub name: String,

    #[command(flatten)]
    pub fields: DeviceFields,

    #[command(flatten)]
    pub options: UpdateOptions,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    #[arg(value_parser = devices::device_name, help = devices::name_help())]
    pub name: String,

    #[command(flatten)]
    pub write: WriteArgs,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("target").required(true).args(["name", "parent"])))]
pub struct WatchArgs {
    /// The one device to watch (a full name, as `devices get` takes it).
    #[arg(value_parser = devices::device_name, conflicts_with = "filter")]
    pub name: Option<String>,

    #[arg(long, value_parser = devices::device_parent, help = devices::parent_help())]
    pub parent: Option<String>,

    #[command(flatten)]
    pub options: WatchOptions,
}

/// The service whose deployment `upgrade` acts on by default.
pub const DEFAULT_SERVICE: &str = "devices.fleetlog.io";

/// The region used when neither `--region` nor `FLEETLOG_REGION` is set.
pub const DEFAULT_REGION: &str = "local";

#[derive(Debug, Subcommand)]
pub enum UpgradeCommand {
    /// Make a version available and begin upgrading the deployment to it.
    Begin(UpgradeBeginArgs),
    /// Show the deployment's version and upgrade state.
    Status(UpgradeStatusArgs),
    /// Follow a running upgrade (or rollback) until the deployment is READY.
    Watch(UpgradeWatchArgs),
    /// Return the deployment to an earlier version.
    Rollback(UpgradeRollbackArgs),
}

impl UpgradeCommand {
    /// The subcommand's name on the command line.
    pub fn name(&self) -> &'static str {
        match self {
            UpgradeCommand::Begin(_) => "begin",
            UpgradeCommand::Status(_) => "status",
            UpgradeCommand::Watch(_) => "watch",
            UpgradeCommand::Rollback(_) => "rollback",
        }
    }
}

/// Which deployment: `services/{service}/deployments/{region}`.
#[derive(Debug, Clone, Args)]
pub struct DeploymentArgs {
    /// The service ID, e.g. `devices.fleetlog.io`.
    #[arg(long, default_value = DEFAULT_SERVICE)]
    pub service: String,

    /// The region ID (the deployment's ID).
    #[arg(long, env = "FLEETLOG_REGION", default_value = DEFAULT_REGION)]
    pub region: String,
}

#[derive(Debug, Args)]
pub struct UpgradeBeginArgs {
    #[command(flatten)]
    pub deployment: DeploymentArgs,

    /// The API version to upgrade to, e.g. `v1`.
    #[arg(long, value_name = "VERSION")]
    pub to: String,

    /// Size of the shard ring the upgrade syncs and switches.
    #[arg(long, value_name = "N", default_value_t = 16, value_parser = clap::value_parser!(i64).range(1..))]
    pub shards: i64,

    /// Follow the upgrade until the deployment serves the new version.
    #[arg(long)]
    pub wait: bool,
}

#[derive(Debug, Args)]
pub struct UpgradeStatusArgs {
    #[command(flatten)]
    pub deployment: DeploymentArgs,
}

#[derive(Debug, Args)]
pub struct UpgradeWatchArgs {
    #[command(flatten)]
    pub deployment: DeploymentArgs,
}

#[derive(Debug, Args)]
pub struct UpgradeRollbackArgs {
    #[command(flatten)]
    pub deployment: DeploymentArgs,

    /// The API version to return to, e.g. `v1alpha2`.
    #[arg(long, value_name = "VERSION")]
    pub to: String,

    /// Follow the rollback until the deployment serves that version.
    #[arg(long)]
    pub wait: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("fleetctl").chain(args.iter().copied()))
    }

    #[test]
    fn subcommand_names_match_clap() {
        let name = "projects/p/regions/r/devices/d";
        for (args, expected) in [
            (vec!["devices", "create", name], "create"),
            (vec!["devices", "get", name], "get"),
            (vec!["devices", "list", "projects/p/regions/r"], "list"),
            (vec!["devices", "update", name], "update"),
            (vec!["devices", "delete", name], "delete"),
            (vec!["devices", "watch", name], "watch"),
        ] {
            let cli = parse(&args).expect("parses");
            assert_eq!(cli.command.path(), ["devices", expected]);
        }
    }

    #[test]
    fn malformed_name_is_a_usage_error_naming_argument_and_pattern() {
        for (args, pattern) in [
            (
                vec!["devices", "get", "projects/p/devices/d"],
                "projects/{project}/regions/{region}/devices/{device}",
            ),
            (
                vec!["devices", "delete", "projects/p/regions/r/devices/D"],
                "projects/{project}/regions/{region}/devices/{device}",
            ),
            (
                vec!["devices", "list", "projects/p/regions/r/devices"],
                "projects/{project}/regions/{region}",
            ),
            (
                vec!["devices", "watch", "--parent", "projects/p"],
                "projects/{project}/regions/{region}",
            ),
        ] {
            let err = parse(&args).expect_err("bad name");
            assert_eq!(err.exit_code(), 2, "{args:?}");
            let message = err.to_string();
            assert!(message.contains(pattern), "{message}");
            let argument = if args.contains(&"--parent") {
                "--parent"
            } else if args.contains(&"list") {
                "<PARENT>"
            } else {
                "<NAME>"
            };
            assert!(message.contains(argument), "{message}");
        }
    }

    #[test]
    fn name_help_shows_the_catalog_pattern() {
        let mut cli = Cli::command();
        let create = cli
            .find_subcommand_mut("devices")
            .and_then(|d| d.find_subcommand_mut("create"))
            .map(|c| c.render_help().to_string())
            .expect("devices create");
        assert!(
            create.contains("projects/{project}/regions/{region}/devices/{device}"),
            "{create}"
        );
    }

    #[test]
    fn journal_export_flag_forms() {
        let name = "projects/p/regions/r/devices/d";
        let get = |extra: &[&str]| -> Option<bool> {
            let mut args = vec!["devices", "update", name];
            args.extend_from_slice(extra);
            match parse(&args).expect("parses").command {
                Command::Devices(DevicesCommand::Update(u)) => u.fields.journal_export,
                other => panic!("unexpected {other:?}"),
            }
        };
        assert_eq!(get(&[]), None);
        assert_eq!(get(&["--journal-export"]), Some(true));
        assert_eq!(get(&["--journal-export=false"]), Some(false));
    }

    #[test]
    fn watch_needs_exactly_one_target() {
        assert!(parse(&["devices", "watch"]).is_err());
        assert!(
            parse(&[
                "devices",
                "watch",
                "projects/p/regions/r/devices/d",
                "--parent",
                "projects/p/regions/r"
            ])
            .is_err()
        );
        assert!(parse(&["devices", "watch", "--parent", "projects/p/regions/r"]).is_ok());
        assert!(
            parse(&[
                "devices",
                "watch",
                "projects/p/regions/r/devices/d",
                "--filter",
                "x"
            ])
            .is_err()
        );
    }

    #[test]
    fn upgrade_subcommand_names_match_clap() {
        for (args, expected) in [
            (vec!["upgrade", "begin", "--to", "v1"], "begin"),
            (vec!["upgrade", "status"], "status"),
            (vec!["upgrade", "watch"], "watch"),
            (vec!["upgrade", "rollback", "--to", "v1alpha2"], "rollback"),
        ] {
            let cli = parse(&args).expect("parses");
            assert_eq!(cli.command.path(), ["upgrade", expected]);
        }
    }

    #[test]
    fn upgrade_begin_flags() {
        assert!(parse(&["upgrade", "begin"]).is_err(), "--to is required");
        assert!(parse(&["upgrade", "begin", "--to", "v1", "--shards", "0"]).is_err());
        let cli = parse(&[
            "upgrade", "begin", "--to", "v1", "--region", "eu1", "--wait",
        ])
        .expect("parses");
        match cli.command {
            Command::Upgrade(UpgradeCommand::Begin(args)) => {
                assert_eq!(args.to, "v1");
                assert_eq!(args.shards, 16);
                assert!(args.wait);
                assert_eq!(args.deployment.service, DEFAULT_SERVICE);
                assert_eq!(args.deployment.region, "eu1");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn priority_is_range_checked() {
        let name = "projects/p/regions/r/devices/d";
        assert!(parse(&["devices", "create", name, "--priority", "8"]).is_err());
        assert!(parse(&["devices", "create", name, "--priority", "7"]).is_ok());
    }
}
