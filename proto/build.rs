//! Generates the Rust types, the tonic services and the `ReflectMessage`
//! impls from the .proto files, with a protoc that comes from crates.io so a
//! fresh machine needs nothing else.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "fleetlog/api/v1/common.proto",
    "fleetlog/events/v1/event.proto",
    "fleetlog/devices/v1/device.proto",
    "fleetlog/devices/v1/provisioning.proto",
    "fleetlog/devices/v1alpha2/device.proto",
    "fleetlog/devices/v1alpha2/provisioning.proto",
    "fleetlog/meta/v1/meta.proto",
    "fleetlog/iam/v1/iam.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptor_path = out_dir.join("fleetlog_descriptor.bin");
    let includes = vec![PathBuf::from("."), protoc_bin_vendored::include_path()?];

    let protos: Vec<PathBuf> = PROTOS.iter().map(PathBuf::from).collect();
    let mut config = prost_build::Config::new();
    config.protoc_executable(&protoc);
    prost_reflect_build::Builder::new()
        .file_descriptor_set_path(&descriptor_path)
        .descriptor_pool("crate::DESCRIPTOR_POOL")
        .configure(&mut config, &protos, &includes)?;

    tonic_prost_build::configure()
        .codec_path("crate::codec::FleetlogCodec")
        .file_descriptor_set_path(&descriptor_path)
        .compile_with_config(config, &protos, &includes)?;

    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    Ok(())
}
