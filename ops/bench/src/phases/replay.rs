//! Replay: events/s into a new projection, full history and compacted
//! (LastPerSubject), beside the raw consumer read rate of the same stream
//! and the raw RocksDB batch write rate, whichever is lower.

use std::time::Instant;

use fleetlog_projections::{Projection, ReplayOptions, projector};
use indicatif::{ProgressBar, ProgressStyle};

use crate::cluster::Cluster;
use crate::raw::consumer_read_rate;
use crate::report::{Goal, Row};

const PHASE: &str = "replay";

pub async fn run(
    cluster: &Cluster,
    raw_rocks_write_per_s: f64,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let log = cluster.devices_log().await?;
    let last = log.last_revision().await?;
    eprintln!("bench: replaying {} events", last.get());
    let (read, raw_consumer) = consumer_read_rate(cluster, last.get()).await?;
    rows.push(Row::new(
        PHASE,
        format!("raw JetStream ordered consumer, {read} events"),
        raw_consumer,
        "/s",
    ));
    rows.push(Row::new(
        PHASE,
        "raw RocksDB batch write (1,024 records a batch)",
        raw_rocks_write_per_s,
        "/s",
    ));
    let (lower, lower_name) = if raw_consumer <= raw_rocks_write_per_s {
        (raw_consumer, "raw consumer (the lower)")
    } else {
        (raw_rocks_write_per_s, "raw RocksDB batch write (the lower)")
    };
    let converter: std::sync::Arc<dyn fleetlog_projections::Converter> =
        std::sync::Arc::new(fleetlog_model::devices::converter("v1"));
    for (what, compacted) in [
        ("full history", false),
        ("compacted (LastPerSubject)", true),
    ] {
        let dir = tempfile::tempdir()?;
        let projection = Projection::open(dir.path(), "v1")?;
        let bar = ProgressBar::new(last.get()).with_style(ProgressStyle::with_template(
            "replay {bar:40} {pos}/{len} ({per_sec}, {eta})",
        )?);
        let started = Instant::now();
        let options = ReplayOptions {
            compacted,
            until: None,
        };
        projector::replay(
            &log,
            &projection,
            converter.clone(),
            options,
            |applied, _| bar.set_position(applied),
        )
        .await?;
        let seconds = started.elapsed().as_secs_f64();
        bar.finish_and_clear();
        let events = projection.checkpoint().events_applied;
        rows.push(
            Row::new(
                PHASE,
                format!("replay into a new v1 projection, {what}, {events} events"),
                events as f64 / seconds,
                "/s",
            )
            .beside(lower_name, lower)
            .goal(Goal::RatioAtLeast(0.5)),
        );
    }
    Ok(())
}
