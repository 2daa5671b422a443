//! `fleetctl upgrade ...`: move a service's deployment in one region to another API
//! version with `fleetlog.meta.v1.DeploymentService`, and follow it while it syncs
//! and switches shards.

use std::time::Duration;

use fleetlog_proto::api::v1::ChangeType;
use fleetlog_proto::catalog::CATALOG;
use fleetlog_proto::meta::v1::deployment::Stage;
use fleetlog_proto::meta::v1::deployment_service_client::DeploymentServiceClient;
use fleetlog_proto::meta::v1::{
    BeginUpgradeRequest, Deployment, GetDeploymentRequest, RollbackUpgradeRequest,
    SetAvailableUpgradeRequest, WatchDeploymentRequest, WatchDeploymentResponse,
};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tonic::Streaming;

use crate::cli::{
    DEFAULT_REGION, DeploymentArgs, Output, UpgradeBeginArgs, UpgradeCommand, UpgradeRollbackArgs,
    UpgradeStatusArgs, UpgradeWatchArgs,
};
use crate::connect::{Auth, AuthedChannel, Connection};
use crate::error::{Error, stderr_line};
use crate::names;
use crate::output;

pub type Client = DeploymentServiceClient<AuthedChannel>;

/// The version of `fleetlog.meta.v1`, whose client this module uses.
const META_VERSION: &str = "v1";

/// The shard ring size when the deployment does not say.
const DEFAULT_SHARDS: u64 = 16;

/// Placeholder for an absent or empty value.
const NONE: &str = "-";

/// Connects to the DeploymentService at `conn`; a failure names the endpoint.
async fn connect(conn: &Connection) -> Result<Client, Error> {
    Ok(DeploymentServiceClient::new(conn.channel().await?))
}

/// Runs one `upgrade` subcommand.
pub async fn run(conn: &Connection, command: UpgradeCommand, out: Output) -> Result<(), Error> {
    // Reject a malformed key before any command runs.
    Auth::new(conn.key.as_deref())?;
    match command {
        UpgradeCommand::Begin(args) => begin(conn, args, out).await,
        UpgradeCommand::Status(args) => status(conn, args, out).await,
        UpgradeCommand::Watch(args) => watch(conn, args, out).await,
        UpgradeCommand::Rollback(args) => rollback(conn, args, out).await,
    }
}

// ----- arguments (pure) -----

/// `value` if it is usable as one segment of a resource name.
fn check_segment<'a>(flag: &str, value: &'a str) -> Result<&'a str, Error> {
    if value.is_empty() {
        return Err(Error::Usage(format!("{flag} must not be empty")));
    }
    if value.contains('/') || value.chars().any(char::is_whitespace) {
        return Err(Error::Usage(format!(
            "{flag} '{value}' must not contain '/' or whitespace"
        )));
    }
    Ok(value)
}

/// The deployment's name: the catalog's Deployment pattern with the service
/// and the region (a deployment's ID is its region). An empty region (e.g.
/// `FLEETLOG_REGION=`) means the default region.
pub fn deployment_name(args: &DeploymentArgs) -> Result<String, Error> {
    let service = check_segment("--service", args.service.trim())?;
    let region = match args.region.trim() {
        "" => DEFAULT_REGION,
        region => check_segment("--region", region)?,
    };
    let deployments = CATALOG
        .resource_by_plural(META_VERSION, "deployments")
        .ok_or_else(|| Error::Other(format!("the API has no {META_VERSION} deployments")))?;
    let name = names::fill(&deployments.pattern, &[service, region]);
    names::check(&deployments.pattern, &name)
        .map_err(|err| Error::Usage(format!("--service/--region: {err}")))?;
    Ok(name)
}

/// A version from `--to`, trimmed.
fn check_version(value: &str) -> Result<String, Error> {
    check_segment("--to", value.trim()).map(str::to_owned)
}

// ----- rendering (pure) -----

/// The deployment's upgrade stage; an absent upgrade state is READY.
fn stage(deployment: &Deployment) -> Result<Stage, i32> {
    match &deployment.upgrade_state {
        None => Ok(Stage::Ready),
        Some(state) => Stage::try_from(state.stage).map_err(|_| state.stage),
    }
}

