//! `fleetctl devices ...`: the standard methods of `fleetlog.devices.v1.DeviceService`.

use std::collections::HashMap;
use std::future::Future;

use fleetlog_proto::api::v1::Metadata;
use fleetlog_proto::devices::v1::device::{Spec, spec::LoggingConfig};
use fleetlog_proto::devices::v1::device_service_client::DeviceServiceClient;
use fleetlog_proto::devices::v1::{
    CreateDeviceRequest, DeleteDeviceRequest, Device, DeviceChange, GetDeviceRequest,
    ListDevicesRequest, ListDevicesResponse, UpdateDeviceRequest, WatchDeviceRequest,
    WatchDeviceResponse, WatchDevicesRequest, WatchDevicesResponse,
};
use prost_reflect::ReflectMessage;
use prost_types::FieldMask;
use tonic::Streaming;

use crate::cli::{
    CreateArgs, DeleteArgs, DeviceFields, DevicesCommand, GetArgs, ListArgs, Output, UpdateArgs,
    WatchArgs,
};
use crate::connect::{Auth, AuthedChannel, Connection};
use crate::error::{Error, stderr_line};
use crate::names::Label;
use crate::output;

pub type Client = DeviceServiceClient<AuthedChannel>;

/// Connects to the DeviceService at `conn`; a failure names the endpoint.
async fn connect(conn: &Connection) -> Result<Client, Error> {
    Ok(DeviceServiceClient::new(conn.channel().await?))
}

/// Runs one `devices` subcommand.
pub async fn run(conn: &Connection, command: DevicesCommand, out: Output) -> Result<(), Error> {
    // Reject a malformed key before any command runs.
    Auth::new(conn.key.as_deref())?;
    match command {
        DevicesCommand::Create(args) => create(conn, args, out).await,
        DevicesCommand::Get(args) => get(conn, args, out).await,
        DevicesCommand::List(args) => list(conn, args, out).await,
        DevicesCommand::Update(args) => update(conn, args, out).await,
        DevicesCommand::Delete(args) => delete(conn, args, out).await,
        DevicesCommand::Watch(args) => watch(conn, args, out).await,
    }
}

// ----- request building (pure) -----

/// A field mask of the non-empty, trimmed `paths`; `None` when there are none.
pub fn field_mask(paths: &[String]) -> Option<FieldMask> {
    let paths: Vec<String> = paths
        .iter()
        .map(|p| p.trim())
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect();
    (!paths.is_empty()).then_some(FieldMask { paths })
}

/// The labels as a map; giving one key twice is a usage error.
pub fn label_map(labels: &[Label]) -> Result<HashMap<String, String>, Error> {
    let mut map = HashMap::with_capacity(labels.len());
    for label in labels {
        if map.insert(label.key.clone(), label.value.clone()).is_some() {
            return Err(Error::Usage(format!(
                "label '{}' is given more than once",
                label.key
            )));
        }
    }
    Ok(map)
}

/// The device described by the field flags; parts without a flag stay unset.
pub fn device_from_fields(name: String, fields: &DeviceFields) -> Result<Device, Error> {
    let labels = label_map(&fields.labels)?;
    let metadata = (!labels.is_empty()).then(|| Metadata {
        labels,
        ..Default::default()
    });
    let has_logging =
        fields.priority.is_some() || fields.journal_export.is_some() || !fields.units.is_empty();
    let spec = has_logging.then(|| Spec {
        logging_config: Some(LoggingConfig {
            enable_journal_export: fields.journal_export.unwrap_or(false),
            priority: fields.priority.unwrap_or(0),
            units: fields.units.clone(),
        }),
        ..Default::default()
    });
    Ok(Device {
        name,
        display_name: fields.display_name.clone().unwrap_or_default(),
        description: fields.description.clone().unwrap_or_default(),
        metadata,
        spec,
        status: None,
    })
}

/// The update mask implied by the field flags that were given, in field order.
pub fn update_mask_from_fields(fields: &DeviceFields) -> Vec<String> {
    let flags: [(bool, &str); 6] = [
        (fields.display_name.is_some(), "display_name"),
        (fields.description.is_some(), "description"),
        (!fields.labels.is_empty(), "metadata.labels"),
        (
            fields.journal_export.is_some(),
            "spec.logging_config.enable_journal_export",
        ),
        (fields.priority.is_some(), "spec.logging_config.priority"),
        (!fields.units.is_empty(), "spec.logging_config.units"),
    ];
    flags
        .into_iter()
        .filter(|(given, _)| *given)
        .map(|(_, path)| path.to_owned())
        .collect()
}

