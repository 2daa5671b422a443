//! Watch streams over real JetStream consumers: initial state then live
//! changes, resume from a revision with no gap and no duplicate, filters,
//! consumers freed when the client goes away, and more watchers of one
//! collection than the server allows consumers on a stream.

use crate::common;

use std::time::Duration;

use common::{PARENT, Sandbox, create, device, device_name, revision};
use fleetlog_proto::api::v1::ChangeType;
use fleetlog_proto::devices::v1::{
    DeleteDeviceRequest, UpdateDeviceRequest, WatchDeviceRequest, WatchDevicesRequest,
    WatchDevicesResponse,
};
use prost_types::FieldMask;
use tonic::Streaming;

async fn next(
    stream: &mut Streaming<WatchDevicesResponse>,
) -> anyhow::Result<WatchDevicesResponse> {
    match tokio::time::timeout(Duration::from_secs(10), stream.message()).await?? {
        Some(message) => Ok(message),
        None => anyhow::bail!("the watch ended"),
    }
}

#[tokio::test]
async fn initial_state_then_live_changes_with_filter() -> anyhow::Result<()> {
    let sandbox = Sandbox::start().await?;
    let mut client = sandbox.client().await?;
    for i in 0..5 {
        let site = if i % 2 == 0 { "berlin" } else { "paris" };
        create(&mut client, &format!("d{i}"), device(&[("site", site)], 1)).await?;
    }
    client
        .delete_device(DeleteDeviceRequest {
            name: device_name("d4"),
            ..Default::default()
        })
        .await?;

    let mut stream = client
        .watch_devices(WatchDevicesRequest {
            parent: PARENT.into(),
            filter: r#"labels.site = "berlin""#.into(),
            field_mask: None,
            resume_revision: 0,
        })
        .await?
        .into_inner();
    // d0 and d2 match; d4 was deleted; d1, d3 are in paris.
    let mut initial = Vec::new();
    loop {
        let message = next(&mut stream).await?;
        initial.extend(message.changes.iter().map(|c| (c.r#type(), c.name.clone())));
        if message.is_current {
            break;
        }
    }
    initial.sort();
    assert_eq!(
        initial,
        vec![
            (ChangeType::Added, device_name("d0")),
            (ChangeType::Added, device_name("d2"))
        ]
    );

    // Live: a paris device moves to berlin (ADDED), a berlin one leaves (REMOVED).
    let mut moved = device(&[("site", "berlin")], 1);
    moved.name = device_name("d1");
    client
        .update_device(UpdateDeviceRequest {
            device: Some(moved),
            update_mask: Some(FieldMask {
                paths: vec!["metadata.labels".into()],
            }),
            ..Default::default()
        })
        .await?;
    let message = next(&mut stream).await?;
    assert_eq!(message.changes.len(), 1);
    assert_eq!(message.changes[0].r#type(), ChangeType::Added);
    assert_eq!(message.changes[0].name, device_name("d1"));

    let mut left = device(&[("site", "paris")], 1);
    left.name = device_name("d0");
    client
        .update_device(UpdateDeviceRequest {
            device: Some(left),
            update_mask: Some(FieldMask {
                paths: vec!["metadata.labels".into()],
            }),
            ..Default::default()
        })
        .await?;
    let message = next(&mut stream).await?;
    assert_eq!(message.changes[0].r#type(), ChangeType::Removed);
    assert_eq!(message.changes[0].name, device_name("d0"));
    assert!(message.changes[0].device.is_none());

    // A change of a matching device is MODIFIED.
    let mut renamed = device(&[], 5);
    renamed.name = device_name("d2");
    let updated = client
        .update_device(UpdateDeviceRequest {
            device: Some(renamed),
            update_mask: Some(FieldMask {
                paths: vec!["spec.logging_config.priority".into()],
            }),
            ..Default::default()
        })
        .await?
        .into_inner();
    let message = next(&mut stream).await?;
    assert_eq!(message.changes[0].r#type(), ChangeType::Modified);
    assert_eq!(message.revision, revision(&updated));
    sandbox.stop().await
}

#[tokio::test]
async fn resumed_watch_sees_exactly_the_remaining_changes() -> anyhow::Result<()> {
    let sandbox = Sandbox::start().await?;
    let mut client = sandbox.client().await?;
    let mut revisions = Vec::new();
    for i in 0..20 {
        let created = create(&mut client, &format!("d{i}"), device(&[], i % 8)).await?;
        revisions.push(revision(&created));
    }
    for i in 0..10 {
        let mut patch = device(&[], 7);
        patch.name = device_name(&format!("d{i}"));
        let updated = client
            .update_device(UpdateDeviceRequest {
                device: Some(patch),
                update_mask: Some(FieldMask {
                    paths: vec!["spec.logging_config.priority".into()],
                }),
                ..Default::default()
            })
            .await?
            .into_inner();
        revisions.push(revision(&updated));
    }
    let middle = revisions[revisions.len() / 2];
    let expected: Vec<i64> = revisions.iter().copied().filter(|r| *r > middle).collect();

    let mut stream = client
        .watch_devices(WatchDevicesRequest {
            parent: PARENT.into(),
            resume_revision: middle,
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut seen = Vec::new();
    while seen.len() < expected.len() {
        let message = next(&mut stream).await?;
        assert!(
            !message.is_current,
            "a resumed watch sends no initial state"
        );
        seen.extend(message.changes.iter().map(|c| c.revision));
    }
    assert_eq!(seen, expected, "no gap, no duplicate, in order");

    // And the stream keeps going live.
    let created = create(&mut client, "late", device(&[], 1)).await?;
    let message = next(&mut stream).await?;
    assert_eq!(
        message
            .changes
            .iter()
            .map(|c| c.revision)
            .collect::<Vec<_>>(),
        vec![revision(&created)]
    );
    assert_eq!(message.changes[0].r#type(), ChangeType::Added);
    sandbox.stop().await
}

#[tokio::test]
async fn watching_one_device_and_freeing_consumers() -> anyhow::Result<()> {
    let sandbox = Sandbox::start().await?;
    let mut client = sandbox.client().await?;
    let log = sandbox.log().await?;
    let created = create(&mut client, "solo", device(&[], 1)).await?;
    create(&mut client, "other", device(&[], 1)).await?;
    // The projector's own consumer.
    let baseline = log.consumer_count().await?;

    let mut stream = client
        .watch_device(WatchDeviceRequest {
            name: device_name("solo"),
            field_mask: Some(FieldMask {
                paths: vec!["display_name".into()],
            }),
            resume_revision: 0,
        })
        .await?
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await??
        .expect("a message");
    assert!(first.is_current);
    assert_eq!(first.changes.len(), 1);
    assert_eq!(first.changes[0].revision, revision(&created));
    let shown = first.changes[0].device.clone().unwrap_or_default();
    assert_eq!(shown.display_name, "test device");
    assert!(shown.spec.is_none(), "the field mask applies");
    let settled = fleetlog_tests::eventually(Duration::from_secs(10), || {
        let log = log.clone();
        async move { log.consumer_count().await.is_ok_and(|n| n == baseline + 1) }
    })
    .await;
    assert!(
        settled,
        "once caught up, a watch keeps only its subject's live feed: {} consumers",
        log.consumer_count().await?
    );

    client
        .delete_device(DeleteDeviceRequest {
            name: device_name("other"),
            ..Default::default()
        })
        .await?;
    client
        .delete_device(DeleteDeviceRequest {
            name: device_name("solo"),
            ..Default::default()
        })
        .await?;
    let removed = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await??
        .expect("a message");
    assert_eq!(removed.changes.len(), 1, "only the watched device");
    assert_eq!(removed.changes[0].r#type(), ChangeType::Removed);

    // An empty collection completes its initial state at once.
    let mut empty = client
        .watch_devices(WatchDevicesRequest {
            parent: "projects/none/regions/eu1".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let message = next(&mut empty).await?;
    assert!(message.is_current && message.changes.is_empty());

    drop(stream);
    drop(empty);
    let freed = fleetlog_tests::eventually(Duration::from_secs(10), || {
        let log = log.clone();
        async move {
            log.consumer_count()
                .await
                .map(|n| n == baseline)
                .unwrap_or(false)
        }
    })
    .await;
    assert!(
        freed,
        "the server deletes the consumers of departed clients"
    );
    sandbox.stop().await
}

/// nats-server 2.15 allows 1,000 consumers per stream by default: watchers
/// of one collection share one live consumer, so 1,050 of them all get every
/// change, and the stream keeps a single consumer for them.
#[tokio::test]
async fn more_watchers_than_the_server_allows_consumers() -> anyhow::Result<()> {
    const WATCHERS: usize = 1050;
    const PER_CONNECTION: usize = 100;
    let sandbox = Sandbox::start().await?;
    let mut client = sandbox.client().await?;
    create(&mut client, "before", device(&[], 1)).await?;
    let log = sandbox.log().await?;
    let baseline = log.consumer_count().await?;

    let mut streams = Vec::with_capacity(WATCHERS);
    let mut watcher = client.clone();
    for i in 0..WATCHERS {
        if i % PER_CONNECTION == 0 {
            watcher = sandbox.client().await?;
        }
        let mut stream = watcher
            .watch_devices(WatchDevicesRequest {
                parent: PARENT.into(),
                ..Default::default()
            })
            .await?
            .into_inner();
        let first = next(&mut stream).await?;
        assert!(first.is_current, "watcher {i} gets the initial state");
        assert_eq!(first.changes.len(), 1, "watcher {i} sees the one device");
        streams.push(stream);
    }
    let created = create(&mut client, "after", device(&[], 1)).await?;
    for (i, stream) in streams.iter_mut().enumerate() {
        let message = next(stream).await?;
        assert_eq!(
            message
                .changes
                .iter()
                .map(|c| c.revision)
                .collect::<Vec<_>>(),
            vec![revision(&created)],
            "watcher {i} gets the change once"
        );
    }
    let consumers = log.consumer_count().await?;
    assert_eq!(consumers, baseline + 1, "one live consumer serves them all");
    sandbox.stop().await
}
