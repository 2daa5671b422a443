//! REST/JSON, server-sent events and gRPC-Web against a real fleetd: every
//! standard method both ways, actions, errors as JSON with the mapped HTTP
//! status, and watch resume through `Last-Event-ID`.

use crate::common;

use std::time::Duration;

use anyhow::Context;
use common::{PARENT, Sandbox};
use fleetlog_proto::devices::v1::device_service_client::DeviceServiceClient;
use fleetlog_proto::devices::v1::{
    BatchGetDevicesRequest, CreateDeviceRequest, DeleteDeviceRequest, GetDeviceRequest,
    ListDevicesRequest, UpdateDeviceRequest, WatchDevicesRequest,
};
use fleetlog_tests::{ADMIN_KEY, Bearer};
use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value as Json, json};

fn rest(sandbox: &Sandbox, path: &str) -> String {
    format!("http://{}{path}", sandbox.ready.http)
}

fn http() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()?)
}

/// Sends a request as the admin; returns the status and the JSON body.
async fn call(request: reqwest::RequestBuilder) -> anyhow::Result<(StatusCode, Json)> {
    let response = request.bearer_auth(ADMIN_KEY).send().await?;
    let status = response.status();
    let text = response.text().await?;
    let body = serde_json::from_str(&text).with_context(|| format!("{status}: {text}"))?;
    Ok((status, body))
}

fn error_status(body: &Json) -> &str {
    body["error"]["status"]
        .as_str()
        .unwrap_or("<no error status>")
}

