//! `fleetctl devices …`: typed flags for Devices v1 and nothing else. Each
//! command turns its flags into the arguments of the generic verb of the
//! same name (`--priority 6` is `--set spec.loggingConfig.priority=6`) and
//! runs that verb, so requests, calls, output and errors have one
//! implementation, in `generic.rs`.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use fleetlog_proto::catalog::{CATALOG, ResourceType};
use serde_json::Value as Json;

use crate::cli::{
    BodyArgs, CreateArgs, CreateResourceArgs, DeleteArgs, DeleteResourceArgs, DeviceFields,
    DevicesCommand, GetArgs, GetResourceArgs, ListArgs, ListResourceArgs, UpdateArgs,
    UpdateResourceArgs, WatchArgs, WatchResourceArgs,
};
use crate::error::Error;
use crate::generic::{self, Ctx};
use crate::names;

/// The API version the typed flags are fields of: `devices` speaks it
/// whatever `--api-version` says (v1alpha2 names and fields differ).
const VERSION: &str = "v1";

/// The collection of the resource type, as the catalog knows it.
const PLURAL: &str = "devices";

/// The Device type of [`VERSION`], from the catalog.
fn device_type() -> Result<&'static Arc<ResourceType>, String> {
    CATALOG
        .resource_by_plural(VERSION, PLURAL)
        .ok_or_else(|| format!("the API has no {VERSION} {PLURAL}"))
}

/// clap's parser of a device name: the catalog's pattern, fleetd's ID rules.
pub fn device_name(text: &str) -> Result<String, String> {
    names::check(&device_type()?.pattern, text)?;
    Ok(text.to_owned())
}

/// clap's parser of the parent of devices.
pub fn device_parent(text: &str) -> Result<String, String> {
    names::check(&device_type()?.pattern.parent(), text)?;
    Ok(text.to_owned())
}

/// The help of a device name argument, with the catalog's pattern.
pub fn name_help() -> String {
    match device_type() {
        Ok(device) => format!("Full name: {}.", device.pattern),
        Err(missing) => missing,
    }
}

/// The help of a parent argument, with the catalog's pattern.
pub fn parent_help() -> String {
    match device_type() {
        Ok(device) => format!(
            "The devices under this parent: {}.",
            device.pattern.parent()
        ),
        Err(missing) => missing,
    }
}

/// The collection of the devices under `parent`.
fn collection(parent: &str) -> Result<String, Error> {
    let device = device_type().map_err(Error::Other)?;
    Ok(format!("{parent}/{}", device.plural))
}

/// Runs one `devices` subcommand as its generic verb in [`VERSION`].
pub async fn run(ctx: &Ctx, command: DevicesCommand) -> Result<(), Error> {
    let ctx = Ctx {
        conn: ctx.conn.clone(),
        out: ctx.out,
        version: VERSION.to_owned(),
    };
    match command {
        DevicesCommand::Create(args) => generic::create(&ctx, create(args)?).await,
        DevicesCommand::Get(args) => generic::get(&ctx, get(args)).await,
        DevicesCommand::List(args) => generic::list(&ctx, list(args)?).await,
        DevicesCommand::Update(args) => generic::update(&ctx, update(args)?).await,
        DevicesCommand::Delete(args) => generic::delete(&ctx, delete(args)).await,
        DevicesCommand::Watch(args) => generic::watch(&ctx, watch(args)?).await,
    }
}

// ----- flags to generic arguments (pure) -----

/// A `key=value` label from `--label`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    pub key: String,
    pub value: String,
}

impl FromStr for Label {
    type Err = LabelError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let Some((key, value)) = s.split_once('=') else {
            return Err(LabelError(format!(
                "'{s}' is not of the form key=value (missing '=')"
            )));
        };
        let key = key.trim();
        if key.is_empty() {
            return Err(LabelError(format!("'{s}' has an empty label key")));
        }
        if key.chars().any(char::is_whitespace) {
            return Err(LabelError(format!(
                "label key '{key}' must not contain whitespace"
            )));
        }
        Ok(Label {
            key: key.to_owned(),
            value: value.to_owned(),
        })
    }
}

