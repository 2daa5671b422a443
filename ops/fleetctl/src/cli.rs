//! The command-line interface: clap types only.

use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};

use crate::names::{DeviceName, Label, RegionName};

/// The endpoint used when neither `--endpoint` nor `FLEETLOG_ENDPOINT` is set.
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:7400";

/// The Fleetlog command-line client.
#[derive(Debug, Parser)]
#[command(name = "fleetctl", version, about, propagate_version = true)]
pub struct Cli {
    /// gRPC endpoint of a fleetd API server.
    #[arg(
        long,
        global = true,
        env = "FLEETLOG_ENDPOINT",
        default_value = DEFAULT_ENDPOINT,
        help_heading = "Global Options"
    )]
    pub endpoint: String,

    /// API key, sent as `authorization: Bearer <key>` on every call.
    #[arg(
        long,
        global = true,
        env = "FLEETLOG_KEY",
        hide_env_values = true,
        help_heading = "Global Options"
    )]
    pub key: Option<String>,

    /// Output format.
    #[arg(
        long,
        short = 'o',
        global = true,
        value_enum,
        default_value_t = Output::Table,
        help_heading = "Global Options"
    )]
    pub output: Output,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns for people.
    Table,
    /// The proto3 JSON mapping (lowerCamelCase field names).
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Manage devices (fleetlog.devices.v1.DeviceService).
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
    pub fn path(&self) -> [&'static str; 2] {
        match self {
            Command::Devices(devices) => ["devices", devices.name()],
            Command::Upgrade(upgrade) => ["upgrade", upgrade.name()],
            Command::Projection(projection) => ["projection", projection.name()],
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum DevicesCommand {
    /// Create a device.
    Create(CreateArgs),
    /// Get one device.
    Get(GetArgs),
    /// List the devices of a project and region.
    List(ListArgs),
    /// Update fields of a device.
    Update(UpdateArgs),
    /// Delete a device.
    Delete(DeleteArgs),
    /// Watch one device, or all devices under a parent, and print each change.
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
    /// Full name: projects/{project}/regions/{region}/devices/{device}.
    pub name: DeviceName,

    #[command(flatten)]
    pub fields: DeviceFields,

    /// Idempotency key: a retry with the same ID returns the first outcome.
    #[arg(long)]
    pub request_id: Option<String>,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    /// Full name: projects/{project}/regions/{region}/devices/{device}.
    pub name: DeviceName,

    /// Field paths to return, comma-separated (e.g. `name,metadata.labels`).
    #[arg(long, value_name = "PATHS", value_delimiter = ',')]
    pub mask: Vec<String>,

    /// Wait until the read model has reached this revision.
    #[arg(long, value_name = "N")]
    pub min_revision: Option<i64>,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Parent: projects/{project}/regions/{region}.
    pub parent: RegionName,

    /// AIP-160 filter, e.g. `labels.site = "berlin"`.
    #[arg(long)]
    pub filter: Option<String>,

    /// Comma-separated field paths, each optionally followed by `desc`.
    #[arg(long)]
    pub order_by: Option<String>,

    /// Maximum number of devices per page (server default 100, max 1000).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i32).range(1..))]
    pub page_size: Option<i32>,

    /// Continue from this page token (as printed for a previous page).
    #[arg(long, value_name = "TOKEN", conflicts_with = "all")]
    pub page_token: Option<String>,

    /// Field paths to return, comma-separated.
    #[arg(long, value_name = "PATHS", value_delimiter = ',')]
    pub mask: Vec<String>,

    /// Wait until the read model has reached this revision.
    #[arg(long, value_name = "N")]
    pub min_revision: Option<i64>,

    /// Follow next_page_token until the last page.
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// Full name: projects/{project}/regions/{region}/devices/{device}.
    pub name: DeviceName,

    #[command(flatten)]
    pub fields: DeviceFields,

    /// Field paths to update, comma-separated; by default, the paths of the field
    /// flags given.
    #[arg(long, value_name = "PATHS", value_delimiter = ',')]
    pub update_mask: Option<Vec<String>>,

    /// Fail with ABORTED unless the device is at this revision.
    #[arg(long, value_name = "N")]
    pub expected_revision: Option<i64>,

    /// Create the device if it does not exist.
    #[arg(long)]
    pub allow_missing: bool,

    /// Idempotency key: a retry with the same ID returns the first outcome.
    #[arg(long)]
    pub request_id: Option<String>,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// Full name: projects/{project}/regions/{region}/devices/{device}.
    pub name: DeviceName,

    /// Fail with ABORTED unless the device is at this revision.
    #[arg(long, value_name = "N")]
    pub expected_revision: Option<i64>,

    /// Succeed even if the device does not exist.
    #[arg(long)]
    pub allow_missing: bool,

    /// Idempotency key: a retry with the same ID returns the first outcome.
    #[arg(long)]
    pub request_id: Option<String>,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("target").required(true).args(["name", "parent"])))]
pub struct WatchArgs {
    /// Full name of the one device to watch.
    pub name: Option<DeviceName>,

    /// Watch all devices under this parent: projects/{project}/regions/{region}.
    #[arg(long)]
    pub parent: Option<RegionName>,

    /// AIP-160 filter (with --parent only).
    #[arg(long, conflicts_with = "name")]
    pub filter: Option<String>,

    /// Field paths to return, comma-separated.
    #[arg(long, value_name = "PATHS", value_delimiter = ',')]
    pub mask: Vec<String>,

    /// Only send changes after this revision (default: the current state first).
    #[arg(long, value_name = "N")]
    pub resume_revision: Option<i64>,
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
    fn malformed_name_is_a_usage_error() {
        let err = parse(&["devices", "get", "projects/p/devices/d"]).expect_err("bad name");
        assert_eq!(err.exit_code(), 2);
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