#[tokio::test]
async fn rest_round_trips_every_standard_method() -> anyhow::Result<()> {
    let sandbox = Sandbox::start().await?;
    let http = http()?;
    let devices = rest(&sandbox, &format!("/v1/{PARENT}/devices"));
    let d1 = format!("{PARENT}/devices/d1");

    // Create: parent and ID from the path and query, the resource as body.
    let (status, created) = call(http.post(format!("{devices}?deviceId=d1")).json(&json!({
        "displayName": "first",
        "metadata": {"labels": {"site": "berlin"}},
        "spec": {"loggingConfig": {"enableJournalExport": true, "priority": 5}},
    })))
    .await?;
    assert_eq!(status, StatusCode::OK, "{created}");
    assert_eq!(created["name"], d1);
    assert_eq!(created["spec"]["loggingConfig"]["priority"], 5);
    let revision: i64 = created["metadata"]["revision"]
        .as_str()
        .context("revision is an int64 string")?
        .parse()?;
    assert!(revision > 0);
    call(
        http.post(format!("{devices}?deviceId=d2"))
            .json(&json!({"displayName": "second"})),
    )
    .await?;

    // Get, with read-your-writes and a mask.
    let (status, got) = call(http.get(rest(
        &sandbox,
        &format!("/v1/{d1}?minRevision={revision}&fieldMask=name,displayName"),
    )))
    .await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got, json!({"name": d1, "displayName": "first"}));

    // List with a filter, and paging.
    let (_, listed) = call(http.get(&devices).query(&[
        ("filter", "labels.site = \"berlin\""),
        ("minRevision", &revision.to_string()),
    ]))
    .await?;
    let names: Vec<&str> = listed["devices"]
        .as_array()
        .context("devices")?
        .iter()
        .filter_map(|d| d["name"].as_str())
        .collect();
    assert_eq!(names, [d1.as_str()]);
    let (_, page) = call(http.get(format!("{devices}?pageSize=1"))).await?;
    assert_eq!(page["devices"].as_array().map(Vec::len), Some(1));
    let token = page["nextPageToken"].as_str().context("a next page")?;
    let (_, next) = call(
        http.get(&devices)
            .query(&[("pageSize", "1"), ("pageToken", token)]),
    )
    .await?;
    assert_eq!(next["devices"][0]["name"], format!("{PARENT}/devices/d2"));

    // BatchGet: repeated names, missing ones reported.
    let (_, batch) = call(http.get(format!("{devices}:batchGet")).query(&[
        ("names", d1.as_str()),
        ("names", &format!("{PARENT}/devices/absent")),
    ]))
    .await?;
    assert_eq!(batch["devices"][0]["name"], d1);
    assert_eq!(
        batch["missing"],
        json!([format!("{PARENT}/devices/absent")])
    );

    // Update: the name comes from the path, the mask from the query.
    let (status, updated) = call(
        http.patch(rest(
            &sandbox,
            &format!("/v1/{d1}?updateMask=displayName&expectedRevision={revision}"),
        ))
        .json(&json!({"displayName": "renamed", "description": "not in the mask"})),
    )
    .await?;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["displayName"], "renamed");
    assert!(
        updated.get("description").is_none(),
        "outside the mask: {updated}"
    );
    // A stale expected revision is ABORTED → 409.
    let (status, stale) = call(
        http.patch(rest(
            &sandbox,
            &format!("/v1/{d1}?updateMask=displayName&expectedRevision={revision}"),
        ))
        .json(&json!({"displayName": "again"})),
    )
    .await?;
    assert_eq!(
        (status, error_status(&stale)),
        (StatusCode::CONFLICT, "ABORTED")
    );

    // The same device through the previous API version.
    let (status, old) = call(http.get(rest(&sandbox, "/v1alpha2/projects/p0/devices/d1"))).await?;
    assert_eq!(status, StatusCode::OK, "{old}");
    assert_eq!(old["name"], "projects/p0/devices/d1");
    assert_eq!(old["spec"]["logPriority"], 5);

    // Delete, then NOT_FOUND as a JSON error with 404.
    let (status, deleted) = call(http.delete(rest(&sandbox, &format!("/v1/{d1}")))).await?;
    assert_eq!((status, deleted), (StatusCode::OK, json!({})));
    let (status, missing) = call(http.get(rest(&sandbox, &format!("/v1/{d1}")))).await?;
    assert_eq!(
        (status, error_status(&missing)),
        (StatusCode::NOT_FOUND, "NOT_FOUND")
    );
    assert_eq!(missing["error"]["code"], 404);
    assert!(
        missing["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("d1")),
        "{missing}"
    );

    // gRPC sees what REST wrote.
    let mut grpc = sandbox.client().await?;
    let d2 = grpc
        .get_device(GetDeviceRequest {
            name: format!("{PARENT}/devices/d2"),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(d2.display_name, "second");
    sandbox.stop().await
}

#[tokio::test]
async fn rest_errors_are_json_with_the_mapped_status() -> anyhow::Result<()> {
    let sandbox = Sandbox::start().await?;
    let http = http()?;
    let devices = rest(&sandbox, &format!("/v1/{PARENT}/devices"));
    call(http.post(format!("{devices}?deviceId=d1")).json(&json!({}))).await?;

    let cases: Vec<(reqwest::RequestBuilder, StatusCode, &str)> = vec![
        (
            http.post(format!("{devices}?deviceId=d1")).json(&json!({})),
            StatusCode::CONFLICT,
            "ALREADY_EXISTS",
        ),
        (
            http.get(format!("{devices}?filter=labels.site%20%3D%3D%3D")),
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
        ),
        (
            http.get(format!("{devices}?pageSize=ten")),
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
        ),
        (
            http.get(format!("{devices}?bogus=1")),
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
        ),
        (
            http.post(format!("{devices}?deviceId=d9"))
                .json(&json!({"noSuchField": 1})),
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
        ),
        (
            http.post(format!("{devices}?deviceId=d9"))
                .body("{not json"),
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
        ),
        (
            http.post(format!("{devices}?deviceId=Not_Valid!"))
                .json(&json!({})),
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
        ),
        (
            http.get(rest(&sandbox, "/v1/projects/p0/nothing/here")),
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
        ),
        (
            http.get(rest(&sandbox, "/v9/regions")),
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
        ),
        (
            http.put(rest(&sandbox, &format!("/v1/{PARENT}/devices/d1")))
                .json(&json!({})),
            StatusCode::METHOD_NOT_ALLOWED,
            "UNIMPLEMENTED",
        ),
        (
            http.post(rest(
                &sandbox,
                &format!("/v1/{PARENT}/devices/d1:noSuchAction"),
            )),
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
        ),
    ];
    for (request, http_status, code) in cases {
        let described = format!("{request:?}");
        let (status, body) = call(request).await?;
        assert_eq!(
            (status, error_status(&body)),
            (http_status, code),
            "{described}: {body}"
        );
        assert_eq!(body["error"]["code"], http_status.as_u16());
    }

    // No key, and a wrong key: 401; another project's operator: 403.
    let response = http
        .get(rest(&sandbox, &format!("/v1/{PARENT}/devices/d1")))
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let body: Json = response.json().await?;
    assert_eq!(error_status(&body), "UNAUTHENTICATED");
    let response = http
        .get(rest(&sandbox, &format!("/v1/{PARENT}/devices/d1")))
        .bearer_auth("fl1:projects/p0/serviceAccounts/x/keys/y:00")
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    sandbox.stop().await
}

#[tokio::test]
async fn rest_serves_actions_meta_and_iam() -> anyhow::Result<()> {
    let sandbox = Sandbox::start().await?;
    let http = http()?;
    // Meta: the region's deployment, registered at startup.
    let (status, deployments) = call(http.get(rest(
        &sandbox,
        "/v1/services/devices.fleetlog.io/deployments",
    )))
    .await?;
    assert_eq!(status, StatusCode::OK, "{deployments}");
    assert_eq!(
        deployments["deployments"][0]["name"],
        "services/devices.fleetlog.io/deployments/eu1"
    );
    assert_eq!(deployments["deployments"][0]["currentVersion"], "v1");

    // IAM: a service account, a key made by an action, a binding; the key
    // then works on REST for its project only.
    let (status, account) = call(
        http.post(rest(
            &sandbox,
            "/v1/projects/p0/serviceAccounts?serviceAccountId=ops",
        ))
        .json(&json!({"displayName": "operators"})),
    )
    .await?;
    assert_eq!(status, StatusCode::OK, "{account}");
    let (status, key) = call(http.post(rest(
        &sandbox,
        "/v1/projects/p0/serviceAccounts/ops:createServiceAccountKey",
    )))
    .await?;
    assert_eq!(status, StatusCode::OK, "{key}");
    let secret = key["key"].as_str().context("the key, once")?.to_owned();
    let (status, binding) = call(
        http.post(rest(
            &sandbox,
            "/v1/projects/p0/roleBindings?roleBindingId=ops",
        ))
        .json(&json!({"member": "projects/p0/serviceAccounts/ops", "role": "viewer"})),
    )
    .await?;
    assert_eq!(status, StatusCode::OK, "{binding}");
    let as_viewer = http
        .get(rest(&sandbox, &format!("/v1/{PARENT}/devices")))
        .bearer_auth(&secret)
        .send()
        .await?;
    assert_eq!(as_viewer.status(), StatusCode::OK);
    let create = http
        .post(rest(&sandbox, &format!("/v1/{PARENT}/devices?deviceId=v")))
        .bearer_auth(&secret)
        .json(&json!({}))
        .send()
        .await?;
    assert_eq!(create.status(), StatusCode::FORBIDDEN);
    // The key also works as access_token (for EventSource).
    let as_token = http
        .get(rest(&sandbox, &format!("/v1/{PARENT}/devices")))
        .query(&[("access_token", secret.as_str())])
        .send()
        .await?;
    assert_eq!(as_token.status(), StatusCode::OK);

    // A device action with a body-less POST: its agent key, once.
    call(
        http.post(rest(&sandbox, &format!("/v1/{PARENT}/devices?deviceId=a1")))
            .json(&json!({})),
    )
    .await?;
    let (status, provisioned) = call(http.post(rest(
        &sandbox,
        &format!("/v1/{PARENT}/devices/a1:provisionServiceAccountToDevice"),
    )))
    .await?;
    assert_eq!(status, StatusCode::OK, "{provisioned}");
    let agent_key = provisioned["serviceAccountKey"]["key"]
        .as_str()
        .context("agent key")?
        .to_owned();
    // Client streaming: a JSON array of heartbeats, sent as the agent.
    let beat = http
        .post(rest(
            &sandbox,
            &format!("/v1/{PARENT}/devices/a1:heartbeat"),
        ))
        .bearer_auth(&agent_key)
        .json(&json!([{"status": {"deviceInfo": {"agentVersion": "9.1"}}}]))
        .send()
        .await?;
    assert_eq!(beat.status(), StatusCode::OK, "{}", beat.text().await?);
    let (_, device) = call(http.get(rest(&sandbox, &format!("/v1/{PARENT}/devices/a1")))).await?;
    assert_eq!(device["status"]["deviceInfo"]["agentVersion"], "9.1");
    sandbox.stop().await
}

/// Reads server-sent events off a streaming response.
struct Events {
    body: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buffer: String,
}

#[derive(Debug)]
struct SseEvent {
    id: Option<String>,
    event: Option<String>,
    data: Json,
}

impl Events {
    fn new(response: reqwest::Response) -> Events {
        Events {
            body: response.bytes_stream().boxed(),
            buffer: String::new(),
        }
    }

    async fn next(&mut self) -> anyhow::Result<SseEvent> {
        tokio::time::timeout(Duration::from_secs(10), self.read()).await?
    }

    async fn read(&mut self) -> anyhow::Result<SseEvent> {
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = SseEvent {
                    id: None,
                    event: None,
                    data: Json::Null,
                };
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        event.id = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("event:") {
                        event.event = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if data.is_empty() {
                    continue; // a keep-alive comment
                }
                event.data = serde_json::from_str(&data)?;
                return Ok(event);
            }
            let chunk = self.body.next().await.context("the stream ended")??;
            self.buffer.push_str(std::str::from_utf8(&chunk)?);
        }
    }
}

fn change_names(event: &SseEvent) -> Vec<(String, String)> {
    event.data["changes"]
        .as_array()
        .map(|changes| {
            changes
                .iter()
                .map(|c| {
                    (
                        c["type"].as_str().unwrap_or_default().to_owned(),
                        c["name"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn watch_as_server_sent_events_resumes_with_last_event_id() -> anyhow::Result<()> {
    let sandbox = Sandbox::start().await?;
    let http = reqwest::Client::new();
    let devices = rest(&sandbox, &format!("/v1/{PARENT}/devices"));
    call(
        http.post(format!("{devices}?deviceId=before"))
            .json(&json!({})),
    )
    .await?;

    let response = http
        .get(format!("{devices}:watch"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()[reqwest::header::CONTENT_TYPE]
            .to_str()?
            .starts_with("text/event-stream")
    );
    let mut events = Events::new(response);
    // The current state first, completed by isCurrent.
    let mut initial = Vec::new();
    loop {
        let event = events.next().await?;
        initial.extend(change_names(&event));
        if event.data["isCurrent"] == true {
            break;
        }
    }
    assert!(
        initial.contains(&("ADDED".into(), format!("{PARENT}/devices/before"))),
        "{initial:?}"
    );

    let (_, created) = call(
        http.post(format!("{devices}?deviceId=live"))
            .json(&json!({})),
    )
    .await?;
    let event = events.next().await?;
    assert_eq!(
        change_names(&event),
        [("ADDED".to_owned(), format!("{PARENT}/devices/live"))]
    );
    let id = event
        .id
        .clone()
        .context("events carry the revision as id")?;
    assert_eq!(Some(id.as_str()), created["metadata"]["revision"].as_str());
    drop(events);

    // Changes while away, then a reconnect with Last-Event-ID: exactly those
    // (the header wins over the resumeRevision of the URL it first opened).
    call(http.delete(rest(&sandbox, &format!("/v1/{PARENT}/devices/before")))).await?;
    call(
        http.post(format!("{devices}?deviceId=later"))
            .json(&json!({})),
    )
    .await?;
    let response = http
        .get(format!("{devices}:watch?resumeRevision=1"))
        .bearer_auth(ADMIN_KEY)
        .header("Last-Event-ID", id)
        .send()
        .await?;
    let mut events = Events::new(response);
    let mut resumed = Vec::new();
    while resumed.len() < 2 {
        resumed.extend(change_names(&events.next().await?));
    }
    assert_eq!(
        resumed,
        [
            ("REMOVED".to_owned(), format!("{PARENT}/devices/before")),
            ("ADDED".to_owned(), format!("{PARENT}/devices/later")),
        ]
    );

    // One resource's watch: its current state first.
    let response = http
        .get(rest(&sandbox, &format!("/v1/{PARENT}/devices/later:watch")))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await?;
    let mut events = Events::new(response);
    let mut current = Vec::new();
    loop {
        let event = events.next().await?;
        current.extend(change_names(&event));
        if event.data["isCurrent"] == true {
            break;
        }
    }
    assert!(
        current.contains(&("ADDED".to_owned(), format!("{PARENT}/devices/later"))),
        "{current:?}"
    );
    drop(events);

    // A watch the caller may not make ends with an error event.
    let response = http
        .get(format!("{devices}:watch?filter=%3D%3D"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await?;
    let status = response.status();
    let body = response.text().await?;
    assert!(
        status == StatusCode::BAD_REQUEST
            || body.contains("event: error") && body.contains("INVALID_ARGUMENT"),
        "{status} {body}"
    );
    sandbox.stop().await
}

#[tokio::test]
async fn grpc_web_round_trips_every_standard_method() -> anyhow::Result<()> {
    let sandbox = Sandbox::start().await?;
    // A gRPC-Web client over HTTP/1.1, as a browser library would speak it.
    let http1 = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    let web = tower::ServiceBuilder::new()
        .layer(tonic_web::GrpcWebClientLayer::new())
        .service(http1);
    let web = tonic::service::interceptor::InterceptedService::new(web, Bearer::new(ADMIN_KEY)?);
    let mut client = DeviceServiceClient::with_origin(web, sandbox.grpc_url().parse()?);

    let created = client
        .create_device(CreateDeviceRequest {
            parent: PARENT.into(),
            device_id: "web".into(),
            device: Some(common::device(&[("site", "web")], 3)),
            request_id: String::new(),
        })
        .await?
        .into_inner();
    let name = created.name.clone();
    let revision = common::revision(&created);
    let got = client
        .get_device(GetDeviceRequest {
            name: name.clone(),
            min_revision: revision,
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(got, created);
    let listed = client
        .list_devices(ListDevicesRequest {
            parent: PARENT.into(),
            filter: "labels.site = \"web\"".into(),
            min_revision: revision,
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(listed.devices, std::slice::from_ref(&created));
    let batch = client
        .batch_get_devices(BatchGetDevicesRequest {
            names: vec![name.clone()],
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(batch.devices.len(), 1);
    let mut renamed = created.clone();
    renamed.display_name = "over grpc-web".into();
    let updated = client
        .update_device(UpdateDeviceRequest {
            device: Some(renamed),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["display_name".into()],
            }),
            expected_revision: revision,
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(updated.display_name, "over grpc-web");
    // Server streaming over HTTP/1.1.
    let mut watch = client
        .watch_devices(WatchDevicesRequest {
            parent: PARENT.into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(10), watch.message())
        .await??
        .context("the initial state")?;
    assert!(first.changes.iter().any(|c| c.name == name));
    drop(watch);
    client
        .delete_device(DeleteDeviceRequest {
            name: name.clone(),
            ..Default::default()
        })
        .await?;
    let gone = client
        .get_device(GetDeviceRequest {
            name,
            ..Default::default()
        })
        .await;
    assert_eq!(common::code(gone), tonic::Code::NotFound);
    sandbox.stop().await
}
