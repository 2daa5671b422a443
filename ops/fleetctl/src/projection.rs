//! `fleetctl projection rebuild|verify`: replay a service's log into a
//! fresh projection directory, or compare a live projection with a fresh
//! replay. Talks to NATS and RocksDB directly (no fleetd needed).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Args, Subcommand};
use fleetlog_events::{EventLog, Id, StreamId};
use fleetlog_projections::store::Store;
use fleetlog_projections::{Converter, Projection, ReplayOptions, projector};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::error::Error;

#[derive(Debug, Subcommand)]
pub enum ProjectionCommand {
    /// Replay the log into a new projection directory, with progress.
    Rebuild(RebuildArgs),
    /// Compare a projection directory with a fresh replay of the log up to
    /// its checkpoint; exits 1 on any difference.
    Verify(VerifyArgs),
}

impl ProjectionCommand {
    pub fn name(&self) -> &'static str {
        match self {
            ProjectionCommand::Rebuild(_) => "rebuild",
            ProjectionCommand::Verify(_) => "verify",
        }
    }
}

#[derive(Debug, Args)]
pub struct Source {
    /// NATS server holding the service's stream.
    #[arg(
        long,
        env = "FLEETLOG_NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub nats_url: String,
    /// Service token of the stream: devices or meta.
    #[arg(long, default_value = "devices")]
    pub service: String,
    #[arg(long, env = "FLEETLOG_REGION", default_value = "local")]
    pub region: String,
    /// API version of the projection.
    #[arg(long = "api-version", default_value = "v1")]
    pub api_version: String,
}

#[derive(Debug, Args)]
pub struct RebuildArgs {
    #[command(flatten)]
    pub source: Source,
    /// Directory of the new projection (must not exist or be empty).
    #[arg(long)]
    pub dir: PathBuf,
    /// Read only the last event of every resource (LastPerSubject).
    #[arg(long)]
    pub compacted: bool,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub source: Source,
    /// The live projection's directory, e.g. data/projections/devices-eu1-v1.
    #[arg(long)]
    pub dir: PathBuf,
}

pub async fn run(command: ProjectionCommand) -> Result<(), Error> {
    match command {
        ProjectionCommand::Rebuild(args) => rebuild(args).await,
        ProjectionCommand::Verify(args) => verify(args).await,
    }
}

fn converter(source: &Source) -> Result<Arc<dyn Converter>, Error> {
    match source.service.as_str() {
        "devices" if fleetlog_model::devices::VERSIONS.contains(&source.api_version.as_str()) => {
            Ok(Arc::new(fleetlog_model::devices::converter(
                &source.api_version,
            )))
        }
        "meta" if source.api_version == fleetlog_model::meta::V1 => {
            Ok(Arc::new(fleetlog_model::meta::converter()))
        }
        other => Err(Error::Usage(format!(
            "no {} projection of service {other:?}; devices has {}, meta has v1",
            source.api_version,
            fleetlog_model::devices::VERSIONS.join(", ")
        ))),
    }
}

async fn open_log(source: &Source) -> Result<EventLog, Error> {
    let stream = StreamId::new(
        Id::parse(&source.service).map_err(|e| Error::Usage(format!("--service: {e}")))?,
        Id::parse(&source.region).map_err(|e| Error::Usage(format!("--region: {e}")))?,
    );
    let client = async_nats::connect(&source.nats_url)
        .await
        .map_err(|e| Error::Other(format!("connecting to NATS at {}: {e}", source.nats_url)))?;
    EventLog::open(client, stream)
        .await
        .map_err(|e| Error::Other(format!("opening the stream: {e}")))
}

fn progress_bar() -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} replay [{bar:40}] {pos}/{len} events applied ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar
}

/// Replays into `dir` until `until` (or the stream's end); returns the
/// projection and the events per second.
async fn replay_into(
    log: &EventLog,
    source: &Source,
    dir: &Path,
    options: ReplayOptions,
) -> Result<(Arc<Projection>, f64), Error> {
    let projection = Projection::open(dir, &source.api_version)
        .map_err(|e| Error::Other(format!("opening {}: {e}", dir.display())))?;
    let converter = converter(source)?;
    let bar = progress_bar();
    let started = std::time::Instant::now();
    projector::replay(
        log,
        &projection,
        converter.clone(),
        options,
        |applied, target| {
            bar.set_length(target);
            bar.set_position(applied);
        },
    )
    .await
    .map_err(|e| Error::Other(format!("replaying: {e}")))?;
    bar.finish_and_clear();
    let rate = projection.applied().get() as f64 / started.elapsed().as_secs_f64().max(1e-9);
    Ok((projection, rate))
}

