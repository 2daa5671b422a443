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

mod leading_region {
    //! Meta and IAM live in the leading region; another region reads them
    //! from read copies, joins when its Deployment is added there, and
    //! authenticates with the keys the leading region issued.

    use super::*;
    use fleetlog_proto::devices::v1::device_service_client::DeviceServiceClient;
    use fleetlog_proto::devices::v1::{CreateDeviceRequest, Device, GetDeviceRequest};
    use fleetlog_proto::iam::v1::role_binding_service_client::RoleBindingServiceClient;
    use fleetlog_proto::iam::v1::service_account_service_client::ServiceAccountServiceClient;
    use fleetlog_proto::iam::v1::{
        CreateRoleBindingRequest, CreateServiceAccountKeyRequest, CreateServiceAccountRequest,
        RoleBinding, ServiceAccount,
    };
    use fleetlog_proto::meta::v1::deployment_service_client::DeploymentServiceClient;
    use fleetlog_proto::meta::v1::region_service_client::RegionServiceClient;
    use fleetlog_proto::meta::v1::{
        CreateDeploymentRequest, CreateRegionRequest, Deployment, GetRegionRequest, Region,
    };
    use fleetlog_tests::{Authed, FleetdProcess};
    use tonic::Code;

    fn fleetd(
        regions: &NatsRegions,
        region: &str,
        data: &tempfile::TempDir,
        leading: &str,
    ) -> Vec<(&'static str, String)> {
        vec![
            ("FLEETLOG_NATS_URL", regions.url(region)),
            ("FLEETLOG_DATA_DIR", data.path().display().to_string()),
            ("FLEETLOG_REGION", region.to_owned()),
            ("FLEETLOG_LEADING_REGION", leading.to_owned()),
            ("FLEETLOG_PROCESS_NAME", format!("all-{region}")),
        ]
    }

    /// A key of a new service account with `role` in project `p0`, issued
    /// by the leading region.
    async fn operator_key(leader: Authed) -> anyhow::Result<String> {
        let mut accounts = ServiceAccountServiceClient::new(leader.clone());
        let account = accounts
            .create_service_account(CreateServiceAccountRequest {
                parent: "projects/p0".into(),
                service_account_id: "operator".into(),
                service_account: Some(ServiceAccount::default()),
                request_id: String::new(),
            })
            .await?
            .into_inner();
        RoleBindingServiceClient::new(leader)
            .create_role_binding(CreateRoleBindingRequest {
                parent: "projects/p0".into(),
                role_binding_id: "operator".into(),
                role_binding: Some(RoleBinding {
                    member: account.name.clone(),
                    role: "device-operator".into(),
                    ..Default::default()
                }),
                request_id: String::new(),
            })
            .await?;
        Ok(accounts
            .create_service_account_key(CreateServiceAccountKeyRequest {
                name: account.name,
                request_id: String::new(),
            })
            .await?
            .into_inner()
            .key)
    }

    #[tokio::test]
    async fn a_region_joins_by_its_deployment_and_reads_meta_and_iam_from_the_leader()
    -> anyhow::Result<()> {
        let regions = NatsRegions::start(&["eu1", "us1"]).await?;
        let eu1_data = tempfile::tempdir()?;
        let eu1 = FleetdProcess::start("all", &fleetd(&regions, "eu1", &eu1_data, "eu1"))?;
        let leader = fleetlog_tests::admin(eu1.grpc_url()).await?;

        // us1 starts first: it waits, creating nothing, until it is added.
        let us1_data = tempfile::tempdir()?;
        let us1_env = fleetd(&regions, "us1", &us1_data, "eu1");
        let us1 = tokio::task::spawn_blocking(move || FleetdProcess::start("all", &us1_env));
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(
            !us1.is_finished(),
            "us1 must not be ready before it is added"
        );
        let meta_streams: Vec<String> = {
            let js = async_nats::jetstream::new(regions.connect("us1").await?);
            let mut names = js.stream_names();
            let mut found = Vec::new();
            while let Some(name) = names.next().await {
                found.push(name?);
            }
            found
        };
        assert!(
            !meta_streams
                .iter()
                .any(|s| s == "META_US1" || s == "IAM_US1"),
            "us1 keeps no Meta or IAM of its own: {meta_streams:?}"
        );

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
                    regional_domain: "us1.devices.fleetlog.io".into(),
                    current_version: "v1".into(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await?;
        let us1 = tokio::time::timeout(Duration::from_secs(60), us1).await???;

        // Keys the leading region issued work in us1 (IAM's read copy).
        let key = operator_key(leader.clone()).await?;
        let mut devices = DeviceServiceClient::new(
            tokio::time::timeout(Duration::from_secs(10), async {
                loop {
                    let channel = fleetlog_tests::connect_as(us1.grpc_url(), &key).await?;
                    let mut client = DeviceServiceClient::new(channel.clone());
                    // The key reaches us1 through the copy a moment later.
                    let probe = client
                        .get_device(GetDeviceRequest {
                            name: "projects/p0/regions/us1/devices/none".into(),
                            ..Default::default()
                        })
                        .await;
                    match probe {
                        Err(s) if s.code() == Code::Unauthenticated => {
                            tokio::time::sleep(Duration::from_millis(50)).await
                        }
                        _ => return anyhow::Ok(channel),
                    }
                }
            })
            .await??,
        );
        let device = devices
            .create_device(CreateDeviceRequest {
                parent: "projects/p0/regions/us1".into(),
                device_id: "d1".into(),
                device: Some(Device::default()),
                request_id: String::new(),
            })
            .await?
            .into_inner();
        let in_us1 = EventLog::open(regions.connect("us1").await?, devices_of("us1")?).await?;
        let logged = in_us1
            .last(&device_key("us1", "d1")?)
            .await?
            .ok_or_else(|| anyhow::anyhow!("the device is not in DEVICES_US1"))?;
        assert_eq!(
            logged.revision.to_wire(),
            device.metadata.as_ref().map_or(0, |m| m.revision)
        );

        // Meta reads in us1 come from the copy; its commands belong to eu1.
        let mut regions_in_us1 =
            RegionServiceClient::new(fleetlog_tests::admin(us1.grpc_url()).await?);
        let region = regions_in_us1
            .get_region(GetRegionRequest {
                name: "regions/us1".into(),
                ..Default::default()
            })
            .await?
            .into_inner();
        assert_eq!(region.title, "US 1");
        let refused = regions_in_us1
            .create_region(CreateRegionRequest {
                region_id: "ap1".into(),
                region: Some(Region::default()),
                ..Default::default()
            })
            .await
            .expect_err("a Meta command in a region that does not lead");
        assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
        assert!(refused.message().contains("eu1"), "{refused:?}");

        for process in [us1, eu1] {
            let status = process.shut_down().await?;
            assert!(status.success(), "{status}");
        }
        Ok(())
    }
}