fn stage_name(deployment: &Deployment) -> String {
    match stage(deployment) {
        Ok(stage) => stage.as_str_name().to_owned(),
        Err(unknown) => unknown.to_string(),
    }
}

fn or_none(s: &str) -> &str {
    if s.is_empty() { NONE } else { s }
}

/// Shard numbers as sorted, merged ranges: `[5, 0, 1, 2, 3]` is `0-3,5`; none is `-`.
pub fn format_shards(shards: &[i64]) -> String {
    let mut sorted = shards.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut ranges: Vec<(i64, i64)> = Vec::new();
    for shard in sorted {
        match ranges.last_mut() {
            Some((_, end)) if end.checked_add(1) == Some(shard) => *end = shard,
            _ => ranges.push((shard, shard)),
        }
    }
    if ranges.is_empty() {
        return NONE.to_owned();
    }
    ranges
        .iter()
        .map(|&(start, end)| {
            if start == end {
                start.to_string()
            } else {
                format!("{start}-{end}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// A duration in milliseconds, to the microsecond with trailing zeros dropped:
/// `12`, `12.5`, `0.042`.
pub fn format_millis(duration: &prost_types::Duration) -> String {
    let nanos = i128::from(duration.seconds) * 1_000_000_000 + i128::from(duration.nanos);
    // Round half away from zero to whole microseconds.
    let micros = (nanos.abs() + 500) / 1_000;
    let sign = if nanos < 0 && micros > 0 { "-" } else { "" };
    let (whole, frac) = (micros / 1_000, micros % 1_000);
    if frac == 0 {
        format!("{sign}{whole}")
    } else {
        let frac = format!("{frac:03}");
        format!("{sign}{whole}.{}", frac.trim_end_matches('0'))
    }
}

/// `N ms` for the last switch pause, or `-` when none was measured.
fn switch_pause(deployment: &Deployment) -> String {
    deployment
        .upgrade_state
        .as_ref()
        .and_then(|s| s.switch_pause.as_ref())
        .map_or_else(|| NONE.to_owned(), |d| format!("{} ms", format_millis(d)))
}

/// The deployment as `field.path   value` lines, one per field, for `status`.
pub fn deployment_summary(deployment: &Deployment) -> String {
    let state = deployment.upgrade_state.clone().unwrap_or_default();
    let shards = |list: &[i64]| {
        if list.is_empty() {
            NONE.to_owned()
        } else {
            format!("{} ({})", format_shards(list), list.len())
        }
    };
    let available = deployment
        .available_upgrade
        .as_ref()
        .filter(|a| !a.api_version.is_empty())
        .map_or_else(
            || NONE.to_owned(),
            |a| {
                let count = if a.total_shards_count > 0 {
                    a.total_shards_count.unsigned_abs()
                } else {
                    DEFAULT_SHARDS
                };
                format!("{} ({count} shards)", a.api_version)
            },
        );
    let revision = deployment
        .metadata
        .as_ref()
        .map_or_else(|| NONE.to_owned(), |m| m.revision.to_string());
    let rows: [(&str, String); 12] = [
        ("name", or_none(&deployment.name).to_owned()),
        ("region", or_none(&deployment.region).to_owned()),
        (
            "current_version",
            or_none(&deployment.current_version).to_owned(),
        ),
        ("available_upgrade", available),
        ("upgrade_state.stage", stage_name(deployment)),
        (
            "upgrade_state.target_version",
            or_none(&state.target_version).to_owned(),
        ),
        ("upgrade_state.ready_shards", shards(&state.ready_shards)),
        (
            "upgrade_state.pending_shards",
            shards(&state.pending_shards),
        ),
        ("upgrade_state.switch_pause", switch_pause(deployment)),
        (
            "upgrade_state.previous_version",
            or_none(&state.previous_version).to_owned(),
        ),
        (
            "keep_previous_version_in_sync",
            keep_previous_version_in_sync(deployment).to_string(),
        ),
        ("revision", revision),
    ];
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    rows.iter()
        .map(|(key, value)| format!("{key:<width$}   {value}\n"))
        .collect()
}

/// `keep_previous_version_in_sync`, which is true unless set to false.
fn keep_previous_version_in_sync(deployment: &Deployment) -> bool {
    deployment.keep_previous_version_in_sync.unwrap_or(true)
}

/// The deployment with defaults the API pins spelled out, for JSON output.
fn resolved(deployment: &Deployment) -> Deployment {
    let mut deployment = deployment.clone();
    deployment.keep_previous_version_in_sync = Some(keep_previous_version_in_sync(&deployment));
    deployment
}

fn print_deployment(deployment: &Deployment, out: Output) -> Result<(), Error> {
    match out {
        Output::Table => output::write_stdout(&deployment_summary(deployment))?,
        out => output::print_document(&resolved(deployment), out)?,
    }
    Ok(())
}

/// What the progress bar shows for a deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgressView {
    pub position: u64,
    pub length: u64,
    pub message: String,
}

/// Length: the ready plus pending shards (else the available upgrade's ring size,
/// else 16); position: the ready shards; message: the stage and target.
pub fn progress_view(deployment: &Deployment) -> ProgressView {
    let state = deployment.upgrade_state.clone().unwrap_or_default();
    let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
    let ready = count(state.ready_shards.len());
    let known = ready.saturating_add(count(state.pending_shards.len()));
    let ring = deployment
        .available_upgrade
        .as_ref()
        .map_or(0, |a| a.total_shards_count.max(0).unsigned_abs());
    let length = match (known, ring) {
        (0, 0) => DEFAULT_SHARDS,
        (0, ring) => ring,
        (known, _) => known,
    };
    let message = match stage(deployment) {
        Ok(Stage::Ready) => format!("READY at {}", or_none(&deployment.current_version)),
        _ => format!(
            "{} to {}",
            stage_name(deployment),
            or_none(&state.target_version)
        ),
    };
    ProgressView {
        position: ready.min(length),
        length,
        message,
    }
}

/// The line printed when the deployment is READY again.
pub fn finished_line(deployment: &Deployment, rolled_back: bool) -> String {
    let verb = if rolled_back {
        "rolled back"
    } else {
        "upgraded"
    };
    let pause = deployment
        .upgrade_state
        .as_ref()
        .and_then(|s| s.switch_pause.as_ref())
        .map_or_else(
            || "not measured".to_owned(),
            |d| format!("{} ms", format_millis(d)),
        );
    format!(
        "{verb} to {}; switch pause {pause}",
        or_none(&deployment.current_version)
    )
}

// ----- following an upgrade (pure state machine) -----

/// Why the watch follows the deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Goal {
    /// `upgrade begin --wait`: until it serves the version begun.
    Upgrade,
    /// `upgrade rollback --wait`: until it serves the version rolled back to.
    Rollback,
    /// `upgrade watch`: until the running upgrade, if any, ends.
    Follow,
}

/// How a watch ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// `Follow` only: READY with nothing going when the watch started.
    Idle,
    /// READY after an upgrade or rollback.
    Finished,
    /// `Follow` only: the initial state had no deployment.
    Missing,
}

/// Decides from the deployment's successive states when a watch is done.
#[derive(Debug)]
pub struct Tracker {
    goal: Goal,
    /// The version the deployment should end up serving: given for `Upgrade` and
    /// `Rollback`, learned from the first non-READY state for `Follow`.
    target: Option<String>,
    /// A non-READY state was seen.
    seen_in_progress: bool,
    latest: Option<Deployment>,
}

impl Tracker {
    pub fn new(goal: Goal, target: Option<String>) -> Self {
        Tracker {
            goal,
            target,
            seen_in_progress: false,
            latest: None,
        }
    }

    /// The version the deployment is expected to end at, if known.
    pub fn target(&self) -> Option<&str> {
        self.target.as_deref()
    }

    /// The last state observed.
    pub fn latest(&self) -> Option<&Deployment> {
        self.latest.as_ref()
    }

    /// Takes the next state; `Some` when the watch is done.
    pub fn observe(&mut self, deployment: Deployment) -> Option<Outcome> {
        let ready = matches!(stage(&deployment), Ok(Stage::Ready));
        let current = deployment.current_version.clone();
        if !ready {
            self.seen_in_progress = true;
            if self.target.is_none() {
                self.target = deployment
                    .upgrade_state
                    .as_ref()
                    .map(|s| s.target_version.clone())
                    .filter(|t| !t.is_empty());
            }
        }
        self.latest = Some(deployment);
        if !ready {
            return None;
        }
        // READY: done once it serves the target, or once the upgrade that was
        // seen running has ended either way. A READY state at another version
        // before that may be the read model not yet showing the action taken.
        if self.target.as_deref() == Some(current.as_str()) || self.seen_in_progress {
            return Some(Outcome::Finished);
        }
        None
    }

    /// The initial state is complete; `Some` when that alone ends the watch.
    pub fn initial_state_complete(&self) -> Option<Outcome> {
        if self.goal != Goal::Follow || self.seen_in_progress {
            return None;
        }
        match &self.latest {
            None => Some(Outcome::Missing),
            Some(deployment) if matches!(stage(deployment), Ok(Stage::Ready)) => {
                Some(Outcome::Idle)
            }
            Some(_) => None,
        }
    }
}

// ----- commands -----

/// `status` with advice added to a FAILED_PRECONDITION.
fn state_hint(status: tonic::Status, deployment: &DeploymentArgs) -> Error {
    let hint = (status.code() == tonic::Code::FailedPrecondition).then(|| {
        format!(
            "`fleetctl upgrade status --service {} --region {}` shows the deployment's state",
            deployment.service, deployment.region
        )
    });
    Error::Status { status, hint }
}

async fn begin(conn: &Connection, args: UpgradeBeginArgs, out: Output) -> Result<(), Error> {
    let name = deployment_name(&args.deployment)?;
    let to = check_version(&args.to)?;
    let mut client = connect(conn).await?;
    client
        .set_available_upgrade(SetAvailableUpgradeRequest {
            name: name.clone(),
            target_api_version: to.clone(),
            total_shards_count: args.shards,
            request_id: String::new(),
        })
        .await
        .map_err(|status| state_hint(status, &args.deployment))?;
    let deployment = client
        .begin_upgrade(BeginUpgradeRequest {
            name: name.clone(),
            request_id: String::new(),
        })
        .await
        .map_err(|status| state_hint(status, &args.deployment))?
        .into_inner();
    started(
        client,
        &name,
        &deployment,
        args.wait,
        Tracker::new(Goal::Upgrade, Some(to)),
        out,
    )
    .await
}

async fn status(conn: &Connection, args: UpgradeStatusArgs, out: Output) -> Result<(), Error> {
    let name = deployment_name(&args.deployment)?;
    let mut client = connect(conn).await?;
    let deployment = client
        .get_deployment(GetDeploymentRequest {
            name,
            field_mask: None,
            min_revision: 0,
        })
        .await?
        .into_inner();
    print_deployment(&deployment, out)
}

async fn watch(conn: &Connection, args: UpgradeWatchArgs, out: Output) -> Result<(), Error> {
    let name = deployment_name(&args.deployment)?;
    let client = connect(conn).await?;
    follow(client, &name, Tracker::new(Goal::Follow, None), out).await
}

async fn rollback(conn: &Connection, args: UpgradeRollbackArgs, out: Output) -> Result<(), Error> {
    let name = deployment_name(&args.deployment)?;
    let to = check_version(&args.to)?;
    let mut client = connect(conn).await?;
    let deployment = client
        .rollback_upgrade(RollbackUpgradeRequest {
            name: name.clone(),
            to_version: to.clone(),
            request_id: String::new(),
        })
        .await
        .map_err(|status| state_hint(status, &args.deployment))?
        .into_inner();
    started(
        client,
        &name,
        &deployment,
        args.wait,
        Tracker::new(Goal::Rollback, Some(to)),
        out,
    )
    .await
}

/// After an upgrade or rollback began: prints the deployment and, with
/// `--wait`, follows it to the end. With `--wait` and JSON only the final
/// state is printed: one document.
async fn started(
    client: Client,
    name: &str,
    deployment: &Deployment,
    wait: bool,
    tracker: Tracker,
    out: Output,
) -> Result<(), Error> {
    if !wait || out == Output::Table {
        print_deployment(deployment, out)?;
    }
    if !wait {
        return Ok(());
    }
    follow(client, name, tracker, out).await
}

/// Completes on Ctrl-C; never, if the signal handler cannot be installed.
async fn ctrl_c() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// A progress bar on stderr (hidden when stderr is not a terminal); without one,
/// each new stage is logged as a line instead.
struct Progress {
    bar: ProgressBar,
    last_message: Option<String>,
}

impl Progress {
    fn new() -> Self {
        let bar = ProgressBar::with_draw_target(Some(DEFAULT_SHARDS), ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] [{bar:32}] {pos}/{len} shards ready  {msg}",
        )
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        if !bar.is_hidden() {
            bar.enable_steady_tick(Duration::from_millis(200));
        }
        Progress {
            bar,
            last_message: None,
        }
    }

    fn show(&mut self, deployment: &Deployment) {
        let view = progress_view(deployment);
        self.bar.set_length(view.length);
        self.bar.set_position(view.position);
        if self.last_message.as_deref() != Some(view.message.as_str()) {
            if self.bar.is_hidden() {
                if matches!(stage(deployment), Ok(Stage::Ready)) {
                    stderr_line(&view.message);
                } else {
                    stderr_line(&format!(
                        "{}: {}/{} shards ready",
                        view.message, view.position, view.length
                    ));
                }
            }
            self.bar.set_message(view.message.clone());
            self.last_message = Some(view.message);
        }
    }
}

/// Watches the deployment until `tracker` says it is done, then prints the result.
async fn follow(
    mut client: Client,
    name: &str,
    mut tracker: Tracker,
    out: Output,
) -> Result<(), Error> {
    let mut progress = Progress::new();
    let bar = progress.bar.clone();
    let result = tokio::select! {
        result = async {
            let request = WatchDeploymentRequest {
                name: name.to_owned(),
                field_mask: None,
                resume_revision: 0,
            };
            let stream = client.watch_deployment(request).await?.into_inner();
            watch_until_done(stream, &mut tracker, &mut progress, name).await
        } => result,
        () = ctrl_c() => {
            bar.finish_and_clear();
            stderr_line("stopped watching; the upgrade goes on in fleetd");
            return Ok(());
        }
    };
    bar.finish_and_clear();
    let outcome = result?;
    let Some(deployment) = tracker.latest() else {
        return Err(Error::Status {
            status: tonic::Status::not_found(format!("{name} not found")),
            hint: None,
        });
    };
    match outcome {
        Outcome::Missing => Err(Error::Status {
            status: tonic::Status::not_found(format!("{name} not found")),
            hint: None,
        }),
        Outcome::Idle => {
            if out == Output::Table {
                stderr_line("no upgrade in progress");
            }
            print_deployment(deployment, out)
        }
        Outcome::Finished => {
            let current = deployment.current_version.as_str();
            let missed = tracker.target().filter(|t| *t != current);
            match out {
                Output::Table => {
                    let rolled_back = tracker.goal == Goal::Rollback || missed.is_some();
                    output::write_line(&finished_line(deployment, rolled_back))?;
                }
                out => output::print_document(&resolved(deployment), out)?,
            }
            match (tracker.goal, missed) {
                // An explicit target that was not reached: someone else changed course.
                (Goal::Upgrade | Goal::Rollback, Some(target)) => Err(Error::Other(format!(
                    "{name} is READY at {}, not at {target}",
                    or_none(current)
                ))),
                _ => Ok(()),
            }
        }
    }
}

async fn watch_until_done(
    mut stream: Streaming<WatchDeploymentResponse>,
    tracker: &mut Tracker,
    progress: &mut Progress,
    name: &str,
) -> Result<Outcome, Error> {
    loop {
        let message = match stream.message().await {
            Ok(Some(message)) => message,
            Ok(None) => {
                return Err(Error::Other(format!(
                    "the watch of {name} ended before the deployment was READY"
                )));
            }
            Err(status) => {
                // The upgrade goes on in fleetd whatever happened to the watch.
                let transient = matches!(
                    status.code(),
                    tonic::Code::Unavailable
                        | tonic::Code::Unknown
                        | tonic::Code::Cancelled
                        | tonic::Code::DeadlineExceeded
                );
                let hint =
                    transient.then(|| "`fleetctl upgrade watch` continues following it".to_owned());
                return Err(Error::Status { status, hint });
            }
        };
        for change in message.changes {
            if change.r#type == ChangeType::Removed as i32 {
                return Err(Error::Other(format!("{name} was deleted")));
            }
            let Some(deployment) = change.deployment else {
                continue;
            };
            progress.show(&deployment);
            if let Some(outcome) = tracker.observe(deployment) {
                return Ok(outcome);
            }
        }
        if message.is_current
            && let Some(outcome) = tracker.initial_state_complete()
        {
            return Ok(outcome);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetlog_proto::meta::v1::deployment::{AvailableUpgrade, UpgradeState};

    fn deployment(
        current: &str,
        stage: Stage,
        target: &str,
        ready: &[i64],
        pending: &[i64],
    ) -> Deployment {
        Deployment {
            name: "services/devices.fleetlog.io/deployments/eu1".into(),
            current_version: current.into(),
            upgrade_state: Some(UpgradeState {
                target_version: target.into(),
                ready_shards: ready.to_vec(),
                pending_shards: pending.to_vec(),
                stage: stage as i32,
                switch_pause: Some(prost_types::Duration {
                    seconds: 0,
                    nanos: 12_500_000,
                }),
                previous_version: String::new(),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn shards_collapse_into_ranges() {
        assert_eq!(format_shards(&[]), "-");
        assert_eq!(format_shards(&[7]), "7");
        assert_eq!(format_shards(&[5, 0, 1, 2, 3, 3]), "0-3,5");
        assert_eq!(format_shards(&[15, 9, 10, 0, 11]), "0,9-11,15");
        assert_eq!(
            format_shards(&[i64::MAX, i64::MAX - 1]),
            format!("{}-{}", i64::MAX - 1, i64::MAX)
        );
    }

    #[test]
    fn millis_are_exact_to_the_microsecond() {
        let d = |seconds, nanos| prost_types::Duration { seconds, nanos };
        assert_eq!(format_millis(&d(0, 0)), "0");
        assert_eq!(format_millis(&d(0, 12_000_000)), "12");
        assert_eq!(format_millis(&d(0, 12_500_000)), "12.5");
        assert_eq!(format_millis(&d(0, 42_000)), "0.042");
        assert_eq!(format_millis(&d(0, 400)), "0");
        assert_eq!(format_millis(&d(2, 1_000_000)), "2001");
        assert_eq!(format_millis(&d(0, -1_500_000)), "-1.5");
    }

    #[test]
    fn names_come_from_service_and_region() {
        let args = |service: &str, region: &str| DeploymentArgs {
            service: service.into(),
            region: region.into(),
        };
        assert_eq!(
            deployment_name(&args("devices.fleetlog.io", "eu1")).expect("valid"),
            "services/devices.fleetlog.io/deployments/eu1"
        );
        assert_eq!(
            deployment_name(&args("devices.fleetlog.io", " ")).expect("valid"),
            "services/devices.fleetlog.io/deployments/local"
        );
        assert!(matches!(
            deployment_name(&args("", "eu1")),
            Err(Error::Usage(_))
        ));
        assert!(matches!(
            deployment_name(&args("a/b", "eu1")),
            Err(Error::Usage(_))
        ));
        assert!(matches!(
            deployment_name(&args("a", "eu 1")),
            Err(Error::Usage(_))
        ));
        // fleetd's ID rules, from the catalog's pattern.
        let Err(Error::Usage(message)) = deployment_name(&args("devices.fleetlog.io", "EU1"))
        else {
            panic!("an uppercase region")
        };
        assert!(
            message.contains("services/{service}/deployments/{deployment}"),
            "{message}"
        );
    }

    #[test]
    fn progress_follows_the_shards() {
        let d = deployment(
            "v1alpha2",
            Stage::InitialSyncing,
            "v1",
            &[0, 1, 2],
            &[3, 4, 5, 6, 7],
        );
        assert_eq!(
            progress_view(&d),
            ProgressView {
                position: 3,
                length: 8,
                message: "INITIAL_SYNCING to v1".into()
            }
        );
        let mut d = deployment("v1alpha2", Stage::Ready, "", &[], &[]);
        assert_eq!(progress_view(&d).length, 16);
        d.available_upgrade = Some(AvailableUpgrade {
            api_version: "v1".into(),
            total_shards_count: 4,
        });
        let view = progress_view(&d);
        assert_eq!((view.position, view.length), (0, 4));
        assert_eq!(view.message, "READY at v1alpha2");
    }

    #[test]
    fn summary_spells_out_the_upgrade_state() {
        let mut d = deployment("v1alpha2", Stage::Switching, "v1", &[0, 1, 2, 3], &[4]);
        d.keep_previous_version_in_sync = None;
        d.available_upgrade = Some(AvailableUpgrade {
            api_version: "v1".into(),
            total_shards_count: 0,
        });
        let expected = "\
name                             services/devices.fleetlog.io/deployments/eu1
region                           -
current_version                  v1alpha2
available_upgrade                v1 (16 shards)
upgrade_state.stage              SWITCHING
upgrade_state.target_version     v1
upgrade_state.ready_shards       0-3 (4)
upgrade_state.pending_shards     4 (1)
upgrade_state.switch_pause       12.5 ms
upgrade_state.previous_version   -
keep_previous_version_in_sync    true
revision                         -
";
        assert_eq!(deployment_summary(&d), expected);
        d.keep_previous_version_in_sync = Some(false);
        assert!(deployment_summary(&d).contains("keep_previous_version_in_sync    false\n"));
    }

    #[test]
    fn json_spells_out_keep_previous_version_in_sync() {
        let d = deployment("v1", Stage::Ready, "v1", &[], &[]);
        let json = output::to_json(&resolved(&d), false).expect("serializes");
        let value: serde_json::Value = serde_json::from_str(&json).expect("valid json");
        assert_eq!(value["keepPreviousVersionInSync"], true);
        assert_eq!(value["currentVersion"], "v1");
        assert_eq!(value["upgradeState"]["switchPause"], "0.012500s");
    }

    #[test]
    fn finished_line_names_version_and_pause() {
        let d = deployment("v1", Stage::Ready, "v1", &[], &[]);
        assert_eq!(
            finished_line(&d, false),
            "upgraded to v1; switch pause 12.5 ms"
        );
        let mut d = deployment("v1alpha2", Stage::Ready, "v1", &[], &[]);
        d.upgrade_state = None;
        assert_eq!(
            finished_line(&d, true),
            "rolled back to v1alpha2; switch pause not measured"
        );
    }

    #[test]
    fn upgrade_waits_for_the_target_version() {
        let mut t = Tracker::new(Goal::Upgrade, Some("v1".into()));
        // The read model may not show the begun upgrade yet.
        assert_eq!(
            t.observe(deployment("v1alpha2", Stage::Ready, "", &[], &[])),
            None
        );
        assert_eq!(t.initial_state_complete(), None);
        assert_eq!(
            t.observe(deployment(
                "v1alpha2",
                Stage::InitialSyncing,
                "v1",
                &[0],
                &[1]
            )),
            None
        );
        assert_eq!(
            t.observe(deployment("v1alpha2", Stage::Switching, "v1", &[0, 1], &[])),
            None
        );
        assert_eq!(
            t.observe(deployment("v1", Stage::Ready, "v1", &[0, 1], &[])),
            Some(Outcome::Finished)
        );
    }

    #[test]
    fn follow_learns_the_target_or_ends_when_idle() {
        let mut t = Tracker::new(Goal::Follow, None);
        assert_eq!(
            t.observe(deployment("v1", Stage::Ready, "v1", &[], &[])),
            None
        );
        assert_eq!(t.initial_state_complete(), Some(Outcome::Idle));

        let t = Tracker::new(Goal::Follow, None);
        assert_eq!(t.initial_state_complete(), Some(Outcome::Missing));

        let mut t = Tracker::new(Goal::Follow, None);
        assert_eq!(
            t.observe(deployment(
                "v1alpha2",
                Stage::InitialSyncing,
                "v1",
                &[],
                &[0]
            )),
            None
        );
        assert_eq!(t.initial_state_complete(), None);
        assert_eq!(t.target(), Some("v1"));
        // READY after having been in progress ends the watch, whatever it serves.
        assert_eq!(
            t.observe(deployment("v1alpha2", Stage::Ready, "v1", &[], &[])),
            Some(Outcome::Finished)
        );
    }
}