/// The complete UpdateDeviceRequest for `args`.
pub fn update_request(args: &UpdateArgs) -> Result<UpdateDeviceRequest, Error> {
    let device = device_from_fields(args.name.to_string(), &args.fields)?;
    let update_mask = match &args.update_mask {
        Some(paths) => field_mask(paths).ok_or_else(|| {
            Error::Usage("--update-mask needs at least one field path".to_owned())
        })?,
        None => field_mask(&update_mask_from_fields(&args.fields)).ok_or_else(|| {
            Error::Usage(
                "nothing to update: give at least one field flag (e.g. --display-name, \
                 --label, --priority) or --update-mask"
                    .to_owned(),
            )
        })?,
    };
    Ok(UpdateDeviceRequest {
        device: Some(device),
        update_mask: Some(update_mask),
        expected_revision: args.expected_revision.unwrap_or(0),
        allow_missing: args.allow_missing,
        request_id: args.request_id.clone().unwrap_or_default(),
    })
}

/// The complete CreateDeviceRequest for `args`.
pub fn create_request(args: &CreateArgs) -> Result<CreateDeviceRequest, Error> {
    // The name is given by parent + device_id; the device's own name is left
    // empty, as the server ignores it on create.
    let device = device_from_fields(String::new(), &args.fields)?;
    Ok(CreateDeviceRequest {
        parent: args.name.parent(),
        device_id: args.name.device_id().to_owned(),
        device: Some(device),
        request_id: args.request_id.clone().unwrap_or_default(),
    })
}

// ----- commands -----

fn print_device(device: &Device, out: Output) -> Result<(), Error> {
    match out {
        Output::Table => output::write_stdout(&output::device_table(std::slice::from_ref(device)))?,
        out => output::print_document(device, out)?,
    }
    Ok(())
}

async fn create(conn: &Connection, args: CreateArgs, out: Output) -> Result<(), Error> {
    let request = create_request(&args)?;
    let mut client = connect(conn).await?;
    let device = client.create_device(request).await?.into_inner();
    print_device(&device, out)
}

async fn get(conn: &Connection, args: GetArgs, out: Output) -> Result<(), Error> {
    let request = GetDeviceRequest {
        name: args.name.to_string(),
        field_mask: field_mask(&args.mask),
        min_revision: args.min_revision.unwrap_or(0),
    };
    let mut client = connect(conn).await?;
    let device = client.get_device(request).await?.into_inner();
    print_device(&device, out)
}

async fn list(conn: &Connection, args: ListArgs, out: Output) -> Result<(), Error> {
    let mut request = ListDevicesRequest {
        parent: args.parent.to_string(),
        page_size: args.page.page_size.unwrap_or(0),
        page_token: args.page.page_token.clone().unwrap_or_default(),
        filter: args.page.filter.clone().unwrap_or_default(),
        order_by: args.page.order_by.clone().unwrap_or_default(),
        field_mask: field_mask(&args.page.mask),
        min_revision: args.page.min_revision.unwrap_or(0),
    };
    let mut client = connect(conn).await?;
    let mut all = ListDevicesResponse::default();
    loop {
        let page = client.list_devices(request.clone()).await?.into_inner();
        all.devices.extend(page.devices);
        all.revision = all.revision.max(page.revision);
        all.next_page_token = page.next_page_token;
        if !args.page.all || all.next_page_token.is_empty() {
            break;
        }
        if all.next_page_token == request.page_token {
            return Err(Error::Other(format!(
                "the server returned page token '{}' twice; stopping",
                all.next_page_token
            )));
        }
        request.page_token = all.next_page_token.clone();
        // Later pages must not be read from an older state than earlier ones.
        request.min_revision = request.min_revision.max(all.revision);
    }
    match out {
        Output::Table => {
            output::write_stdout(&output::device_table(&all.devices))?;
            if !all.next_page_token.is_empty() {
                stderr_line(&format!(
                    "more devices: continue with --page-token '{}', or pass --all",
                    all.next_page_token
                ));
            }
        }
        out => output::print_document(&all, out)?,
    }
    Ok(())
}

