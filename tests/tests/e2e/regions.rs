//! Regions (issue 16): each region a JetStream domain, linked by leafnodes
//! (`fleetlog_tests::NatsRegions`); another region's log is read here from
//! a read copy, a mirror that keeps the owner's revisions.

use std::time::{Duration, Instant};

use fleetlog_events::envelope::{ChangeKind, CommandId, ResourceChange};
use fleetlog_events::log::LogOptions;
use fleetlog_events::{EventLog, Id, LogError, Revision, StartAt, StorageKey, StreamId};
use fleetlog_model::devices::names::DeviceName;
use fleetlog_tests::NatsRegions;
use futures::StreamExt;

fn devices_of(region: &str) -> anyhow::Result<StreamId> {
    Ok(StreamId::new(Id::parse("devices")?, Id::parse(region)?))
}

fn device_key(region: &str, device: &str) -> anyhow::Result<StorageKey> {
    Ok(
        StorageKey::parse::<DeviceName>(&format!("projects/p0/regions/{region}/devices/{device}"))?
            .0,
    )
}

fn created(key: &StorageKey) -> (ResourceChange, CommandId) {
    let command = CommandId::generate();
    let change = ResourceChange {
        kind: ChangeKind::Created as i32,
        storage_key: key.to_string(),
        command_id: command.to_string(),
        actor: "test:regions".into(),
        ..Default::default()
    };
    (change, command)
}

/// Waits until `copy` holds `revision`.
async fn copied(copy: &EventLog, revision: Revision, within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let state = copy
            .copy_state()
            .await?
            .ok_or_else(|| anyhow::anyhow!("not a read copy"))?;
        if state.last >= revision {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the copy holds {:?} of {revision:?} after {within:?}: {state:?}",
            state.last
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_read_copy_keeps_the_owners_revisions_refuses_writes_and_says_how_stale_it_is()
-> anyhow::Result<()> {
    let mut regions = NatsRegions::start(&["eu1", "us1"]).await?;
    let owner = EventLog::open(regions.connect("eu1").await?, devices_of("eu1")?).await?;
    // A gap in eu1's own history first: us1's events must not shift it.
    let theirs = EventLog::open(regions.connect("us1").await?, devices_of("us1")?).await?;
    for n in 0..3 {
        let key = device_key("us1", &format!("u{n}"))?;
        let (change, command) = created(&key);
        theirs
            .append(&key, &change, Revision::NONE, &command)
            .await?;
    }
    let mut written = Vec::new();
    for n in 0..5 {
        let key = device_key("eu1", &format!("d{n}"))?;
        let (change, command) = created(&key);
        let appended = owner
            .append(&key, &change, Revision::NONE, &command)
            .await?;
        written.push((key, appended));
    }
    let last = owner.last_revision().await?;
    assert_eq!(last, Revision::from_wire(5));

    let copy = EventLog::open_copy(
        regions.connect("us1").await?,
        devices_of("eu1")?,
        LogOptions::default(),
    )
    .await?;
    assert!(copy.is_copy() && !owner.is_copy());
    copied(&copy, last, Duration::from_secs(20)).await?;
    for (key, appended) in &written {
        let read = copy
            .last(key)
            .await?
            .ok_or_else(|| anyhow::anyhow!("{key} is not in the copy"))?;
        let fleetlog_events::Appended::Written(revision) = appended else {
            anyhow::bail!("{key} was not written");
        };
        assert_eq!(read.revision, *revision, "{key}: the owner's revision");
    }
    // A projector follows a copy as it follows its own log.
    let mut followed = copy.follow(StartAt::After(Revision::NONE)).await?.events;
    for expected in 1..=5 {
        let event = tokio::time::timeout(Duration::from_secs(5), followed.next())
            .await?
            .ok_or_else(|| anyhow::anyhow!("the copy's consumer ended"))??;
        assert_eq!(event.event.revision, Revision::from_wire(expected));
    }

    // Writing to a copy would cross the leafnode into the owner's stream,
    // past its command checks: refused, and nothing reaches the owner.
    let key = device_key("eu1", "from-us1")?;
    let (change, command) = created(&key);
    let refused = copy.append(&key, &change, Revision::NONE, &command).await;
    assert!(
        matches!(refused, Err(LogError::ReadCopy { ref owner, .. }) if owner == "eu1"),
        "{refused:?}"
    );
    assert_eq!(owner.last_revision().await?, last);
    // Opening it again finds it; a region's own stream is not a copy.
    EventLog::open_copy(
        regions.connect("us1").await?,
        devices_of("eu1")?,
        LogOptions::default(),
    )
    .await?;
    let wrong = EventLog::open_copy(
        regions.connect("us1").await?,
        devices_of("us1")?,
        LogOptions::default(),
    )
    .await;
    assert!(
        matches!(wrong, Err(LogError::Unsupported { .. })),
        "us1's own stream opened as a copy: {:?}",
        wrong.map(|_| ())
    );

    // Cut off, the copy keeps serving what it has and ages; healed, it
    // catches up without being reopened.
    regions.cut("us1").await?;
    let key = device_key("eu1", "during-the-cut")?;
    let (change, command) = created(&key);
    owner
        .append(&key, &change, Revision::NONE, &command)
        .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stale = copy
        .copy_state()
        .await?
        .ok_or_else(|| anyhow::anyhow!("not a read copy"))?;
    assert_eq!(stale.last, last, "nothing crosses the cut");
    assert!(
        stale.since_active >= Some(Duration::from_secs(2)),
        "the copy says it has not heard from eu1: {stale:?}"
    );
    assert!(copy.last(&written[0].0).await?.is_some(), "still readable");
    regions.heal("us1").await?;
    copied(&copy, Revision::from_wire(6), Duration::from_secs(30)).await?;
    let fresh = copy
        .copy_state()
        .await?
        .ok_or_else(|| anyhow::anyhow!("not a read copy"))?;
    assert!(
        fresh.since_active < Some(Duration::from_secs(2)),
        "{fresh:?}"
    );
    Ok(())
}