async fn rebuild(args: RebuildArgs) -> Result<(), Error> {
    if args.dir.exists()
        && std::fs::read_dir(&args.dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        return Err(Error::Usage(format!(
            "--dir {} is not empty; a rebuild writes a fresh projection",
            args.dir.display()
        )));
    }
    let log = open_log(&args.source).await?;
    let options = ReplayOptions {
        compacted: args.compacted,
        until: None,
    };
    let (projection, rate) = replay_into(&log, &args.source, &args.dir, options).await?;
    let checkpoint = projection.checkpoint();
    println!(
        "rebuilt {} ({} {}) at revision {}: {} events applied, {rate:.0} revisions/s",
        args.dir.display(),
        args.source.service,
        args.source.api_version,
        checkpoint.revision,
        checkpoint.events_applied
    );
    Ok(())
}

async fn verify(args: VerifyArgs) -> Result<(), Error> {
    let live = Store::open_read_only(&args.dir)
        .map_err(|e| Error::Other(format!("opening the live projection: {e}")))?;
    let checkpoint = live
        .checkpoint()
        .map_err(|e| Error::Other(format!("reading the checkpoint: {e}")))?;
    let log = open_log(&args.source).await?;
    let scratch = tempfile::tempdir().map_err(Error::Io)?;
    let options = ReplayOptions {
        compacted: false,
        until: Some(checkpoint.revision),
    };
    let (fresh, _) = replay_into(&log, &args.source, scratch.path(), options).await?;
    let live_records = live
        .dump()
        .map_err(|e| Error::Other(format!("reading the live projection: {e}")))?;
    let fresh_records = fresh
        .store()
        .dump()
        .map_err(|e| Error::Other(format!("reading the replay: {e}")))?;
    let differences = diff(&live_records, &fresh_records);
    if differences.is_empty() {
        println!(
            "{} matches a fresh replay: {} resources at revision {}",
            args.dir.display(),
            live_records.len(),
            checkpoint.revision
        );
        return Ok(());
    }
    for line in differences.iter().take(20) {
        eprintln!("{line}");
    }
    Err(Error::Other(format!(
        "{} differs from a fresh replay at revision {} in {} resources",
        args.dir.display(),
        checkpoint.revision,
        differences.len()
    )))
}

type Dump = Vec<(String, String, fleetlog_projections::store::Record)>;

/// One line per resource that is missing on a side or differs.
fn diff(live: &Dump, fresh: &Dump) -> Vec<String> {
    use std::collections::BTreeMap;
    let index = |d: &Dump| -> BTreeMap<(String, String), fleetlog_projections::store::Record> {
        d.iter()
            .map(|(t, n, r)| ((t.clone(), n.clone()), r.clone()))
            .collect()
    };
    let (live, fresh) = (index(live), index(fresh));
    let mut out = Vec::new();
    for (key, record) in &live {
        match fresh.get(key) {
            None => out.push(format!("only in the live projection: {} {}", key.0, key.1)),
            Some(other) if other != record => out.push(format!(
                "differs: {} {} (live revision {}, replay revision {})",
                key.0, key.1, record.revision, other.revision
            )),
            Some(_) => {}
        }
    }
    for key in fresh.keys().filter(|k| !live.contains_key(*k)) {
        out.push(format!(
            "missing from the live projection: {} {}",
            key.0, key.1
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetlog_projections::store::Record;

    fn rec(revision: u64, bytes: &[u8]) -> Record {
        Record {
            revision,
            bytes: bytes.to_vec(),
        }
    }

    #[test]
    fn diff_names_every_difference() {
        let live = vec![
            ("T".into(), "a".into(), rec(1, b"x")),
            ("T".into(), "b".into(), rec(2, b"y")),
        ];
        let fresh = vec![
            ("T".into(), "b".into(), rec(3, b"y")),
            ("T".into(), "c".into(), rec(4, b"z")),
        ];
        let lines = diff(&live, &fresh);
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(diff(&live, &live).is_empty());
    }
}
