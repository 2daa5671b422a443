//! Clients that know nothing of Fleetlog's .proto files: a Python gRPC
//! client that learns the API from server reflection alone
//! (`tests/python/reflection_client.py`), and an OpenAPI validator run on
//! fleetd's `/openapi.json` (`tests/python/validate_openapi.py`).
//!
//! Both need Python packages that `ops/setup.sh` installs (grpcio,
//! grpcio-reflection, protobuf, openapi-spec-validator). The interpreter is
//! `$FLEETLOG_PYTHON`, else `python3`. Without them the tests fail: they do
//! not skip.

use crate::common;

use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use anyhow::{Context, bail};
use common::{PARENT, Sandbox, device_name, revision};
use fleetlog_proto::devices::v1::GetDeviceRequest;
use serde_json::Value;
use tokio::process::Command;

/// The interpreter the scripts run with.
fn python() -> String {
    std::env::var("FLEETLOG_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// A script of `tests/python`.
fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("python")
        .join(name)
}

/// Runs `python args…` to completion (at most two minutes). The sandbox
/// serves on this runtime, so the child is awaited, never waited on.
async fn run_python(args: &[&str]) -> anyhow::Result<Output> {
    let python = python();
    let child = Command::new(&python).args(args).kill_on_drop(true).output();
    tokio::time::timeout(Duration::from_secs(120), child)
        .await
        .with_context(|| format!("{python} {args:?} did not finish in 120 s"))?
        .with_context(|| format!("starting {python} (set FLEETLOG_PYTHON or install python3)"))
}

/// Fails, saying how to fix it, when the interpreter lacks `modules`.
async fn require_modules(modules: &str) -> anyhow::Result<()> {
    let output = run_python(&["-c", &format!("import {modules}")]).await?;
    if !output.status.success() {
        bail!(
            "{} cannot `import {modules}`: run ops/setup.sh (it installs the pinned \
             grpcio, grpcio-reflection, protobuf and openapi-spec-validator), or point \
             FLEETLOG_PYTHON at an interpreter that has them\n{}",
            python(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// Runs a script and returns its stdout; fails with its stderr.
async fn run_script(name: &str, args: &[&str]) -> anyhow::Result<String> {
    let path = script(name);
    let path = path.to_str().context("the script path is not UTF-8")?;
    let mut all = vec![path];
    all.extend_from_slice(args);
    let output = run_python(&all).await?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        bail!(
            "{name} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(stdout)
}

fn str_at<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{pointer} is not a string in {value}"))
}

#[tokio::test]
async fn a_reflection_only_python_client_lists_and_creates_devices() -> anyhow::Result<()> {
    require_modules("grpc, grpc_reflection, google.protobuf").await?;
    let sandbox = Sandbox::start().await?;
    let id = "py-reflection-1";
    let name = device_name(id);
    let target = sandbox.ready.grpc.to_string();

    let stdout = run_script(
        "reflection_client.py",
        &[
            "--target",
            &target,
            "--key",
            fleetlog_tests::ADMIN_KEY,
            "--parent",
            PARENT,
            "--device-id",
            id,
        ],
    )
    .await?;
    let seen: Value = serde_json::from_str(stdout.trim())
        .with_context(|| format!("reflection_client.py printed no JSON object: {stdout}"))?;

    // It found the service by reflection alone.
    let services: Vec<&str> = seen["services"]
        .as_array()
        .context("services is not a list")?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        services.contains(&"fleetlog.devices.v1.DeviceService"),
        "{services:?}"
    );

    // CreateDevice answered the device in the proto3 JSON mapping.
    let created = &seen["created"];
    assert_eq!(str_at(created, "/name"), name, "{created}");
    assert_eq!(
        str_at(created, "/displayName"),
        format!("{id} (created by reflection)")
    );
    assert_eq!(str_at(created, "/metadata/labels/site"), "berlin");
    let created_revision: i64 = str_at(created, "/metadata/revision")
        .parse()
        .context("metadata.revision is not an int64 string")?;
    assert!(created_revision > 0, "{created}");

    // GetDevice (at the create's revision) returned the same device.
    assert_eq!(seen["got"], *created);

    // ListDevices with `labels.site = "berlin"` found it, and only it.
    assert_eq!(seen["listed_names"], serde_json::json!([name]), "{seen}");

    // The status codes a generic client sees.
    assert_eq!(seen["duplicate_code"], "ALREADY_EXISTS", "{seen}");
    assert_eq!(seen["no_key_code"], "UNAUTHENTICATED", "{seen}");

    // The Rust client sees what the Python client wrote.
    let mut client = sandbox.client().await?;
    let device = client
        .get_device(GetDeviceRequest {
            name: name.clone(),
            field_mask: None,
            min_revision: created_revision,
        })
        .await?
        .into_inner();
    assert_eq!(device.name, name);
    assert_eq!(device.display_name, format!("{id} (created by reflection)"));
    assert_eq!(revision(&device), created_revision);
    let labels = device.metadata.map(|m| m.labels).unwrap_or_default();
    assert_eq!(labels.get("site").map(String::as_str), Some("berlin"));
    assert_eq!(labels.len(), 1, "{labels:?}");

    sandbox.stop().await
}

/// What `/openapi.json` must describe: (path, methods), from docs/rest.md and
/// the resource names of API.md.
const EXPECTED_OPERATIONS: &[(&str, &[&str])] = &[
    (
        "/v1/projects/{project}/regions/{region}/devices",
        &["get", "post"],
    ),
    (
        "/v1/projects/{project}/regions/{region}/devices/{device}",
        &["get", "patch", "delete"],
    ),
    ("/v1alpha2/projects/{project}/devices/{device}", &["get"]),
    ("/v1/regions/{region}", &["get"]),
    (
        "/v1/projects/{project}/serviceAccounts/{service_account}",
        &["get"],
    ),
];

#[tokio::test]
async fn the_openapi_document_validates() -> anyhow::Result<()> {
    require_modules("openapi_spec_validator").await?;
    let sandbox = Sandbox::start().await?;

    let url = format!("http://{}/openapi.json", sandbox.ready.http);
    let response = reqwest::get(&url)
        .await
        .with_context(|| format!("GET {url}"))?;
    let status = response.status();
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = response.bytes().await?;
    assert_eq!(
        status,
        reqwest::StatusCode::OK,
        "GET {url}: {}",
        String::from_utf8_lossy(&body)
    );
    assert!(
        content_type.starts_with("application/json"),
        "GET {url}: content-type {content_type:?}"
    );
    let document: Value = serde_json::from_slice(&body).context("/openapi.json is not JSON")?;

    // The validator's verdict, on exactly what fleetd served.
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, &body)?;
    let file = file.to_str().context("the temp path is not UTF-8")?;
    let verdict = run_script("validate_openapi.py", &[file]).await?;
    assert!(verdict.starts_with("valid OpenAPI 3."), "{verdict}");

    // Every standard method of devices v1, and a path of each other API.
    let paths = document["paths"]
        .as_object()
        .context("the document has no paths object")?;
    let mut missing = Vec::new();
    for (path, methods) in EXPECTED_OPERATIONS {
        for method in *methods {
            if paths
                .get(*path)
                .and_then(|item| item.get(*method))
                .is_none()
            {
                missing.push(format!("{} {path}", method.to_uppercase()));
            }
        }
    }
    let action = ":provisionServiceAccountToDevice";
    let has_action = paths.iter().any(|(path, item)| {
        path.starts_with("/v1/") && path.ends_with(action) && item.get("post").is_some()
    });
    if !has_action {
        missing.push(format!("POST /v1/…{action}"));
    }
    assert!(
        missing.is_empty(),
        "/openapi.json lacks {missing:?}; it has {} paths: {:?}",
        paths.len(),
        paths.keys().collect::<Vec<_>>()
    );

    sandbox.stop().await
}
