//! Devices v1 through gRPC against a real nats-server and RocksDB: every
//! standard method and status code, optimistic concurrency, idempotent
//! retries, filter/order/pagination.

use crate::common;

use std::collections::HashSet;

use common::{PARENT, Sandbox, create, device, device_name, revision};
use fleetlog_proto::devices::v1::{
    BatchGetDevicesRequest, CreateDeviceRequest, DeleteDeviceRequest, GetDeviceRequest,
    ListDevicesRequest, UpdateDeviceRequest,
};
use prost_types::FieldMask;
use tonic::Code;

fn mask(paths: &[&str]) -> Option<FieldMask> {
    Some(FieldMask {
        paths: paths.iter().map(|p| p.to_string()).collect(),
    })
}

fn get(name: &str, min_revision: i64) -> GetDeviceRequest {
    GetDeviceRequest {
        name: name.into(),
        field_mask: None,
        min_revision,
    }
}

fn assert_code<T: std::fmt::Debug>(result: Result<T, tonic::Status>, code: Code, mentions: &str) {
    match result {
        Ok(value) => panic!("expected {code:?}, got {value:?}"),
        Err(status) => {
            assert_eq!(status.code(), code, "{status:?}");
            assert!(
                status.message().contains(mentions),
                "{:?} should mention {mentions:?}",
                status.message()
            );
        }
    }
}

