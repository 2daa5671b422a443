//! Meta holds what a running region needs (its Region, the Devices Service
//! and the region's Deployment): deleting any of them, or anything another
//! record depends on, is refused with FAILED_PRECONDITION naming the
//! dependent; and every start registers what the log lacks, read from the
//! log, never from JetStream's duplicate window.

use crate::common;

use common::{REGION, Sandbox};
use fleetlog_events::envelope::{ChangeKind, CommandId};
use fleetlog_events::{EventLog, Id, ResourceName, Revision, StorageKey, StreamId};
use fleetlog_model::meta::names::DeploymentName;
use fleetlog_model::meta::names::RegionName;
use fleetlog_model::meta::names::ServiceName;
use fleetlog_proto::meta::v1::deployment_service_client::DeploymentServiceClient;
use fleetlog_proto::meta::v1::region_service_client::RegionServiceClient;
use fleetlog_proto::meta::v1::service_service_client::ServiceServiceClient;
use fleetlog_proto::meta::v1::{
    CreateDeploymentRequest, CreateRegionRequest, CreateServiceRequest, DeleteDeploymentRequest,
    DeleteRegionRequest, DeleteServiceRequest, Deployment, GetDeploymentRequest, GetRegionRequest,
    GetServiceRequest, Region, Service, UpdateDeploymentRequest,
};
use fleetlog_tests::{Authed, admin};
use tonic::Code;

const DEVICES: &str = "services/devices.fleetlog.io";
const DEPLOYMENT: &str = "services/devices.fleetlog.io/deployments/eu1";
const REGION_NAME: &str = "regions/eu1";

struct Meta {
    regions: RegionServiceClient<Authed>,
    services: ServiceServiceClient<Authed>,
    deployments: DeploymentServiceClient<Authed>,
}

impl Meta {
    async fn connect(sandbox: &Sandbox) -> anyhow::Result<Meta> {
        Self::connect_to(sandbox.grpc_url()).await
    }

    async fn connect_to(url: String) -> anyhow::Result<Meta> {
        let channel = admin(url).await?;
        Ok(Meta {
            regions: RegionServiceClient::new(channel.clone()),
            services: ServiceServiceClient::new(channel.clone()),
            deployments: DeploymentServiceClient::new(channel),
        })
    }

    async fn region(&mut self, id: &str) -> anyhow::Result<()> {
        self.regions
            .create_region(CreateRegionRequest {
                region_id: id.into(),
                region: Some(Region::default()),
                ..Default::default()
            })
            .await?;
        Ok(())
    }

