//! Regions (issue 16): each region a JetStream domain, linked by leafnodes
//! (`fleetlog_tests::NatsRegions`); another region's log is read here from
//! a read copy, a mirror that keeps the owner's revisions.

use crate::common;

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

mod two_regions {
    //! Meta and IAM live in the leading region (eu1); us1 reads them from
    //! read copies, joins when its Deployment is added there, and
    //! authenticates with the keys eu1 issued. A command for a resource
    //! the other region owns is forwarded there and answered the same.

    use super::*;
    use fleetlog_proto::devices::v1::device_service_client::DeviceServiceClient;
    use fleetlog_proto::devices::v1::{
        CreateDeviceRequest, DeleteDeviceRequest, Device, GetDeviceRequest, UpdateDeviceRequest,
    };
    use fleetlog_proto::meta::v1::deployment_service_client::DeploymentServiceClient;
    use fleetlog_proto::meta::v1::region_service_client::RegionServiceClient;
    use fleetlog_proto::meta::v1::{
        CreateDeploymentRequest, CreateRegionRequest, Deployment, GetRegionRequest, Region,
    };
    use fleetlog_tests::{Authed, FleetdProcess, Link};
    use tonic::Code;

    fn free_port() -> anyhow::Result<u16> {
        Ok(std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port())
    }

    /// eu1 (leading) and us1 running, each fleetd reached by the other
    /// region through a [`Link`] the test can cut.
    struct Fleet {
        nats: NatsRegions,
        eu1: FleetdProcess,
        us1: FleetdProcess,
        /// Kept alive: us1 reaches eu1 through it.
        _eu1_front: Link,
        us1_front: Link,
        leader: Authed,
        _data: [tempfile::TempDir; 2],
    }

    fn env(
        nats: &NatsRegions,
        region: &str,
        data: &tempfile::TempDir,
        port: u16,
        front: &Link,
    ) -> Vec<(&'static str, String)> {
        vec![
            ("FLEETLOG_NATS_URL", nats.url(region)),
            ("FLEETLOG_DATA_DIR", data.path().display().to_string()),
            ("FLEETLOG_REGION", region.to_owned()),
            ("FLEETLOG_LEADING_REGION", "eu1".to_owned()),
            ("FLEETLOG_LISTEN", format!("127.0.0.1:{port}")),
            (
                "FLEETLOG_REGIONAL_DOMAIN",
                format!("127.0.0.1:{}", front.port()),
            ),
            ("FLEETLOG_PROCESS_NAME", format!("all-{region}")),
        ]
    }

    impl Fleet {
        async fn start() -> anyhow::Result<Fleet> {
            Self::start_on("v1").await
        }