#[tokio::test]
async fn standard_methods_and_status_codes() -> anyhow::Result<()> {
    let sandbox = Sandbox::start_with(|c| c.read_wait_ms = 300).await?;
    let mut client = sandbox.client().await?;
    let name = device_name("d0");

    let created = create(&mut client, "d0", device(&[("env", "prod")], 3)).await?;
    assert_eq!(created.name, name);
    let metadata = created.metadata.clone().unwrap_or_default();
    assert!(metadata.revision > 0);
    assert_eq!(metadata.generation, 1);
    assert!(metadata.create_time.is_some());
    assert!(metadata.shards.contains_key("byNameMod16"));

    // Read-your-writes: the create's revision as min_revision.
    let fetched = client
        .get_device(get(&name, revision(&created)))
        .await?
        .into_inner();
    assert_eq!(fetched, created);

    assert_code(
        create(&mut client, "d0", device(&[], 1)).await,
        Code::AlreadyExists,
        "d0",
    );

    // Update through a mask: only the priority changes.
    let mut patch = device(&[("env", "dev")], 6);
    patch.name = name.clone();
    let updated = client
        .update_device(UpdateDeviceRequest {
            device: Some(patch.clone()),
            update_mask: mask(&["spec.logging_config.priority"]),
            expected_revision: revision(&created),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert!(revision(&updated) > revision(&created));
    assert_eq!(
        updated
            .spec
            .as_ref()
            .and_then(|s| s.logging_config.as_ref())
            .map(|l| l.priority),
        Some(6)
    );
    assert_eq!(
        updated
            .metadata
            .as_ref()
            .and_then(|m| m.labels.get("env"))
            .map(String::as_str),
        Some("prod")
    );
    assert_eq!(updated.metadata.as_ref().map(|m| m.generation), Some(2));

    // A stale expected revision loses.
    assert_code(
        client
            .update_device(UpdateDeviceRequest {
                device: Some(patch.clone()),
                update_mask: mask(&["spec.logging_config.priority"]),
                expected_revision: revision(&created),
                ..Default::default()
            })
            .await,
        Code::Aborted,
        "revision",
    );

    // Field masks on reads.
    let masked = client
        .get_device(GetDeviceRequest {
            name: name.clone(),
            field_mask: mask(&["display_name"]),
            min_revision: revision(&updated),
        })
        .await?
        .into_inner();
    assert_eq!(masked.display_name, "test device");
    assert!(masked.spec.is_none());

    // BatchGet reports the missing.
    let batch = client
        .batch_get_devices(BatchGetDevicesRequest {
            names: vec![name.clone(), device_name("nope")],
            field_mask: None,
            min_revision: revision(&updated),
        })
        .await?
        .into_inner();
    assert_eq!(batch.devices.len(), 1);
    assert_eq!(batch.missing, vec![device_name("nope")]);

    // Validation names the field.
    assert_code(
        create(&mut client, "Bad", device(&[], 1)).await,
        Code::InvalidArgument,
        "device_id",
    );
    assert_code(
        create(&mut client, "d1", device(&[], 8)).await,
        Code::InvalidArgument,
        "device.spec.logging_config.priority",
    );
    assert_code(
        client.get_device(get("projects/p0/devices/d0", 0)).await,
        Code::InvalidArgument,
        "name",
    );
    assert_code(
        client
            .create_device(CreateDeviceRequest {
                parent: "projects/p0".into(),
                device_id: "x".into(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "parent",
    );
    assert_code(
        client
            .get_device(GetDeviceRequest {
                name: name.clone(),
                field_mask: mask(&["spec.nope"]),
                min_revision: 0,
            })
            .await,
        Code::InvalidArgument,
        "field_mask",
    );
    assert_code(
        client
            .list_devices(ListDevicesRequest {
                parent: PARENT.into(),
                filter: "labels.env = ".into(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "filter",
    );
    assert_code(
        client
            .list_devices(ListDevicesRequest {
                parent: PARENT.into(),
                order_by: "spec.bogus".into(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "order_by",
    );
    assert_code(
        client
            .list_devices(ListDevicesRequest {
                parent: PARENT.into(),
                page_token: "garbage".into(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "page_token",
    );
    assert_code(
        client
            .update_device(UpdateDeviceRequest {
                device: Some(patch.clone()),
                update_mask: mask(&["spec.nope"]),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "update_mask",
    );

    // min_revision beyond the log: bounded wait, then DEADLINE_EXCEEDED.
    assert_code(
        client
            .get_device(get(&name, revision(&updated) + 1000))
            .await,
        Code::DeadlineExceeded,
        "revision",
    );

    // Update of a missing device, with and without allow_missing.
    let mut ghost = device(&[], 2);
    ghost.name = device_name("ghost");
    assert_code(
        client
            .update_device(UpdateDeviceRequest {
                device: Some(ghost.clone()),
                ..Default::default()
            })
            .await,
        Code::NotFound,
        "ghost",
    );
    let upserted = client
        .update_device(UpdateDeviceRequest {
            device: Some(ghost),
            allow_missing: true,
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(upserted.metadata.as_ref().map(|m| m.generation), Some(1));

    // Delete: stale revision, success, then NOT_FOUND, allow_missing.
    assert_code(
        client
            .delete_device(DeleteDeviceRequest {
                name: name.clone(),
                expected_revision: revision(&created),
                ..Default::default()
            })
            .await,
        Code::Aborted,
        "revision",
    );
    client
        .delete_device(DeleteDeviceRequest {
            name: name.clone(),
            expected_revision: revision(&updated),
            ..Default::default()
        })
        .await?;
    assert_code(
        client
            .delete_device(DeleteDeviceRequest {
                name: name.clone(),
                ..Default::default()
            })
            .await,
        Code::NotFound,
        "d0",
    );
    client
        .delete_device(DeleteDeviceRequest {
            name: name.clone(),
            allow_missing: true,
            ..Default::default()
        })
        .await?;
    let last = sandbox.log().await?.last_revision().await?.get() as i64;
    assert_code(
        client.get_device(get(&name, last)).await,
        Code::NotFound,
        "d0",
    );

    // A deleted name can be created again.
    let again = create(&mut client, "d0", device(&[], 1)).await?;
    assert_eq!(again.metadata.as_ref().map(|m| m.generation), Some(1));

    sandbox.stop().await
}

#[tokio::test]
async fn concurrent_updaters_never_lose_an_update() -> anyhow::Result<()> {
    const WRITERS: usize = 8;
    const INCREMENTS: usize = 5;
    let sandbox = Sandbox::start().await?;
    let mut client = sandbox.client().await?;
    let name = device_name("counter");
    let created = create(&mut client, "counter", device(&[("n", "0")], 1)).await?;

    let mut writers = Vec::new();
    for _ in 0..WRITERS {
        let mut client = sandbox.client().await?;
        let name = name.clone();
        // Each writer reads at least its own last write.
        let mut seen = revision(&created);
        writers.push(tokio::spawn(async move {
            let mut aborted = 0usize;
            let mut done = 0usize;
            while done < INCREMENTS {
                let current = client
                    .get_device(GetDeviceRequest {
                        name: name.clone(),
                        field_mask: None,
                        min_revision: seen,
                    })
                    .await?
                    .into_inner();
                // A read may lag the log: then the expected revision is stale
                // and the write is ABORTED, never applied on old state.
                let n: usize = current
                    .metadata
                    .as_ref()
                    .and_then(|m| m.labels.get("n"))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                let mut next = current.clone();
                next.metadata
                    .get_or_insert_with(Default::default)
                    .labels
                    .insert("n".into(), (n + 1).to_string());
                match client
                    .update_device(UpdateDeviceRequest {
                        device: Some(next),
                        update_mask: mask(&["metadata.labels"]),
                        expected_revision: revision(&current),
                        ..Default::default()
                    })
                    .await
                {
                    Ok(written) => {
                        seen = revision(written.get_ref());
                        done += 1;
                    }
                    Err(status) if status.code() == Code::Aborted => aborted += 1,
                    Err(status) => return Err(anyhow::anyhow!("unexpected {status:?}")),
                }
            }
            anyhow::Ok(aborted)
        }));
    }
    let mut aborted = 0;
    for writer in writers {
        aborted += writer.await??;
    }
    let last = sandbox.log().await?.last_revision().await?.get() as i64;
    let final_state = client.get_device(get(&name, last)).await?.into_inner();
    let n: usize = final_state
        .metadata
        .as_ref()
        .and_then(|m| m.labels.get("n"))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert_eq!(
        n,
        WRITERS * INCREMENTS,
        "every acknowledged increment is in the final state"
    );
    assert_eq!(
        revision(&final_state),
        last,
        "one event per successful update, nothing else"
    );
    assert_eq!(last as usize, 1 + WRITERS * INCREMENTS);
    println!(
        "8 writers: {} increments, {aborted} aborted attempts",
        WRITERS * INCREMENTS
    );
    sandbox.stop().await
}

/// A client that writes and then reads through the same fleetd sees its
/// write without passing `min_revision` (a delete's answer has no revision
/// to pass). Each round reads straight after the acknowledgement, so a
/// query that raced the projector would see the previous state.
#[tokio::test]
async fn a_read_sees_every_write_the_server_acknowledged_before_it() -> anyhow::Result<()> {
    const ROUNDS: usize = 60;
    let sandbox = Sandbox::start().await?;
    let mut client = sandbox.client().await?;
    for round in 0..ROUNDS {
        let id = format!("rw{round}");
        let name = device_name(&id);
        let created = create(&mut client, &id, device(&[], 1)).await?;
        let mut changed = created.clone();
        changed.display_name = format!("round {round}");
        client
            .update_device(UpdateDeviceRequest {
                device: Some(changed),
                update_mask: mask(&["display_name"]),
                ..Default::default()
            })
            .await?;
        let read = client.get_device(get(&name, 0)).await?.into_inner();
        assert_eq!(read.display_name, format!("round {round}"), "update unseen");
        client
            .delete_device(DeleteDeviceRequest {
                name: name.clone(),
                ..Default::default()
            })
            .await?;
        assert_code(client.get_device(get(&name, 0)).await, Code::NotFound, &id);
        let listed = client
            .list_devices(ListDevicesRequest {
                parent: PARENT.into(),
                ..Default::default()
            })
            .await?
            .into_inner();
        assert!(
            listed.devices.iter().all(|d| d.name != name),
            "round {round}: a deleted device is still listed"
        );
    }
    sandbox.stop().await
}

#[tokio::test]
async fn retried_commands_write_one_event() -> anyhow::Result<()> {
    let sandbox = Sandbox::start().await?;
    let mut client = sandbox.client().await?;
    let log = sandbox.log().await?;
    let request = CreateDeviceRequest {
        parent: PARENT.into(),
        device_id: "r0".into(),
        device: Some(device(&[], 2)),
        request_id: "create-r0-once".into(),
    };
    let first = client.create_device(request.clone()).await?.into_inner();
    let second = client.create_device(request.clone()).await?.into_inner();
    assert_eq!(revision(&first), revision(&second));
    assert_eq!(
        log.last_revision().await?.get(),
        1,
        "the retry wrote nothing"
    );

    let mut patch = device(&[("k", "v")], 4);
    patch.name = device_name("r0");
    let update = UpdateDeviceRequest {
        device: Some(patch),
        update_mask: mask(&["metadata.labels"]),
        request_id: "update-r0-once".into(),
        ..Default::default()
    };
    let first = client.update_device(update.clone()).await?.into_inner();
    let second = client.update_device(update.clone()).await?.into_inner();
    assert_eq!(revision(&first), revision(&second));
    assert_eq!(
        log.last_revision().await?.get(),
        2,
        "the retry wrote nothing"
    );

    // The same request id on another resource is another command.
    let other = CreateDeviceRequest {
        device_id: "r1".into(),
        ..request
    };
    let created = client.create_device(other).await?.into_inner();
    assert_eq!(revision(&created), 3);

    let delete = DeleteDeviceRequest {
        name: device_name("r1"),
        request_id: "delete-r1".into(),
        ..Default::default()
    };
    client.delete_device(delete.clone()).await?;
    client.delete_device(delete).await?;
    assert_eq!(
        log.last_revision().await?.get(),
        4,
        "the delete retry wrote nothing"
    );

    assert_code(
        client
            .create_device(CreateDeviceRequest {
                parent: PARENT.into(),
                device_id: "r2".into(),
                device: None,
                request_id: "has space".into(),
            })
            .await,
        Code::InvalidArgument,
        "request_id",
    );
    sandbox.stop().await
}

#[tokio::test]
async fn filter_order_and_pages_over_a_thousand_devices() -> anyhow::Result<()> {
    const DEVICES: usize = 1000;
    let sandbox = Sandbox::start().await?;
    let client = sandbox.client().await?;
    let mut tasks = Vec::new();
    for worker in 0..16 {
        let mut client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut last = 0;
            for i in (worker..DEVICES).step_by(16) {
                let group = (i % 3).to_string();
                let created = create(
                    &mut client,
                    &format!("d{i:04}"),
                    device(&[("group", &group)], (i % 8) as i32),
                )
                .await?;
                last = last.max(revision(&created));
            }
            anyhow::Ok(last)
        }));
    }
    let mut last = 0;
    for task in tasks {
        last = last.max(task.await??);
    }

    // Expected: group 1 with priority >= 3, by priority desc then name.
    let mut expected: Vec<(i32, String)> = (0..DEVICES)
        .filter(|i| i % 3 == 1 && i % 8 >= 3)
        .map(|i| ((i % 8) as i32, device_name(&format!("d{i:04}"))))
        .collect();
    expected.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));

    let mut client = client;
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = client
            .list_devices(ListDevicesRequest {
                parent: PARENT.into(),
                page_size: 37,
                page_token: token.clone(),
                filter: r#"labels.group = "1" AND spec.logging_config.priority >= 3"#.into(),
                order_by: "spec.logging_config.priority desc".into(),
                field_mask: None,
                min_revision: last,
            })
            .await?
            .into_inner();
        pages += 1;
        assert!(page.devices.len() <= 37);
        assert!(page.revision >= last);
        for d in &page.devices {
            let priority = d
                .spec
                .as_ref()
                .and_then(|s| s.logging_config.as_ref())
                .map_or(-1, |l| l.priority);
            seen.push((priority, d.name.clone()));
        }
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, expected, "every match exactly once, in order");
    assert_eq!(pages, expected.len().div_ceil(37));

    // Name order, no filter: all 1000 across pages, each once.
    let mut names = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_devices(ListDevicesRequest {
                parent: PARENT.into(),
                page_size: 250,
                page_token: token.clone(),
                ..Default::default()
            })
            .await?
            .into_inner();
        names.extend(page.devices.into_iter().map(|d| d.name));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(names.len(), DEVICES);
    assert_eq!(names.iter().collect::<HashSet<_>>().len(), DEVICES);
    assert!(names.windows(2).all(|w| w[0] < w[1]));

    // A token is bound to its query and cannot be edited.
    let first = client
        .list_devices(ListDevicesRequest {
            parent: PARENT.into(),
            page_size: 10,
            filter: "labels.group = \"2\"".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_code(
        client
            .list_devices(ListDevicesRequest {
                parent: PARENT.into(),
                page_size: 10,
                page_token: first.next_page_token.clone(),
                filter: "labels.group = \"1\"".into(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "page_token",
    );
    let mut edited = first.next_page_token.into_bytes();
    let middle = edited.len() / 2;
    edited[middle] = if edited[middle] == b'A' { b'B' } else { b'A' };
    assert_code(
        client
            .list_devices(ListDevicesRequest {
                parent: PARENT.into(),
                page_size: 10,
                page_token: String::from_utf8(edited)?,
                filter: "labels.group = \"2\"".into(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "page_token",
    );
    sandbox.stop().await
}

#[tokio::test]
async fn nats_outage_is_unavailable_and_nothing_is_lost() -> anyhow::Result<()> {
    // Commands ride out a NATS outage this long before UNAVAILABLE.
    let mut sandbox = Sandbox::start_with(|c| c.nats_retry_ms = 1_000).await?;
    let mut client = sandbox.client().await?;
    let before = create(&mut client, "before", device(&[], 1)).await?;

    // The projection holds `before` before the log goes away.
    client
        .get_device(get(&device_name("before"), revision(&before)))
        .await?;
    sandbox.nats.kill9();
    let during = create(&mut client, "during", device(&[], 1)).await;
    assert_code(during, Code::Unavailable, "unavailable");
    // Queries keep working from the projection while the log is away.
    let read = client
        .get_device(get(&device_name("before"), revision(&before)))
        .await?;
    assert_eq!(read.into_inner().name, device_name("before"));

    sandbox.nats.restart()?;
    // The client library reconnects by itself; the failed create wrote nothing.
    let mut after = Err(tonic::Status::unavailable("not tried"));
    for _ in 0..100 {
        after = create(&mut client, "during", device(&[], 1)).await;
        if after.is_ok() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let after = after?;
    assert_eq!(
        revision(&after),
        revision(&before) + 1,
        "the failed attempt left no event"
    );
    let listed = client
        .list_devices(ListDevicesRequest {
            parent: PARENT.into(),
            min_revision: revision(&after),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(listed.devices.len(), 2);
    sandbox.stop().await
}

#[tokio::test]
async fn commands_for_a_region_this_fleetd_does_not_serve_are_refused() -> anyhow::Result<()> {
    use fleetlog_proto::devices::v1::provisioning_policy::Spec as PolicySpec;
    use fleetlog_proto::devices::v1::provisioning_policy::spec::Mode;
    use fleetlog_proto::devices::v1::provisioning_policy_service_client::ProvisioningPolicyServiceClient;
    use fleetlog_proto::devices::v1::{CreateProvisioningPolicyRequest, ProvisioningPolicy};
    use fleetlog_proto::devices::v1alpha2;

    let sandbox = Sandbox::start().await?;
    let mut client = sandbox.client().await?;
    let log = sandbox.log().await?;
    let before = log.last_revision().await?;
    let elsewhere = "projects/p0/regions/elsewhere";
    let named = |id: &str| format!("{elsewhere}/devices/{id}");
    // Routed, but no region of that name has a Deployment to route to.
    let mentions = "regions/elsewhere has no deployment in Meta";

    let created = client
        .create_device(CreateDeviceRequest {
            parent: elsewhere.into(),
            device_id: "d0".into(),
            device: Some(device(&[], 3)),
            request_id: String::new(),
        })
        .await;
    assert_code(created, Code::FailedPrecondition, mentions);
    let mut patch = device(&[], 4);
    patch.name = named("d0");
    let updated = client
        .update_device(UpdateDeviceRequest {
            device: Some(patch),
            allow_missing: true,
            ..Default::default()
        })
        .await;
    assert_code(updated, Code::FailedPrecondition, mentions);
    let deleted = client
        .delete_device(DeleteDeviceRequest {
            name: named("d0"),
            allow_missing: true,
            ..Default::default()
        })
        .await;
    assert_code(deleted, Code::FailedPrecondition, mentions);
    let mut policies =
        ProvisioningPolicyServiceClient::new(fleetlog_tests::admin(sandbox.grpc_url()).await?);
    let policy = policies
        .create_provisioning_policy(CreateProvisioningPolicyRequest {
            parent: elsewhere.into(),
            provisioning_policy_id: "p".into(),
            provisioning_policy: Some(ProvisioningPolicy {
                spec: Some(PolicySpec {
                    mode: Mode::Unattended as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await;
    assert_code(policy, Code::FailedPrecondition, mentions);
    assert_eq!(log.last_revision().await?, before, "nothing was written");

    // v1alpha2 names have no region: they are the served region's.
    let mut old = v1alpha2::device_service_client::DeviceServiceClient::new(
        fleetlog_tests::admin(sandbox.grpc_url()).await?,
    );
    let made = old
        .create_device(v1alpha2::CreateDeviceRequest {
            parent: "projects/p0".into(),
            device_id: "d1".into(),
            device: Some(v1alpha2::Device::default()),
            request_id: String::new(),
        })
        .await?
        .into_inner();
    let found = client
        .get_device(get(&device_name("d1"), revision_of(&made)))
        .await?
        .into_inner();
    assert_eq!(
        found.metadata.map(|m| m.owning_region).as_deref(),
        Some("eu1")
    );
    sandbox.stop().await
}

fn revision_of(device: &fleetlog_proto::devices::v1alpha2::Device) -> i64 {
    device.metadata.as_ref().map_or(0, |m| m.revision)
}

#[tokio::test]
async fn a_command_answers_unavailable_before_the_client_deadline_while_nats_is_away()
-> anyhow::Result<()> {
    // fleetd itself would retry for a minute; the client's deadline wins.
    let mut sandbox = Sandbox::start_with(|c| c.nats_retry_ms = 60_000).await?;
    let mut client = sandbox.client().await?;
    create(&mut client, "before", device(&[], 1)).await?;
    sandbox.nats.kill9();
    let deadline = std::time::Duration::from_secs(2);
    let mut request = tonic::Request::new(CreateDeviceRequest {
        parent: PARENT.into(),
        device_id: "during".into(),
        device: Some(device(&[], 1)),
        request_id: String::new(),
    });
    request.set_timeout(deadline);
    let started = std::time::Instant::now();
    let answered = client.create_device(request).await;
    let took = started.elapsed();
    assert_code(answered, Code::Unavailable, "unavailable");
    assert!(
        took < deadline,
        "answered after {took:?}, past the client's {deadline:?} deadline"
    );
    assert!(
        took > deadline / 2,
        "answered after {took:?}: it should have retried for most of the deadline"
    );
    sandbox.nats.restart()?;
    sandbox.stop().await
}