async fn update(conn: &Connection, args: UpdateArgs, out: Output) -> Result<(), Error> {
    let request = update_request(&args)?;
    let mut client = connect(conn).await?;
    let device = client.update_device(request).await?.into_inner();
    print_device(&device, out)
}

async fn delete(conn: &Connection, args: DeleteArgs, out: Output) -> Result<(), Error> {
    let name = args.name.to_string();
    let request = DeleteDeviceRequest {
        name: name.clone(),
        expected_revision: args.expected_revision.unwrap_or(0),
        allow_missing: args.allow_missing,
        request_id: args.request_id.unwrap_or_default(),
    };
    let mut client = connect(conn).await?;
    client.delete_device(request).await?;
    match out {
        Output::Table => output::write_line(&format!("deleted {name}"))?,
        // google.protobuf.Empty in the proto3 JSON mapping.
        Output::Json | Output::Yaml => output::write_line("{}")?,
    }
    Ok(())
}

/// The common shape of WatchDeviceResponse and WatchDevicesResponse.
trait WatchResponse: ReflectMessage + Sized {
    fn changes(&self) -> &[DeviceChange];
    fn is_current(&self) -> bool;
    fn revision(&self) -> i64;
}

impl WatchResponse for WatchDeviceResponse {
    fn changes(&self) -> &[DeviceChange] {
        &self.changes
    }
    fn is_current(&self) -> bool {
        self.is_current
    }
    fn revision(&self) -> i64 {
        self.revision
    }
}

impl WatchResponse for WatchDevicesResponse {
    fn changes(&self) -> &[DeviceChange] {
        &self.changes
    }
    fn is_current(&self) -> bool {
        self.is_current
    }
    fn revision(&self) -> i64 {
        self.revision
    }
}

/// Completes on Ctrl-C; never, if the signal handler cannot be installed.
async fn ctrl_c() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

async fn watch(conn: &Connection, args: WatchArgs, out: Output) -> Result<(), Error> {
    let field_mask = field_mask(&args.mask);
    let resume_revision = args.resume_revision.unwrap_or(0);
    let stream = async {
        let mut client = connect(conn).await?;
        match (&args.name, &args.parent) {
            (Some(name), _) => {
                let request = WatchDeviceRequest {
                    name: name.to_string(),
                    field_mask,
                    resume_revision,
                };
                let stream = client.watch_device(request).await?.into_inner();
                print_watch(stream, out, resume_revision).await
            }
            (None, Some(parent)) => {
                let request = WatchDevicesRequest {
                    parent: parent.to_string(),
                    filter: args.filter.clone().unwrap_or_default(),
                    field_mask,
                    resume_revision,
                };
                let stream = client.watch_devices(request).await?.into_inner();
                print_watch(stream, out, resume_revision).await
            }
            // clap requires one of NAME and --parent.
            (None, None) => Err(Error::Usage("give a device NAME or --parent".to_owned())),
        }
    };
    run_until_ctrl_c(stream).await
}

/// Runs `work`, or returns Ok as soon as the user presses Ctrl-C.
async fn run_until_ctrl_c(work: impl Future<Output = Result<(), Error>>) -> Result<(), Error> {
    tokio::select! {
        result = work => result,
        () = ctrl_c() => Ok(()),
    }
}