        /// Starts eu1, then us1, which waits (creating nothing) until its
        /// Region and Deployment are added in eu1; both on Devices
        /// `version`.
        async fn start_on(version: &str) -> anyhow::Result<Fleet> {
            let nats = NatsRegions::start(&["eu1", "us1"]).await?;
            let data = [tempfile::tempdir()?, tempfile::tempdir()?];
            let (eu1_port, us1_port) = (free_port()?, free_port()?);
            let eu1_front = Link::relay(eu1_port).await?;
            let us1_front = Link::relay(us1_port).await?;
            let mut eu1_env = env(&nats, "eu1", &data[0], eu1_port, &eu1_front);
            eu1_env.push(("FLEETLOG_DEVICES_INITIAL_VERSION", version.to_owned()));
            let eu1 = FleetdProcess::start("all", &eu1_env)?;
            let leader = fleetlog_tests::admin(eu1.grpc_url()).await?;

            let us1_env = env(&nats, "us1", &data[1], us1_port, &us1_front);
            let us1 = tokio::task::spawn_blocking(move || FleetdProcess::start("all", &us1_env));
            tokio::time::sleep(Duration::from_secs(2)).await;
            assert!(
                !us1.is_finished(),
                "us1 must not be ready before it is added"
            );
            let js = async_nats::jetstream::new(nats.connect("us1").await?);
            let mut names = js.stream_names();
            while let Some(name) = names.next().await {
                let name = name?;
                assert!(
                    name != "META_US1" && name != "IAM_US1",
                    "us1 keeps no Meta or IAM of its own: {name}"
                );
            }

            RegionServiceClient::new(leader.clone())
                .create_region(CreateRegionRequest {
                    region_id: "us1".into(),
                    region: Some(Region {
                        title: "US 1".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .await?;
            DeploymentServiceClient::new(leader.clone())
                .create_deployment(CreateDeploymentRequest {
                    parent: "services/devices.fleetlog.io".into(),
                    deployment_id: "us1".into(),
                    deployment: Some(Deployment {
                        region: "regions/us1".into(),
                        regional_domain: format!("127.0.0.1:{}", us1_front.port()),
                        current_version: version.into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .await?;
            let us1 = tokio::time::timeout(Duration::from_secs(60), us1).await???;
            Ok(Fleet {
                nats,
                eu1,
                us1,
                _eu1_front: eu1_front,
                us1_front,
                leader,
                _data: data,
            })
        }

        /// A key of a new service account with `device-operator` in `p0`,
        /// issued through eu1 and usable in us1 once its read copy has it.
        async fn operator_key(&self) -> anyhow::Result<String> {
            let key =
                common::member(self.leader.clone(), "p0", "operator", "device-operator").await?;
            // The key reaches us1 through IAM's copy a moment later.
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut probe = DeviceServiceClient::new(
                fleetlog_tests::connect_as(self.us1.grpc_url(), &key).await?,
            );
            loop {
                let answer = probe
                    .get_device(GetDeviceRequest {
                        name: "projects/p0/regions/us1/devices/none".into(),
                        ..Default::default()
                    })
                    .await;
                match answer {
                    Err(s) if s.code() == Code::Unauthenticated && Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(50)).await
                    }
                    Err(s) if s.code() == Code::Unauthenticated => {
                        anyhow::bail!("the key never reached us1: {s}")
                    }
                    _ => return Ok(key),
                }
            }
        }

        async fn stop(self) -> anyhow::Result<()> {
            for process in [self.us1, self.eu1] {
                let status = process.shut_down().await?;
                anyhow::ensure!(status.success(), "{status}");
            }
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_region_joins_by_its_deployment_and_reads_meta_and_iam_from_the_leader()
    -> anyhow::Result<()> {
        let fleet = Fleet::start().await?;
        // Keys eu1 issued work in us1 (IAM's read copy).
        let key = fleet.operator_key().await?;
        let mut devices =
            DeviceServiceClient::new(fleetlog_tests::connect_as(fleet.us1.grpc_url(), &key).await?);
        let device = devices
            .create_device(CreateDeviceRequest {
                parent: "projects/p0/regions/us1".into(),
                device_id: "d1".into(),
                device: Some(Device::default()),
                request_id: String::new(),
            })
            .await?
            .into_inner();
        let in_us1 = EventLog::open(fleet.nats.connect("us1").await?, devices_of("us1")?).await?;
        let logged = in_us1
            .last(&device_key("us1", "d1")?)
            .await?
            .ok_or_else(|| anyhow::anyhow!("the device is not in DEVICES_US1"))?;
        assert_eq!(
            logged.revision.to_wire(),
            device.metadata.as_ref().map_or(0, |m| m.revision)
        );

        // Meta reads in us1 come from the copy; its commands go to eu1.
        let mut regions_in_us1 =
            RegionServiceClient::new(fleetlog_tests::admin(fleet.us1.grpc_url()).await?);
        let region = regions_in_us1
            .get_region(GetRegionRequest {
                name: "regions/us1".into(),
                ..Default::default()
            })
            .await?
            .into_inner();
        assert_eq!(region.title, "US 1");
        let created = regions_in_us1
            .create_region(CreateRegionRequest {
                region_id: "ap1".into(),
                region: Some(Region::default()),
                ..Default::default()
            })
            .await?
            .into_inner();
        let in_eu1 = RegionServiceClient::new(fleet.leader.clone())
            .get_region(GetRegionRequest {
                name: "regions/ap1".into(),
                ..Default::default()
            })
            .await?
            .into_inner();
        assert_eq!(in_eu1.metadata, created.metadata, "written in eu1's Meta");
        fleet.stop().await
    }

    #[tokio::test]
    async fn a_command_for_the_other_regions_resource_is_routed_there_and_answered_the_same()
    -> anyhow::Result<()> {
        let fleet = Fleet::start().await?;
        let key = fleet.operator_key().await?;
        let mut via_eu1 =
            DeviceServiceClient::new(fleetlog_tests::connect_as(fleet.eu1.grpc_url(), &key).await?);
        let mut at_us1 =
            DeviceServiceClient::new(fleetlog_tests::connect_as(fleet.us1.grpc_url(), &key).await?);
        let us1_log = EventLog::open(fleet.nats.connect("us1").await?, devices_of("us1")?).await?;
        let eu1_log = EventLog::open(fleet.nats.connect("eu1").await?, devices_of("eu1")?).await?;

        let create = CreateDeviceRequest {
            parent: "projects/p0/regions/us1".into(),
            device_id: "routed".into(),
            device: Some(Device::default()),
            request_id: "5b0c1f6e8a7d4c2b9e3f1a0d2c4b6a8e".into(),
        };
        let created = via_eu1.create_device(create.clone()).await?.into_inner();
        let revision = created.metadata.as_ref().map_or(0, |m| m.revision);
        let key_us1 = device_key("us1", "routed")?;
        let logged = us1_log
            .last(&key_us1)
            .await?
            .ok_or_else(|| anyhow::anyhow!("the routed create is not in DEVICES_US1"))?;
        assert_eq!(logged.revision.to_wire(), revision);
        assert_eq!(
            eu1_log.last_revision().await?,
            Revision::NONE,
            "nothing in eu1's log"
        );
        // The client's retry, through the owner itself: the same answer.
        let again = at_us1.create_device(create.clone()).await?.into_inner();
        assert_eq!(again, created);
        let before = us1_log.last_revision().await?;

        let mut patch = created.clone();
        patch.display_name = "routed through eu1".into();
        let updated = via_eu1
            .update_device(UpdateDeviceRequest {
                device: Some(patch),
                expected_revision: revision,
                ..Default::default()
            })
            .await?
            .into_inner();
        assert!(updated.metadata.as_ref().map_or(0, |m| m.revision) > before.to_wire());
        via_eu1
            .delete_device(DeleteDeviceRequest {
                name: created.name.clone(),
                ..Default::default()
            })
            .await?;
        let delete_again = DeleteDeviceRequest {
            name: created.name.clone(),
            ..Default::default()
        };
        let routed = via_eu1
            .delete_device(delete_again.clone())
            .await
            .map(|_| ());
        let local = at_us1.delete_device(delete_again).await.map(|_| ());
        assert_eq!(common::code(routed), Code::NotFound);
        assert_eq!(common::code(local), Code::NotFound);
        // No role in p1: refused the same, routed or not.
        let elsewhere = CreateDeviceRequest {
            parent: "projects/p1/regions/us1".into(),
            device_id: "x".into(),
            ..Default::default()
        };
        let routed = via_eu1.create_device(elsewhere.clone()).await.map(|_| ());
        let local = at_us1.create_device(elsewhere).await.map(|_| ());
        assert_eq!(common::code(routed), Code::PermissionDenied);
        assert_eq!(common::code(local), Code::PermissionDenied);
        assert_eq!(
            eu1_log.last_revision().await?,
            Revision::NONE,
            "still nothing in eu1's log"
        );

        // Cut off from us1, eu1 answers UNAVAILABLE naming us1 before the
        // client's deadline, and writes nothing itself.
        fleet.us1_front.cut();
        let mut request = tonic::Request::new(CreateDeviceRequest {
            device_id: "during-the-cut".into(),
            request_id: "0f1e2d3c4b5a69788796a5b4c3d2e1f0".into(),
            ..create.clone()
        });
        request.set_timeout(Duration::from_secs(2));
        let started = Instant::now();
        let cut = via_eu1.create_device(request).await.map(|_| ());
        let took = started.elapsed();
        let status = cut.expect_err("no answer from us1 during the cut");
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert!(status.message().contains("us1"), "{status:?}");
        assert!(took < Duration::from_secs(2), "answered in {took:?}");
        assert_eq!(eu1_log.last_revision().await?, Revision::NONE);
        fleet.us1_front.heal();
        let healed = via_eu1
            .create_device(CreateDeviceRequest {
                device_id: "during-the-cut".into(),
                request_id: "0f1e2d3c4b5a69788796a5b4c3d2e1f0".into(),
                ..create
            })
            .await?
            .into_inner();
        assert!(healed.name.ends_with("/during-the-cut"));
        fleet.stop().await
    }

    /// Reads `name` through `client` at `revision`, retrying NOT_FOUND
    /// while the reading region has not opened the owner's copy yet.
    async fn read_at(
        client: &mut DeviceServiceClient<Authed>,
        name: &str,
        revision: i64,
    ) -> anyhow::Result<Device> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let read = client
                .get_device(GetDeviceRequest {
                    name: name.into(),
                    min_revision: revision,
                    ..Default::default()
                })
                .await;
            match read {
                Ok(device) => return Ok(device.into_inner()),
                // Not opened yet, or switching to this region's version.
                Err(s)
                    if matches!(s.code(), Code::NotFound | Code::Unavailable)
                        && Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                Err(s) => anyhow::bail!("reading {name} at revision {revision}: {s}"),
            }
        }
    }

    #[tokio::test]
    async fn each_region_reads_and_lists_the_others_devices_from_its_copy_at_the_owners_revision()
    -> anyhow::Result<()> {
        let fleet = Fleet::start().await?;
        let mut eu1 = DeviceServiceClient::new(fleet.leader.clone());
        let mut us1 = DeviceServiceClient::new(fleetlog_tests::admin(fleet.us1.grpc_url()).await?);
        let create = |parent: &str, id: &str| CreateDeviceRequest {
            parent: parent.into(),
            device_id: id.into(),
            device: Some(Device {
                display_name: format!("{id} of {parent}"),
                ..Default::default()
            }),
            request_id: String::new(),
        };
        let revision = |d: &Device| d.metadata.as_ref().map_or(0, |m| m.revision);
        let written_in_eu1 = eu1
            .create_device(create("projects/p0/regions/eu1", "e1"))
            .await?
            .into_inner();
        let written_in_us1 = us1
            .create_device(create("projects/p0/regions/us1", "u1"))
            .await?
            .into_inner();

        let eu1_in_us1 = read_at(&mut us1, &written_in_eu1.name, revision(&written_in_eu1)).await?;
        assert_eq!(
            eu1_in_us1, written_in_eu1,
            "the same resource, at the same revision"
        );
        let us1_in_eu1 = read_at(&mut eu1, &written_in_us1.name, revision(&written_in_us1)).await?;
        assert_eq!(us1_in_eu1, written_in_us1);

        // A later write is read at its revision (min_revision waits for the
        // copy to get it).
        let mut patch = written_in_us1.clone();
        patch.display_name = "renamed in us1".into();
        let updated = us1
            .update_device(UpdateDeviceRequest {
                device: Some(patch),
                expected_revision: revision(&written_in_us1),
                ..Default::default()
            })
            .await?
            .into_inner();
        let listed = eu1
            .list_devices(fleetlog_proto::devices::v1::ListDevicesRequest {
                parent: "projects/p0/regions/us1".into(),
                min_revision: revision(&updated),
                ..Default::default()
            })
            .await?
            .into_inner();
        assert_eq!(
            listed.devices,
            vec![updated.clone()],
            "us1's devices, listed in eu1"
        );

        // regions/- lists every region's, in name order, a page at a time.
        for client in [&mut eu1, &mut us1] {
            let mut seen = Vec::new();
            let mut page_token = String::new();
            loop {
                let page = client
                    .list_devices(fleetlog_proto::devices::v1::ListDevicesRequest {
                        parent: "projects/p0/regions/-".into(),
                        page_size: 1,
                        page_token,
                        ..Default::default()
                    })
                    .await?
                    .into_inner();
                seen.extend(page.devices);
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
            assert_eq!(seen, vec![written_in_eu1.clone(), updated.clone()]);
        }
        let waiting = eu1
            .list_devices(fleetlog_proto::devices::v1::ListDevicesRequest {
                parent: "projects/p0/regions/-".into(),
                min_revision: 1,
                ..Default::default()
            })
            .await
            .map(|_| ());
        assert_eq!(
            common::code(waiting),
            Code::InvalidArgument,
            "a revision is one region's"
        );
        let unknown = eu1
            .get_device(GetDeviceRequest {
                name: "projects/p0/regions/zz9/devices/d".into(),
                ..Default::default()
            })
            .await
            .map(|_| ());
        assert_eq!(common::code(unknown), Code::NotFound);
        fleet.stop().await
    }

    /// `fleetlog_read_copy_seconds_since_heard` for `region`'s copy, as
    /// `process` exports it.
    async fn copy_staleness(process: &FleetdProcess, region: &str) -> anyhow::Result<Option<f64>> {
        let text = reqwest::get(format!("http://{}/metrics", process.http_addr))
            .await?
            .text()
            .await?;
        Ok(text
            .lines()
            .filter(|line| line.starts_with("fleetlog_read_copy_seconds_since_heard{"))
            .filter(|line| line.contains(&format!("region=\"{region}\"")))
            .find_map(|line| line.rsplit_once(' ')?.1.parse().ok()))
    }

    /// Every device under `parent` as `client` lists it, after `revision`.
    async fn all_devices(
        client: &mut DeviceServiceClient<Authed>,
        parent: &str,
        revision: i64,
    ) -> anyhow::Result<Vec<Device>> {
        let mut devices = Vec::new();
        let mut page_token = String::new();
        loop {
            let page = client
                .list_devices(fleetlog_proto::devices::v1::ListDevicesRequest {
                    parent: parent.into(),
                    page_size: 1000,
                    page_token,
                    min_revision: revision,
                    ..Default::default()
                })
                .await?
                .into_inner();
            devices.extend(page.devices);
            if page.next_page_token.is_empty() {
                return Ok(devices);
            }
            page_token = page.next_page_token;
        }
    }

    #[tokio::test]
    async fn a_partition_keeps_both_regions_serving_marks_the_copies_stale_and_converges_after_the_heal()
    -> anyhow::Result<()> {
        let mut fleet = Fleet::start().await?;
        let mut eu1 = DeviceServiceClient::new(fleet.leader.clone());
        let mut us1 = DeviceServiceClient::new(fleetlog_tests::admin(fleet.us1.grpc_url()).await?);
        let create = |region: &str, id: String| CreateDeviceRequest {
            parent: format!("projects/p0/regions/{region}"),
            device_id: id,
            device: Some(Device::default()),
            request_id: String::new(),
        };
        let before = us1
            .create_device(create("us1", "before".into()))
            .await?
            .into_inner();
        read_at(
            &mut eu1,
            &before.name,
            before.metadata.as_ref().map_or(0, |m| m.revision),
        )
        .await?;

        // The partition: the leafnode and both fleetd paths.
        fleet.nats.cut("us1").await?;
        fleet.us1_front.cut();
        fleet._eu1_front.cut();
        let cut_at = Instant::now();
        for n in 0..20 {
            eu1.create_device(create("eu1", format!("e{n}"))).await?;
            us1.create_device(create("us1", format!("u{n}"))).await?;
        }
        // A command for the other region fails in time, and nowhere writes.
        let mut routed = tonic::Request::new(create("eu1", "from-us1".into()));
        routed.set_timeout(Duration::from_secs(2));
        let refused = us1.create_device(routed).await.map(|_| ());
        assert_eq!(common::code(refused), Code::Unavailable);
        // eu1 still serves us1's devices from its copy, as last heard.
        let stale_read = eu1
            .get_device(GetDeviceRequest {
                name: before.name.clone(),
                ..Default::default()
            })
            .await?
            .into_inner();
        assert_eq!(stale_read, before);
        let deadline = cut_at + Duration::from_secs(15);
        let staleness = loop {
            let seen = copy_staleness(&fleet.eu1, "us1").await?;
            if seen.is_some_and(|s| s >= 3.0) {
                break seen;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "eu1 never called its us1 copy stale: {seen:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        println!(
            "us1's copy in eu1 stale for {staleness:?} s, {:?} after the cut",
            cut_at.elapsed()
        );

        fleet._eu1_front.heal();
        fleet.us1_front.heal();
        fleet.nats.heal("us1").await?;
        // Converged: each region's copy of the other equals the owner's own
        // view, at the owner's last revision.
        for (mut owner, mut reader, region) in [
            (us1.clone(), eu1.clone(), "us1"),
            (eu1.clone(), us1.clone(), "eu1"),
        ] {
            let parent = format!("projects/p0/regions/{region}");
            let own = all_devices(&mut owner, &parent, 0).await?;
            let last = own
                .iter()
                .filter_map(|d| d.metadata.as_ref().map(|m| m.revision))
                .max()
                .unwrap_or(0);
            let copied = all_devices(&mut reader, &parent, last).await?;
            assert_eq!(copied, own, "{region}'s devices, read in the other region");
            assert!(own.len() >= 20, "{region} kept writing: {}", own.len());
        }
        let heard = copy_staleness(&fleet.eu1, "us1").await?;
        assert!(
            heard.is_some_and(|s| s < 3.0),
            "fresh again after the heal: {heard:?}"
        );
        fleet.stop().await
    }

    /// Upgrades stay per region: eu1 switches to v1 while us1 stays on
    /// v1alpha2 and keeps writing, and eu1's copy of us1's devices
    /// switches with eu1.
    #[tokio::test]
    async fn a_region_upgrades_alone_and_its_copies_of_the_others_follow_its_version()
    -> anyhow::Result<()> {
        use fleetlog_proto::devices::v1alpha2;

        let fleet = Fleet::start_on("v1alpha2").await?;
        let mut us1_old = v1alpha2::device_service_client::DeviceServiceClient::new(
            fleetlog_tests::admin(fleet.us1.grpc_url()).await?,
        );
        let made = us1_old
            .create_device(v1alpha2::CreateDeviceRequest {
                parent: "projects/p0".into(),
                device_id: "old".into(),
                device: Some(v1alpha2::Device {
                    display_name: "written in v1alpha2 in us1".into(),
                    ..Default::default()
                }),
                request_id: String::new(),
            })
            .await?
            .into_inner();
        let revision = made.metadata.as_ref().map_or(0, |m| m.revision);

        // us1 keeps writing through v1alpha2 while eu1 upgrades.
        let stop = tokio_util::sync::CancellationToken::new();
        let writer = tokio::spawn({
            let (mut client, stop) = (us1_old.clone(), stop.clone());
            async move {
                let mut written = Vec::new();
                while !stop.is_cancelled() {
                    let device = client
                        .create_device(v1alpha2::CreateDeviceRequest {
                            parent: "projects/p0".into(),
                            device_id: format!("during-{}", written.len()),
                            device: Some(v1alpha2::Device::default()),
                            request_id: String::new(),
                        })
                        .await?
                        .into_inner();
                    written.push(device.metadata.map_or(0, |m| m.revision));
                }
                anyhow::Ok(written)
            }
        });
        let mut meta = DeploymentServiceClient::new(fleet.leader.clone());
        common::begin(&mut meta, "v1").await?;
        common::settled_on(&mut meta, "v1", Duration::from_secs(30)).await?;

        // eu1 serves v1, and reads us1's device through v1 from its copy.
        let mut eu1 = DeviceServiceClient::new(fleet.leader.clone());
        let read = read_at(&mut eu1, "projects/p0/regions/us1/devices/old", revision).await?;
        assert_eq!(read.display_name, made.display_name);
        assert_eq!(read.metadata.map(|m| m.revision), Some(revision));
        // us1 wrote on through eu1's upgrade, none refused, all in its log
        // and in eu1's copy at their revisions.
        stop.cancel();
        let written = writer.await??;
        let last = *written
            .last()
            .ok_or_else(|| anyhow::anyhow!("us1 wrote nothing during eu1's upgrade"))?;
        let us1_log = EventLog::open(fleet.nats.connect("us1").await?, devices_of("us1")?).await?;
        assert_eq!(us1_log.last_revision().await?.to_wire(), last);
        let name = format!(
            "projects/p0/regions/us1/devices/during-{}",
            written.len() - 1
        );
        let copied = read_at(&mut eu1, &name, last).await?;
        assert_eq!(copied.metadata.map(|m| m.revision), Some(last));
        println!("us1 wrote {} devices during eu1's upgrade", written.len());
        fleet.stop().await
    }
}