/// A malformed `--label` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelError(String);

impl fmt::Display for LabelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LabelError {}

/// The labels as one JSON object; giving one key twice is a usage error.
fn label_object(labels: &[Label]) -> Result<Json, Error> {
    let mut map = BTreeMap::new();
    for label in labels {
        if map.insert(&label.key, &label.value).is_some() {
            return Err(Error::Usage(format!(
                "label '{}' is given more than once",
                label.key
            )));
        }
    }
    Ok(serde_json::json!(map))
}

/// The `--set` assignments of the field flags given, in field order. Labels
/// and units are set whole (a JSON value), so on update they replace what
/// was there, as their help says, and keys need no quoting.
fn body(fields: &DeviceFields) -> Result<BodyArgs, Error> {
    let mut set = Vec::new();
    let mut put = |path: &str, value: String| set.push(format!("{path}={value}"));
    if let Some(display_name) = &fields.display_name {
        put("displayName", display_name.clone());
    }
    if let Some(description) = &fields.description {
        put("description", description.clone());
    }
    if !fields.labels.is_empty() {
        put("metadata.labels", label_object(&fields.labels)?.to_string());
    }
    if let Some(export) = fields.journal_export {
        put("spec.loggingConfig.enableJournalExport", export.to_string());
    }
    if let Some(priority) = fields.priority {
        put("spec.loggingConfig.priority", priority.to_string());
    }
    if !fields.units.is_empty() {
        put(
            "spec.loggingConfig.units",
            Json::from(fields.units.clone()).to_string(),
        );
    }
    Ok(BodyArgs { file: None, set })
}

fn create(args: CreateArgs) -> Result<CreateResourceArgs, Error> {
    Ok(CreateResourceArgs {
        name: args.name,
        body: body(&args.fields)?,
        request: args.request,
    })
}

fn get(args: GetArgs) -> GetResourceArgs {
    GetResourceArgs {
        names: vec![args.name],
        read: args.read,
        watch: false,
        resume_revision: None,
    }
}

fn list(args: ListArgs) -> Result<ListResourceArgs, Error> {
    Ok(ListResourceArgs {
        collection: collection(&args.parent)?,
        page: args.page,
        watch: false,
        resume_revision: None,
    })
}

fn update(args: UpdateArgs) -> Result<UpdateResourceArgs, Error> {
    let body = body(&args.fields)?;
    // The generic verb would suggest --set and -f, which `devices` lacks.
    if body.set.is_empty() && args.options.update_mask.is_none() {
        return Err(Error::Usage(
            "nothing to update: give at least one field flag (e.g. --display-name, --label, \
             --priority) or --update-mask"
                .to_owned(),
        ));
    }
    Ok(UpdateResourceArgs {
        name: args.name,
        body,
        options: args.options,
    })
}

fn delete(args: DeleteArgs) -> DeleteResourceArgs {
    DeleteResourceArgs {
        names: vec![args.name],
        write: args.write,
    }
}

