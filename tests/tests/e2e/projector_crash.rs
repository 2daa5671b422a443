//! The projector killed with SIGKILL 20 times at random points while events
//! flow: afterwards its projection equals a fresh replay of the log, with
//! every event applied exactly once.

use crate::common;

use std::time::Duration;

use common::{PARENT, Sandbox, create, device, device_name};
use fleetlog_projections::AsWritten;
use fleetlog_projections::store::Store;
use fleetlog_proto::devices::v1::{DeleteDeviceRequest, ListDevicesRequest, UpdateDeviceRequest};
use fleetlog_tests::FleetdProcess;
use rand::Rng;

const KILLS: usize = 20;

#[tokio::test]
async fn projector_survives_twenty_kill9s() -> anyhow::Result<()> {
    let sandbox = Sandbox::start().await?;
    let projector_data = tempfile::tempdir()?;
    let env = vec![
        ("FLEETLOG_NATS_URL", sandbox.nats.url()),
        (
            "FLEETLOG_DATA_DIR",
            projector_data.path().display().to_string(),
        ),
        ("FLEETLOG_REGION", common::REGION.to_owned()),
    ];

    // A writer that keeps creating, updating and deleting devices.
    let stop = tokio_util::sync::CancellationToken::new();
    let writer = tokio::spawn({
        let mut client = sandbox.client().await?;
        let stop = stop.clone();
        async move {
            let mut written = 0u64;
            let mut i = 0u64;
            while !stop.is_cancelled() {
                let id = format!("d{}", i % 200);
                let name = device_name(&id);
                match i % 5 {
                    4 => {
                        let _ = client
                            .delete_device(DeleteDeviceRequest {
                                name,
                                allow_missing: true,
                                ..Default::default()
                            })
                            .await;
                    }
                    2 | 3 => {
                        let mut patch = device(&[("i", &i.to_string())], (i % 8) as i32);
                        patch.name = name;
                        client
                            .update_device(UpdateDeviceRequest {
                                device: Some(patch),
                                allow_missing: true,
                                ..Default::default()
                            })
                            .await?;
                    }
                    _ => {
                        let _ = create(&mut client, &id, device(&[], 1)).await;
                    }
                }
                written += 1;
                i += 1;
            }
            anyhow::Ok(written)
        }
    });

    let mut rng = rand::rng();
    for _ in 0..KILLS {
        let mut process = FleetdProcess::start("projector", &env)?;
        tokio::time::sleep(Duration::from_millis(rng.random_range(20..400))).await;
        process.kill9();
    }
    stop.cancel();
    let commands = writer.await??;
    let log = sandbox.log().await?;
    let last = log.last_revision().await?;
    assert!(
        last.get() > 100,
        "events flowed while the projector was killed ({last} events)"
    );

    // Once more, to catch up; then a clean stop.
    let process = FleetdProcess::start("projector", &env)?;
    let mut client = fleetlog_proto::devices::v1::device_service_client::DeviceServiceClient::new(
        fleetlog_tests::admin(process.grpc_url()).await?,
    );
    client
        .list_devices(ListDevicesRequest {
            parent: PARENT.into(),
            min_revision: last.get() as i64,
            ..Default::default()
        })
        .await?;
    let status = process.shut_down().await?;
    assert!(status.success(), "SIGTERM stops fleetd cleanly: {status}");

    let projection_dir = projector_data
        .path()
        .join("projections")
        .join("devices-eu1-v1");
    let survivor = Store::open(&projection_dir, "v1")?;
    let checkpoint = survivor.checkpoint()?;
    assert_eq!(checkpoint.revision, last);
    assert_eq!(
        checkpoint.events_applied,
        last.get(),
        "no event applied twice or skipped"
    );

    let (_fresh_dir, fresh) = common::fresh_replay(&log, std::sync::Arc::new(AsWritten)).await?;
    assert_eq!(
        survivor.dump()?,
        fresh.store().dump()?,
        "the projection equals a fresh replay"
    );
    println!("{KILLS} kills, {commands} commands, {last} events");
    sandbox.stop().await
}
