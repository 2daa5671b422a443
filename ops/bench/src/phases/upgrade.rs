//! Upgrade: v1alpha2 → v1 while clients keep writing through v1alpha2; the
//! write pause fleetd measures at the switch, and the slowest write the
//! clients saw, beside the typical write in the same run.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use fleetlog_model::devices::SERVICE_DOMAIN;
use fleetlog_proto::devices::v1alpha2::device_service_client::DeviceServiceClient;
use fleetlog_proto::devices::v1alpha2::{CreateDeviceRequest, Device, UpdateDeviceRequest};
use fleetlog_proto::meta::v1::deployment::Stage;
use fleetlog_proto::meta::v1::deployment_service_client::DeploymentServiceClient;
use fleetlog_proto::meta::v1::{
    BeginUpgradeRequest, GetDeploymentRequest, SetAvailableUpgradeRequest,
};

use super::{ClientRun, join_clients};
use crate::cluster::{Cluster, REGION};
use crate::report::{Goal, Row};

const PHASE: &str = "upgrade";
const PROJECT: &str = "upg";
const FROM: &str = "v1alpha2";
const TO: &str = "v1";
/// Clients creating the fleet before the upgrade.
const CREATORS: u64 = 16;

pub struct Settings {
    pub devices: u64,
    pub writers: usize,
}

pub async fn run(
    cluster: &Cluster,
    settings: &Settings,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let deployment_name = format!("services/{SERVICE_DOMAIN}/deployments/{REGION}");
    let mut meta = DeploymentServiceClient::new(cluster.channel().await?);
    let get = GetDeploymentRequest {
        name: deployment_name.clone(),
        ..Default::default()
    };
    let current = meta
        .get_deployment(get.clone())
        .await?
        .into_inner()
        .current_version;
    if current != FROM {
        eprintln!("bench: skipping the upgrade phase: fleetd serves {current}, not {FROM}");
        return Ok(());
    }
    eprintln!(
        "bench: upgrade {FROM} → {TO} with {} devices and {} writers",
        settings.devices, settings.writers
    );
    create_fleet(cluster, settings.devices).await?;

    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut writers = Vec::with_capacity(settings.writers);
    for w in 0..settings.writers {
        let mut client = DeviceServiceClient::new(cluster.channel().await?);
        let stop = stop.clone();
        let devices = settings.devices;
        writers.push(tokio::spawn(async move {
            let mut run = ClientRun::default();
            while !stop.load(Ordering::Relaxed) {
                let id = (run.count * 7919 + w as u64) % devices;
                let sent = Instant::now();
                client
                    .update_device(UpdateDeviceRequest {
                        device: Some(Device {
                            name: format!("projects/{PROJECT}/devices/u{id}"),
                            display_name: format!("written during the upgrade {}", run.count),
                            ..Default::default()
                        }),
                        update_mask: Some(prost_types::FieldMask {
                            paths: vec!["display_name".into()],
                        }),
                        ..Default::default()
                    })
                    .await?;
                run.latencies.record(sent.elapsed());
                run.count += 1;
            }
            anyhow::Ok(run)
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let upgrade_started = Instant::now();
    meta.set_available_upgrade(SetAvailableUpgradeRequest {
        name: deployment_name.clone(),
        target_api_version: TO.into(),
        ..Default::default()
    })
    .await?;
    meta.begin_upgrade(BeginUpgradeRequest {
        name: deployment_name.clone(),
        ..Default::default()
    })
    .await?;
    let done = loop {
        let deployment = meta.get_deployment(get.clone()).await?.into_inner();
        let stage = deployment
            .upgrade_state
            .as_ref()
            .map_or(Stage::Ready, |s| s.stage());
        if deployment.current_version == TO && stage == Stage::Ready {
            break deployment;
        }
        anyhow::ensure!(
            upgrade_started.elapsed() < Duration::from_secs(1800),
            "the upgrade did not finish in 30 minutes"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let took = upgrade_started.elapsed();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let writes = join_clients(writers, started).await?;
    let pause = done
        .upgrade_state
        .and_then(|s| s.switch_pause)
        .map(|p| p.seconds as f64 * 1000.0 + f64::from(p.nanos) / 1e6)
        .ok_or_else(|| anyhow::anyhow!("the deployment reports no switch pause"))?;
    let typical = writes.latencies.p50_ms();
    rows.push(
        Row::new(
            PHASE,
            format!("write pause at the switch ({} writers)", settings.writers),
            pause,
            "ms",
        )
        .beside("write p50 during the upgrade", typical)
        .goal(Goal::AtMost(50.0)),
    );
    rows.push(
        Row::new(
            PHASE,
            "slowest write a client saw during the upgrade",
            writes.latencies.max_ms(),
            "ms",
        )
        .beside("write p50 during the upgrade", typical),
    );
    rows.push(Row::new(
        PHASE,
        format!(
            "upgrade of {} devices, BeginUpgrade → serving {TO}",
            settings.devices
        ),
        took.as_secs_f64() * 1000.0,
        "ms",
    ));
    Ok(())
}

async fn create_fleet(cluster: &Cluster, devices: u64) -> anyhow::Result<()> {
    let mut tasks = Vec::new();
    for c in 0..CREATORS {
        let mut client = DeviceServiceClient::new(cluster.channel().await?);
        tasks.push(tokio::spawn(async move {
            let mut run = ClientRun::default();
            for i in (c..devices).step_by(CREATORS as usize) {
                client
                    .create_device(CreateDeviceRequest {
                        parent: format!("projects/{PROJECT}"),
                        device_id: format!("u{i}"),
                        device: Some(Device {
                            display_name: "upgrade bench".into(),
                            ..Default::default()
                        }),
                        request_id: String::new(),
                    })
                    .await?;
                run.count += 1;
            }
            anyhow::Ok(run)
        }));
    }
    join_clients(tasks, Instant::now()).await?;
    Ok(())
}