fn watch(args: WatchArgs) -> Result<WatchResourceArgs, Error> {
    let target = match (args.name, args.parent) {
        (Some(name), _) => name,
        (None, Some(parent)) => collection(&parent)?,
        // clap requires one of NAME and --parent.
        (None, None) => return Err(Error::Usage("give a device NAME or --parent".to_owned())),
    };
    Ok(WatchResourceArgs {
        target,
        options: args.options,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command, UpdateOptions};
    use clap::Parser;
    use prost_reflect::{DynamicMessage, ReflectMessage, Value};

    const NAME: &str = "projects/acme/regions/eu/devices/gw-1";

    fn parse(args: &[&str]) -> DevicesCommand {
        let cli = Cli::try_parse_from(["fleetctl", "devices"].iter().chain(args))
            .unwrap_or_else(|err| panic!("{args:?}: {err}"));
        match cli.command {
            Command::Devices(command) => command,
            other => panic!("not a devices command: {other:?}"),
        }
    }

    fn device() -> Arc<ResourceType> {
        Arc::clone(device_type().expect("the catalog has v1 devices"))
    }

    fn to_json(request: &DynamicMessage) -> Json {
        serde_json::to_value(request).expect("json")
    }

    fn update_mask(request: &DynamicMessage) -> Vec<String> {
        let Some(Value::Message(mask)) = request
            .get_field_by_name("update_mask")
            .map(|m| m.into_owned())
        else {
            return Vec::new();
        };
        let paths = mask.get_field_by_name("paths").map(|p| p.into_owned());
        match paths {
            Some(Value::List(paths)) => paths
                .iter()
                .filter_map(|p| p.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        }
    }

    #[test]
    fn create_flags_become_the_generic_create_request() {
        let DevicesCommand::Create(args) = parse(&[
            "create",
            NAME,
            "--display-name",
            "Gateway = 1",
            "--label",
            "site=berlin",
            "--label",
            "app.io/tier=edge",
            "--priority",
            "6",
            "--journal-export",
            "--unit",
            "a,b.service",
            "--request-id",
            "req-1",
        ]) else {
            panic!("create")
        };
        let args = create(args).expect("valid");
        let (method, request) =
            generic::create_request(&device(), &args.name, &args).expect("a request");
        assert_eq!(method.name(), "CreateDevice");
        let json = to_json(&request);
        assert_eq!(json["parent"], "projects/acme/regions/eu");
        assert_eq!(json["deviceId"], "gw-1");
        assert_eq!(json["requestId"], "req-1");
        let device = &json["device"];
        assert_eq!(device["displayName"], "Gateway = 1");
        assert_eq!(device["metadata"]["labels"]["site"], "berlin");
        assert_eq!(device["metadata"]["labels"]["app.io/tier"], "edge");
        let logging = &device["spec"]["loggingConfig"];
        assert_eq!(logging["priority"], 6);
        assert_eq!(logging["enableJournalExport"], true);
        assert_eq!(logging["units"], serde_json::json!(["a,b.service"]));
    }

    #[test]
    fn update_flags_set_the_mask_of_the_fields_given() {
        let DevicesCommand::Update(args) = parse(&[
            "update",
            NAME,
            "--priority",
            "6",
            "--label",
            "site=paris",
            "--expected-revision",
            "12",
            "--allow-missing",
        ]) else {
            panic!("update")
        };
        let args = update(args).expect("valid");
        let (_, request) = generic::update_request(&device(), &args.name, &args).expect("valid");
        // Labels as a whole: the given labels replace all labels.
        assert_eq!(
            update_mask(&request),
            ["metadata.labels", "spec.logging_config.priority"]
        );
        let json = to_json(&request);
        assert_eq!(json["device"]["name"], NAME);
        assert_eq!(json["device"]["spec"]["loggingConfig"]["priority"], 6);
        assert_eq!(json["expectedRevision"], "12");
        assert_eq!(json["allowMissing"], true);

        // An explicit mask wins, e.g. to clear all labels.
        let DevicesCommand::Update(args) =
            parse(&["update", NAME, "--update-mask", "metadata.labels, "])
        else {
            panic!("update")
        };
        let args = update(args).expect("valid");
        let (_, request) = generic::update_request(&device(), &args.name, &args).expect("valid");
        assert_eq!(update_mask(&request), ["metadata.labels"]);
        assert!(to_json(&request)["device"].get("metadata").is_none());
    }

    #[test]
    fn every_field_flag_is_a_v1_device_field() {
        let fields = DeviceFields {
            display_name: Some("x".into()),
            description: Some(String::new()),
            labels: vec!["a=b".parse().expect("label")],
            priority: Some(0),
            journal_export: Some(false),
            units: vec!["sshd.service".into()],
        };
        let args = UpdateResourceArgs {
            name: NAME.into(),
            body: body(&fields).expect("valid"),
            options: UpdateOptions::default(),
        };
        let (_, request) = generic::update_request(&device(), NAME, &args).expect("valid");
        assert_eq!(
            update_mask(&request),
            [
                "display_name",
                "description",
                "metadata.labels",
                "spec.logging_config.enable_journal_export",
                "spec.logging_config.priority",
                "spec.logging_config.units",
            ]
        );
        assert_eq!(request.descriptor().name(), "UpdateDeviceRequest");
    }

    #[test]
    fn update_without_anything_to_update_is_a_usage_error() {
        let DevicesCommand::Update(args) = parse(&["update", NAME]) else {
            panic!("update")
        };
        let Err(Error::Usage(message)) = update(args) else {
            panic!("nothing to update")
        };
        assert!(message.contains("--priority"), "{message}");
        // An empty explicit mask: the generic verb refuses it.
        let DevicesCommand::Update(args) = parse(&["update", NAME, "--update-mask", " "]) else {
            panic!("update")
        };
        let args = update(args).expect("a mask was given");
        assert!(matches!(
            generic::update_request(&device(), NAME, &args),
            Err(Error::Usage(_))
        ));
    }

    #[test]
    fn duplicate_labels_are_a_usage_error() {
        let DevicesCommand::Create(args) =
            parse(&["create", NAME, "--label", "a=1", "--label", "a=2"])
        else {
            panic!("create")
        };
        assert!(matches!(create(args), Err(Error::Usage(_))));
    }

    #[test]
    fn reads_address_the_name_or_the_collection() {
        let DevicesCommand::List(args) = parse(&["list", "projects/acme/regions/eu", "--all"])
        else {
            panic!("list")
        };
        let args = list(args).expect("valid");
        assert_eq!(args.collection, "projects/acme/regions/eu/devices");
        assert!(args.page.all && !args.watch);
        let (resource, parent) = generic::collection_at(VERSION, &args.collection).expect("ok");
        assert_eq!(
            (resource.plural.as_str(), parent.as_str()),
            (PLURAL, "projects/acme/regions/eu")
        );

        let DevicesCommand::Watch(args) = parse(&["watch", "--parent", "projects/acme/regions/eu"])
        else {
            panic!("watch")
        };
        assert_eq!(
            watch(args).expect("valid").target,
            "projects/acme/regions/eu/devices"
        );
        let DevicesCommand::Watch(args) = parse(&["watch", NAME, "--resume-revision", "3"]) else {
            panic!("watch")
        };
        let args = watch(args).expect("valid");
        assert_eq!(
            (args.target.as_str(), args.options.resume_revision),
            (NAME, Some(3))
        );

        let DevicesCommand::Get(args) = parse(&["get", NAME, "--mask", "name"]) else {
            panic!("get")
        };
        let args = get(args);
        assert_eq!(
            (args.names.as_slice(), args.read.mask.mask.as_slice()),
            ([NAME.to_owned()].as_slice(), ["name".to_owned()].as_slice())
        );
        let DevicesCommand::Delete(args) = parse(&["delete", NAME, "--allow-missing"]) else {
            panic!("delete")
        };
        let args = delete(args);
        assert!(args.write.allow_missing && args.names == [NAME]);
    }

    #[test]
    fn labels_parse() {
        let l: Label = "site=berlin".parse().expect("valid label");
        assert_eq!((l.key.as_str(), l.value.as_str()), ("site", "berlin"));
        // Only the first '=' separates; the value may be empty or contain '='.
        let l: Label = "expr=a=b".parse().expect("valid label");
        assert_eq!((l.key.as_str(), l.value.as_str()), ("expr", "a=b"));
        let l: Label = "empty=".parse().expect("valid label");
        assert_eq!((l.key.as_str(), l.value.as_str()), ("empty", ""));
    }

    #[test]
    fn labels_reject_malformed() {
        assert!("site".parse::<Label>().is_err());
        assert!("=berlin".parse::<Label>().is_err());
        assert!("a b=c".parse::<Label>().is_err());
    }
}