    async fn service(&mut self, id: &str, imports: &[&str]) -> anyhow::Result<()> {
        self.services
            .create_service(CreateServiceRequest {
                service_id: id.into(),
                service: Some(Service {
                    all_versions: vec!["v1".into()],
                    imported_services: imports.iter().map(|s| s.to_string()).collect(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await?;
        Ok(())
    }

    async fn deployment(&mut self, service: &str, region: &str) -> anyhow::Result<()> {
        self.deployments
            .create_deployment(CreateDeploymentRequest {
                parent: format!("services/{service}"),
                deployment_id: region.into(),
                deployment: Some(Deployment {
                    region: format!("regions/{region}"),
                    current_version: "v1".into(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await?;
        Ok(())
    }

    async fn delete_region(&mut self, name: &str) -> Result<(), tonic::Status> {
        self.regions
            .delete_region(DeleteRegionRequest {
                name: name.into(),
                ..Default::default()
            })
            .await
            .map(|_| ())
    }

    async fn delete_service(&mut self, name: &str) -> Result<(), tonic::Status> {
        self.services
            .delete_service(DeleteServiceRequest {
                name: name.into(),
                ..Default::default()
            })
            .await
            .map(|_| ())
    }

    async fn delete_deployment(&mut self, name: &str) -> Result<(), tonic::Status> {
        self.deployments
            .delete_deployment(DeleteDeploymentRequest {
                name: name.into(),
                ..Default::default()
            })
            .await
            .map(|_| ())
    }

    /// The three records a running region needs are all there.
    async fn served_records_exist(&mut self) -> anyhow::Result<()> {
        self.regions
            .get_region(GetRegionRequest {
                name: REGION_NAME.into(),
                ..Default::default()
            })
            .await?;
        self.services
            .get_service(GetServiceRequest {
                name: DEVICES.into(),
                ..Default::default()
            })
            .await?;
        let deployment = self
            .deployments
            .get_deployment(GetDeploymentRequest {
                name: DEPLOYMENT.into(),
                ..Default::default()
            })
            .await?
            .into_inner();
        assert_eq!(deployment.current_version, "v1");
        Ok(())
    }
}

fn refused(result: Result<(), tonic::Status>, mentions: &[&str]) {
    match result {
        Ok(()) => {
            panic!("the deletion was allowed; expected FAILED_PRECONDITION naming {mentions:?}")
        }
        Err(status) => {
            assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
            for mention in mentions {
                assert!(
                    status.message().contains(mention),
                    "{:?} should name {mention:?}",
                    status.message()
                );
            }
        }
    }
}

#[tokio::test]
async fn what_a_region_serves_or_another_record_needs_cannot_be_deleted() -> anyhow::Result<()> {
    let sandbox = Sandbox::start().await?;
    let mut meta = Meta::connect(&sandbox).await?;

    refused(
        meta.delete_deployment(DEPLOYMENT).await,
        &[DEPLOYMENT, "run by this fleetd"],
    );
    refused(
        meta.delete_service(DEVICES).await,
        &[DEVICES, "run by this fleetd"],
    );
    refused(
        meta.delete_region(REGION_NAME).await,
        &[REGION_NAME, "serves"],
    );

    // Records nobody runs: `lib` deployed in `spare`, `app` deployed there
    // too and importing `lib`.
    meta.region("spare").await?;
    meta.service("lib.example.com", &[]).await?;
    meta.deployment("lib.example.com", "spare").await?;
    meta.service("app.example.com", &["services/lib.example.com"])
        .await?;
    meta.deployment("app.example.com", "spare").await?;

    refused(
        meta.delete_region("regions/spare").await,
        &[
            "services/lib.example.com/deployments/spare",
            "services/app.example.com/deployments/spare",
        ],
    );
    refused(
        meta.delete_deployment("services/lib.example.com/deployments/spare")
            .await,
        &["services/app.example.com", "spare"],
    );
    refused(
        meta.delete_service("services/lib.example.com").await,
        &["services/lib.example.com/deployments/spare"],
    );
    // Taken apart in dependency order, each deletion is allowed.
    meta.delete_deployment("services/app.example.com/deployments/spare")
        .await?;
    refused(
        meta.delete_service("services/lib.example.com").await,
        &["deployments/spare"],
    );
    meta.delete_deployment("services/lib.example.com/deployments/spare")
        .await?;
    refused(
        meta.delete_service("services/lib.example.com").await,
        &["imported by services/app.example.com"],
    );
    meta.delete_service("services/app.example.com").await?;
    meta.delete_service("services/lib.example.com").await?;
    meta.delete_region("regions/spare").await?;

    meta.served_records_exist().await?;
    sandbox.stop().await
}

/// Appends a deletion of `name`'s resource to the Meta log, as a fleetd
/// that allowed these deletions wrote it.
async fn tombstone<N: ResourceName>(log: &EventLog, name: &str) -> anyhow::Result<Revision> {
    let (key, _) = StorageKey::parse::<N>(name)?;
    let last = log
        .last(&key)
        .await?
        .ok_or_else(|| anyhow::anyhow!("{name} has no event"))?;
    let command = CommandId::generate();
    let mut change = last.change.clone();
    change.kind = ChangeKind::Deleted as i32;
    change.command_id = command.to_string();
    change.actor = "test:an-older-fleetd".into();
    log.append(&key, &change, last.revision, &command).await?;
    Ok(last.revision)
}

#[tokio::test]
async fn a_restart_right_after_a_deletion_registers_again_from_the_log() -> anyhow::Result<()> {
    let sandbox = Sandbox::start().await?;
    let (nats, data) = sandbox.stop_keeping().await?;
    let log = EventLog::open(
        nats.connect().await?,
        StreamId::new(Id::parse("meta")?, Id::parse(REGION)?),
    )
    .await?;
    // Within seconds of the first start's registrations, well inside
    // JetStream's two-minute duplicate window.
    let before = log.last_revision().await?;
    tombstone::<DeploymentName>(&log, DEPLOYMENT).await?;
    tombstone::<ServiceName>(&log, DEVICES).await?;
    tombstone::<RegionName>(&log, REGION_NAME).await?;

    let sandbox = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        Sandbox::start_on(nats, data, |_| {}),
    )
    .await??;
    let mut meta = Meta::connect(&sandbox).await?;
    meta.served_records_exist().await?;
    let after = log.last_revision().await?;
    assert_eq!(
        after.get(),
        before.get() + 6,
        "three deletions, then three new registrations"
    );
    sandbox.stop().await
}

/// Update with `allow_missing` creates through the create decision, with
/// the same checks of what it refers to.
#[tokio::test]
async fn an_update_that_creates_checks_references_like_a_create() -> anyhow::Result<()> {
    let sandbox = Sandbox::start().await?;
    let mut meta = Meta::connect(&sandbox).await?;
    let deployment = |name: &str| Deployment {
        name: name.into(),
        region: format!("regions/{REGION}"),
        current_version: "v1".into(),
        ..Default::default()
    };
    let unregistered = "services/nobody.example.com/deployments/eu1";
    let created = meta
        .deployments
        .update_deployment(UpdateDeploymentRequest {
            deployment: Some(deployment(unregistered)),
            allow_missing: true,
            ..Default::default()
        })
        .await
        .map(|_| ());
    refused(created, &["services/nobody.example.com", "not registered"]);
    let created = meta
        .deployments
        .create_deployment(CreateDeploymentRequest {
            parent: "services/nobody.example.com".into(),
            deployment_id: "eu1".into(),
            deployment: Some(deployment("")),
            ..Default::default()
        })
        .await
        .map(|_| ());
    refused(created, &["not registered"]);

    meta.service("lib.example.com", &[]).await?;
    let made = meta
        .deployments
        .update_deployment(UpdateDeploymentRequest {
            deployment: Some(deployment("services/lib.example.com/deployments/eu1")),
            allow_missing: true,
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(made.metadata.map(|m| m.generation), Some(1), "created");
    sandbox.stop().await
}

/// The checks of one process see what another wrote a moment ago: a
/// deployment created through a second process right after its service was
/// created through the first is accepted, and deleting the service through
/// the first right after that is refused (its projection may not hold the
/// deployment yet; the command waits for it to reach the log's last event).
#[tokio::test]
async fn the_checks_of_a_command_see_what_another_process_just_wrote() -> anyhow::Result<()> {
    let sandbox = Sandbox::start().await?;
    let data = tempfile::tempdir()?;
    let other = fleetlog_tests::FleetdProcess::start(
        "api",
        &[
            ("FLEETLOG_NATS_URL", sandbox.nats.url()),
            ("FLEETLOG_DATA_DIR", data.path().display().to_string()),
            ("FLEETLOG_REGION", REGION.to_owned()),
            ("FLEETLOG_PROCESS_NAME", "api-2".to_owned()),
        ],
    )?;
    let mut here = Meta::connect(&sandbox).await?;
    let mut there = Meta::connect_to(other.grpc_url()).await?;
    for round in 0..40 {
        let service = format!("s{round}.example.com");
        here.service(&service, &[]).await?;
        there
            .deployment(&service, REGION)
            .await
            .map_err(|e| anyhow::anyhow!("round {round}: a deployment of {service}: {e}"))?;
        let deleted = here.delete_service(&format!("services/{service}")).await;
        refused(
            deleted,
            &[&format!("services/{service}/deployments/{REGION}")],
        );
    }
    let status = other.shut_down().await?;
    assert!(status.success(), "{status}");
    sandbox.stop().await
}