async fn print_watch<R: WatchResponse>(
    mut stream: Streaming<R>,
    out: Output,
    resume_revision: i64,
) -> Result<(), Error> {
    let mut last_revision = resume_revision;
    if out == Output::Table {
        output::write_line(&output::watch_header())?;
    }
    loop {
        let message = match stream.message().await {
            Ok(Some(message)) => message,
            Ok(None) => return Ok(()),
            Err(status) => {
                let hint = (last_revision > 0).then(|| {
                    format!("the watch can be resumed with --resume-revision {last_revision}")
                });
                return Err(Error::Status { status, hint });
            }
        };
        match out {
            Output::Table => {
                for change in message.changes() {
                    output::write_line(&output::watch_change_line(change))?;
                }
                if message.is_current() {
                    output::write_line(&output::watch_current_line(message.revision()))?;
                }
            }
            // One compact JSON document per line (or a YAML document each),
            // so consumers can read it as a stream.
            out => output::print_stream_item(&message, out)?,
        }
        last_revision = last_revision.max(message.revision());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::DeviceName;

    fn name() -> DeviceName {
        "projects/p/regions/r/devices/d"
            .parse()
            .expect("valid name")
    }

    fn label(s: &str) -> Label {
        s.parse().expect("valid label")
    }

    fn update_args(fields: DeviceFields) -> UpdateArgs {
        UpdateArgs {
            name: name(),
            fields,
            update_mask: None,
            expected_revision: None,
            allow_missing: false,
            request_id: None,
        }
    }

    #[test]
    fn update_mask_follows_the_flags_given() {
        assert!(update_mask_from_fields(&DeviceFields::default()).is_empty());
        let fields = DeviceFields {
            priority: Some(3),
            labels: vec![label("site=berlin")],
            ..Default::default()
        };
        assert_eq!(
            update_mask_from_fields(&fields),
            ["metadata.labels", "spec.logging_config.priority"]
        );
        let fields = DeviceFields {
            display_name: Some("x".into()),
            description: Some(String::new()),
            labels: vec![label("a=b")],
            priority: Some(0),
            journal_export: Some(false),
            units: vec!["sshd.service".into()],
        };
        assert_eq!(
            update_mask_from_fields(&fields),
            [
                "display_name",
                "description",
                "metadata.labels",
                "spec.logging_config.enable_journal_export",
                "spec.logging_config.priority",
                "spec.logging_config.units",
            ]
        );
    }

    #[test]
    fn update_request_uses_flags_or_explicit_mask() {
        let mut args = update_args(DeviceFields {
            priority: Some(6),
            ..Default::default()
        });
        args.expected_revision = Some(12);
        let request = update_request(&args).expect("valid");
        assert_eq!(
            request.update_mask.expect("mask").paths,
            ["spec.logging_config.priority"]
        );
        assert_eq!(request.expected_revision, 12);
        let device = request.device.expect("device");
        assert_eq!(device.name, "projects/p/regions/r/devices/d");
        let priority = device
            .spec
            .and_then(|s| s.logging_config)
            .map(|l| l.priority);
        assert_eq!(priority, Some(6));

        // An explicit mask wins, e.g. to clear all labels.
        let mut args = update_args(DeviceFields::default());
        args.update_mask = Some(vec!["metadata.labels".into(), " ".into()]);
        let request = update_request(&args).expect("valid");
        assert_eq!(
            request.update_mask.expect("mask").paths,
            ["metadata.labels"]
        );
        assert!(request.device.expect("device").metadata.is_none());
    }

    #[test]
    fn update_without_anything_to_update_is_a_usage_error() {
        let args = update_args(DeviceFields::default());
        assert!(matches!(update_request(&args), Err(Error::Usage(_))));
        let mut args = update_args(DeviceFields::default());
        args.update_mask = Some(vec![String::new()]);
        assert!(matches!(update_request(&args), Err(Error::Usage(_))));
    }

    #[test]
    fn create_request_splits_the_name() {
        let args = CreateArgs {
            name: "projects/acme/regions/eu/devices/gw-1"
                .parse()
                .expect("valid name"),
            fields: DeviceFields {
                display_name: Some("Gateway".into()),
                labels: vec![label("site=berlin"), label("env=prod")],
                journal_export: Some(true),
                ..Default::default()
            },
            request_id: Some("req-1".into()),
        };
        let request = create_request(&args).expect("valid");
        assert_eq!(request.parent, "projects/acme/regions/eu");
        assert_eq!(request.device_id, "gw-1");
        assert_eq!(request.request_id, "req-1");
        let device = request.device.expect("device");
        assert_eq!(device.display_name, "Gateway");
        let labels = device.metadata.expect("metadata").labels;
        assert_eq!(labels.get("site").map(String::as_str), Some("berlin"));
        assert_eq!(labels.get("env").map(String::as_str), Some("prod"));
        let logging = device
            .spec
            .and_then(|s| s.logging_config)
            .expect("logging config");
        assert!(logging.enable_journal_export);
    }

    #[test]
    fn duplicate_labels_are_rejected() {
        let labels = [label("a=1"), label("a=2")];
        assert!(matches!(label_map(&labels), Err(Error::Usage(_))));
    }

    #[test]
    fn field_mask_drops_empty_paths() {
        assert_eq!(field_mask(&[]), None);
        assert_eq!(field_mask(&[" ".into()]), None);
        assert_eq!(
            field_mask(&["name".into(), " metadata.labels ".into()]).map(|m| m.paths),
            Some(vec!["name".to_owned(), "metadata.labels".to_owned()])
        );
    }
}
