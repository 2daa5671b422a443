//! The OpenAPI 3 document of the REST gateway, generated from the catalog
//! (and so from the proto descriptors): every path the gateway answers,
//! with every message as a schema in its proto3 JSON form.
//!
//! The schemas say what the server enforces, from the same sources the
//! server checks with, so generated clients and fuzzers send requests that
//! can succeed: IDs and names from the typed names' alphabets
//! (`fleetlog_events::name`), ranges and required enums from the fields'
//! `FieldRules` (`fleetlog_proto::rules`), the standard request fields from
//! the engine's own limits, and the proto3 JSON forms of 64-bit integers,
//! durations and timestamps.

use std::collections::{BTreeMap, VecDeque};
use std::sync::LazyLock;

use fleetlog_events::envelope::MAX_COMMAND_ID_LEN;
use fleetlog_events::name::{
    BOUNDED_DOMAIN_ID_REGEX, DOMAIN_ID_REGEX, ID_REGEX, MAX_DOMAIN_ID_LEN, MAX_ID_LEN,
};
use fleetlog_proto::catalog::{CATALOG, Catalog, NamePattern, ResourceType};
use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor, MethodDescriptor};
use serde_json::{Map, Value as Json, json};

use crate::engine::MAX_PAGE_SIZE;

/// A non-negative int64 in its proto3 JSON form (a decimal string); 18
/// digits always fit.
const REVISION_PATTERN: &str = "^[0-9]{1,18}$";
/// Any int64 as proto3 JSON writes it.
const INT64_PATTERN: &str = "^-?[0-9]{1,18}$";
/// Any uint64 as proto3 JSON writes it.
const UINT64_PATTERN: &str = "^[0-9]{1,19}$";
/// A `google.protobuf.Duration` in proto3 JSON: seconds with up to nine
/// fractional digits and an `s`.
const DURATION_PATTERN: &str = "^-?[0-9]{1,11}(\\.[0-9]{1,9})?s$";

/// The document, built once.
pub static DOCUMENT: LazyLock<Json> = LazyLock::new(|| document(&CATALOG));

/// Builds the document for `catalog`.
pub fn document(catalog: &Catalog) -> Json {
    let mut builder = Builder {
        catalog,
        paths: Map::new(),
        referenced: VecDeque::new(),
    };
    for resource in &catalog.resources {
        builder.resource(resource);
    }
    for action in &catalog.actions {
        let path = format!("/{}/{}:{}", action.version, action.target, action.verb);
        let operation =
            builder.operation(&action.method, &action.target, OperationBody::Whole, None);
        builder.add(path, "post", operation);
    }
    let schemas = builder.schemas();
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Fleetlog",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "REST/JSON for every Fleetlog service and API version (docs/rest.md). JSON is the proto3 JSON mapping; watches and streaming actions answer as server-sent events.",
        },
        "security": [{"bearer": []}],
        "paths": builder.paths,
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "A Fleetlog key: `Authorization: Bearer <key>`."},
            },
            "schemas": schemas,
        },
    })
}

/// Where an operation's request fields come from besides path and query.
enum OperationBody {
    /// No body (GET, DELETE).
    None,
    /// The named field of the request is the body (Create, Update).
    Field(String),
    /// The whole request is the body (custom actions).
    Whole,
}

struct Builder<'a> {
    catalog: &'a Catalog,
    paths: Map<String, Json>,
    /// Messages referenced so far, to become schemas.
    referenced: VecDeque<MessageDescriptor>,
}

impl Builder<'_> {
    fn resource(&mut self, resource: &ResourceType) {
        let version = &resource.version;
        let name_path = format!("/{version}/{}", resource.pattern);
        let collection = resource.pattern.collection();
        let collection_path = format!("/{version}/{collection}");
        let m = &resource.methods;
        let body_field = resource.body_field();
        let on_name = [
            (&m.get, "get", OperationBody::None, &name_path),
            (
                &m.update,
                "patch",
                OperationBody::Field(body_field.clone()),
                &name_path,
            ),
            (&m.delete, "delete", OperationBody::None, &name_path),
        ];
        for (method, verb, body, path) in on_name {
            if let Some(method) = method {
                let op = self.operation(method, &resource.pattern, body, Some(resource));
                self.add(path.clone(), verb, op);
            }
        }
        if let Some(method) = &m.watch_one {
            let op = self.operation(
                method,
                &resource.pattern,
                OperationBody::None,
                Some(resource),
            );
            self.add(format!("{name_path}:watch"), "get", op);
        }
        for (method, verb, body, suffix) in [
            (&m.list, "get", OperationBody::None, ""),
            (&m.create, "post", OperationBody::Field(body_field), ""),
            (&m.batch_get, "get", OperationBody::None, ":batchGet"),
            (&m.watch_many, "get", OperationBody::None, ":watch"),
        ] {
            if let Some(method) = method {
                let op = self.operation(method, &collection, body, Some(resource));
                self.add(format!("{collection_path}{suffix}"), verb, op);
            }
        }
    }

    fn add(&mut self, path: String, verb: &str, operation: Json) {
        if let Json::Object(item) = self
            .paths
            .entry(path)
            .or_insert_with(|| Json::Object(Map::new()))
        {
            item.insert(verb.to_owned(), operation);
        }
    }

    /// One operation: path parameters from the pattern, the other request
    /// fields as query parameters or body. `resource` is the resource whose
    /// standard method this is (None for custom actions).
    fn operation(
        &mut self,
        method: &MethodDescriptor,
        path: &NamePattern,
        body: OperationBody,
        resource: Option<&ResourceType>,
    ) -> Json {
        let input = method.input();
        let mut parameters: Vec<Json> = path
            .variables()
            .map(|variable| {
                json!({"name": variable, "in": "path", "required": true, "schema": self.id_schema(variable)})
            })
            .collect();
        let path_fields = ["name", "parent"];
        let mut operation = Map::new();
        operation.insert("operationId".into(), json!(method.full_name()));
        operation.insert("tags".into(), json!([method.parent_service().full_name()]));
        operation.insert("summary".into(), json!(method.name()));
        match &body {
            OperationBody::Whole => {
                operation.insert(
                    "requestBody".into(),
                    json!({"required": false, "content": {"application/json": {"schema": self.schema_ref(&input)}}}),
                );
            }
            OperationBody::Field(field) => {
                if let Some(Kind::Message(message)) =
                    input.get_field_by_name(field).map(|f| f.kind())
                {
                    operation.insert(
                        "requestBody".into(),
                        json!({"required": true, "content": {"application/json": {"schema": self.schema_ref(&message)}}}),
                    );
                }
            }
            OperationBody::None => {}
        }
        if !matches!(body, OperationBody::Whole) {
            for field in input.fields() {
                let in_body = matches!(&body, OperationBody::Field(f) if f == field.name());
                if in_body || path_fields.contains(&field.name()) {
                    continue;
                }
                let (schema, required) = self.request_field_schema(&field, resource);
                parameters.push(json!({
                    "name": field.json_name(),
                    "in": "query",
                    "required": required,
                    "schema": schema,
                }));
            }
        }
        if !parameters.is_empty() {
            operation.insert("parameters".into(), Json::Array(parameters));
        }
        let answer = if method.is_server_streaming() {
            json!({
                "description": format!("Server-sent events; each event's data is a {} in JSON, its id the revision.", method.output().full_name()),
                "content": {"text/event-stream": {"schema": {"type": "string"}}},
            })
        } else {
            json!({
                "description": "OK",
                "content": {"application/json": {"schema": self.schema_ref(&method.output())}},
            })
        };
        operation.insert(
            "responses".into(),
            json!({
                "200": answer,
                "default": {
                    "description": "An error; the HTTP status follows the gRPC code.",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
                },
            }),
        );
        Json::Object(operation)
    }

    /// The schema of one ID in a path: the alphabet of the name types.
    fn id_schema(&self, variable: &str) -> Json {
        if self.catalog.is_domain_variable(variable) {
            json!({"type": "string", "pattern": format!("^{DOMAIN_ID_REGEX}$"), "maxLength": MAX_DOMAIN_ID_LEN})
        } else {
            json!({"type": "string", "pattern": format!("^{ID_REGEX}$"), "maxLength": MAX_ID_LEN})
        }
    }

    /// A whole name of `pattern` as a regular expression (its DNS-style
    /// IDs in the form that bounds their length itself).
    fn name_regex(&self, pattern: &NamePattern) -> String {
        let mut regex = String::from("^");
        for (i, segment) in pattern.to_string().split('/').enumerate() {
            if i > 0 {
                regex.push('/');
            }
            match segment.strip_prefix('{').and_then(|v| v.strip_suffix('}')) {
                Some(variable) if self.catalog.is_domain_variable(variable) => {
                    regex.push_str(BOUNDED_DOMAIN_ID_REGEX);
                }
                Some(_) => regex.push_str(ID_REGEX),
                None => regex.push_str(segment),
            }
        }
        regex.push('$');
        regex
    }

    /// A query parameter of a request. The standard methods' own fields
    /// carry the engine's limits (API.md); whether it is required.
    fn request_field_schema(
        &mut self,
        field: &FieldDescriptor,
        resource: Option<&ResourceType>,
    ) -> (Json, bool) {
        let standard = match field.name() {
            "page_size" => Some(
                json!({"type": "integer", "format": "int32", "minimum": 0, "maximum": MAX_PAGE_SIZE, "description": format!("Default 100; at most {MAX_PAGE_SIZE}.")}),
            ),
            "min_revision" | "expected_revision" | "resume_revision" => {
                Some(json!({"type": "string", "format": "int64", "pattern": REVISION_PATTERN}))
            }
            "request_id" => Some(json!({
                "type": "string",
                "pattern": format!("^[!-~]{{1,{MAX_COMMAND_ID_LEN}}}$"),
                "description": "A retry with the same id returns the first outcome.",
            })),
            _ => None,
        };
        if let Some(schema) = standard {
            return (schema, false);
        }
        if let Some(resource) = resource {
            if field.name() == resource.id_field() {
                let variable = resource.pattern.variables().last().unwrap_or_default();
                return (self.id_schema(variable), true);
            }
            if field.name() == "names" && field.is_list() {
                let items =
                    json!({"type": "string", "pattern": self.name_regex(&resource.pattern)});
                return (json!({"type": "array", "items": items}), false);
            }
        }
        (self.field_schema(field), false)
    }

    fn schema_ref(&mut self, message: &MessageDescriptor) -> Json {
        if let Some(inline) = well_known(message) {
            return inline;
        }
        self.referenced.push_back(message.clone());
        json!({"$ref": format!("#/components/schemas/{}", message.full_name())})
    }

    fn field_schema(&mut self, field: &FieldDescriptor) -> Json {
        if field.is_map() {
            if let Kind::Message(entry) = field.kind() {
                let value = entry.map_entry_value_field();
                return json!({"type": "object", "additionalProperties": self.single_schema(&value)});
            }
            return json!({"type": "object"});
        }
        let mut single = self.single_schema(field);
        apply_rules(field, &mut single);
        if field.is_list() {
            json!({"type": "array", "items": single})
        } else {
            single
        }
    }

    fn single_schema(&mut self, field: &FieldDescriptor) -> Json {
        match field.kind() {
            Kind::Bool => json!({"type": "boolean"}),
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
                json!({"type": "integer", "format": "int32"})
            }
            Kind::Uint32 | Kind::Fixed32 => {
                json!({"type": "integer", "format": "int64", "minimum": 0})
            }
            // proto3 JSON writes 64-bit integers as decimal strings.
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
                json!({"type": "string", "format": "int64", "pattern": INT64_PATTERN})
            }
            Kind::Uint64 | Kind::Fixed64 => {
                json!({"type": "string", "format": "uint64", "pattern": UINT64_PATTERN})
            }
            Kind::Float => json!({"type": "number", "format": "float"}),
            Kind::Double => json!({"type": "number", "format": "double"}),
            Kind::String => json!({"type": "string"}),
            Kind::Bytes => json!({"type": "string", "format": "byte"}),
            Kind::Enum(e) => {
                let values: Vec<String> = e.values().map(|v| v.name().to_owned()).collect();
                json!({"type": "string", "enum": values})
            }
            Kind::Message(message) => self.schema_ref(&message),
        }
    }

    /// Every referenced message (and what they reference) as a schema.
    fn schemas(&mut self) -> Map<String, Json> {
        let mut done: BTreeMap<String, Json> = BTreeMap::new();
        while let Some(message) = self.referenced.pop_front() {
            if done.contains_key(message.full_name()) {
                continue;
            }
            // Placeholder first: recursive messages end here.
            done.insert(message.full_name().to_owned(), Json::Null);
            let mut properties = Map::new();
            for field in message.fields() {
                properties.insert(field.json_name().to_owned(), self.field_schema(&field));
            }
            done.insert(
                message.full_name().to_owned(),
                json!({"type": "object", "properties": properties}),
            );
        }
        let mut schemas: Map<String, Json> = done.into_iter().collect();
        schemas.insert(
            "Error".into(),
            json!({
                "type": "object",
                "properties": {"error": {"type": "object", "properties": {
                    "code": {"type": "integer", "description": "The HTTP status."},
                    "status": {"type": "string", "description": "The gRPC code, e.g. NOT_FOUND."},
                    "message": {"type": "string"},
                }}},
            }),
        );
        schemas
    }
}

/// Narrows `schema` to what the field's `FieldRules` accept.
fn apply_rules(field: &FieldDescriptor, schema: &mut Json) {
    let Some(rules) = fleetlog_proto::rules::rules_of(field) else {
        return;
    };
    let Json::Object(schema) = schema else { return };
    let is_string = schema.get("type") == Some(&json!("string"));
    match (rules.minimum, is_string) {
        // A 64-bit integer is a string: a non-negative one has no sign.
        (Some(min), true) if min >= 0 => {
            schema.insert("pattern".into(), json!(REVISION_PATTERN));
        }
        (Some(min), false) => {
            schema.insert("minimum".into(), json!(min));
        }
        _ => {}
    }
    if let (Some(max), false) = (rules.maximum, is_string) {
        schema.insert("maximum".into(), json!(max));
    }
    if let Some(max) = rules.max_length {
        schema.insert("maxLength".into(), json!(max));
    }
    if rules.specified
        && let Some(Json::Array(values)) = schema.get_mut("enum")
        && let Kind::Enum(descriptor) = field.kind()
    {
        let zero = descriptor.get_value(0).map(|v| v.name().to_owned());
        values.retain(|v| v.as_str() != zero.as_deref());
    }
}

/// The JSON form of the well-known types, inline.
fn well_known(message: &MessageDescriptor) -> Option<Json> {
    Some(match message.full_name() {
        "google.protobuf.Timestamp" => json!({"type": "string", "format": "date-time"}),
        "google.protobuf.Duration" => {
            json!({"type": "string", "pattern": DURATION_PATTERN, "description": "Seconds with an `s` suffix, e.g. \"1.5s\"."})
        }
        "google.protobuf.FieldMask" => {
            json!({"type": "string", "description": "Comma-separated field paths."})
        }
        "google.protobuf.Empty" => json!({"type": "object"}),
        "google.protobuf.Struct" | "google.protobuf.Any" => json!({"type": "object"}),
        "google.protobuf.Value" => json!({}),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parameter(operation: &Json, name: &str) -> Json {
        operation["parameters"]
            .as_array()
            .and_then(|all| all.iter().find(|p| p["name"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("no parameter {name} in {operation}"))
    }

    #[test]
    fn schemas_say_what_the_server_enforces() {
        let paths = &DOCUMENT["paths"];
        let get = &paths["/v1/projects/{project}/regions/{region}/devices/{device}"]["get"];
        let id = format!("^{ID_REGEX}$");
        for variable in ["project", "region", "device"] {
            assert_eq!(parameter(get, variable)["schema"]["pattern"], id.as_str());
        }
        assert_eq!(
            parameter(get, "minRevision")["schema"]["pattern"],
            REVISION_PATTERN
        );
        let service = &paths["/v1/services/{service}/deployments/{deployment}"]["get"];
        assert_eq!(
            parameter(service, "service")["schema"]["pattern"],
            format!("^{DOMAIN_ID_REGEX}$").as_str()
        );
        assert_eq!(
            parameter(service, "deployment")["schema"]["pattern"],
            id.as_str()
        );

        let collection = &paths["/v1/projects/{project}/regions/{region}/devices"];
        let page_size = parameter(&collection["get"], "pageSize")["schema"].clone();
        assert_eq!(
            (page_size["minimum"].clone(), page_size["maximum"].clone()),
            (json!(0), json!(MAX_PAGE_SIZE))
        );
        let device_id = parameter(&collection["post"], "deviceId");
        assert_eq!(device_id["required"], true);
        assert_eq!(device_id["schema"]["pattern"], id.as_str());
        let request_id = parameter(&collection["post"], "requestId");
        assert_eq!(request_id["schema"]["pattern"], "^[!-~]{1,64}$");
        let batch = &paths["/v1/projects/{project}/regions/{region}/devices:batchGet"]["get"];
        assert_eq!(
            parameter(batch, "names")["schema"]["items"]["pattern"],
            format!("^projects/{ID_REGEX}/regions/{ID_REGEX}/devices/{ID_REGEX}$").as_str()
        );

        let schemas = &DOCUMENT["components"]["schemas"];
        let priority =
            &schemas["fleetlog.devices.v1.Device.Spec.LoggingConfig"]["properties"]["priority"];
        assert_eq!(
            (priority["minimum"].clone(), priority["maximum"].clone()),
            (json!(0), json!(7))
        );
        let old_priority =
            &schemas["fleetlog.devices.v1alpha2.Device.Spec"]["properties"]["logPriority"];
        assert_eq!(old_priority["maximum"], 7);
        assert_eq!(
            schemas["fleetlog.devices.v1.ProvisioningPolicy.Spec"]["properties"]["mode"]["enum"],
            json!(["UNATTENDED", "MANUAL_APPROVAL"]),
            "the unspecified mode is refused"
        );
        assert_eq!(
            schemas["fleetlog.devices.v1.ProvisioningApprovalRequest.Spec"]["properties"]["conclusion"]
                ["enum"][0],
            "CONCLUSION_NOT_SPECIFIED",
            "an unconcluded request is fine"
        );
        assert_eq!(
            schemas["fleetlog.api.v1.Metadata"]["properties"]["revision"]["pattern"],
            INT64_PATTERN
        );
        assert_eq!(
            schemas["fleetlog.meta.v1.Deployment.UpgradeState"]["properties"]["switchPause"]["pattern"],
            DURATION_PATTERN
        );
    }

    #[test]
    fn every_standard_method_and_action_has_a_path() {
        let doc = &*DOCUMENT;
        let paths = doc["paths"].as_object().expect("paths");
        for (path, verbs) in [
            (
                "/v1/projects/{project}/regions/{region}/devices/{device}",
                &["get", "patch", "delete"][..],
            ),
            (
                "/v1/projects/{project}/regions/{region}/devices",
                &["get", "post"],
            ),
            (
                "/v1/projects/{project}/regions/{region}/devices:batchGet",
                &["get"],
            ),
            (
                "/v1/projects/{project}/regions/{region}/devices:watch",
                &["get"],
            ),
            (
                "/v1/projects/{project}/regions/{region}/devices/{device}:watch",
                &["get"],
            ),
            (
                "/v1alpha2/projects/{project}/devices/{device}",
                &["get", "patch", "delete"],
            ),
            ("/v1/regions/{region}", &["get"]),
            (
                "/v1/services/{service}/deployments/{deployment}:beginUpgrade",
                &["post"],
            ),
            (
                "/v1/projects/{project}/serviceAccounts/{service_account}/keys/{key}:deleteServiceAccountKey",
                &["post"],
            ),
        ] {
            for verb in verbs {
                assert!(paths[path][verb].is_object(), "{verb} {path}");
            }
        }
        let schemas = doc["components"]["schemas"].as_object().expect("schemas");
        let device = &schemas["fleetlog.devices.v1.Device"]["properties"];
        assert_eq!(device["displayName"]["type"], "string");
        assert_eq!(
            schemas["fleetlog.api.v1.Metadata"]["properties"]["revision"]["format"],
            "int64"
        );
        for (_, item) in paths {
            for (_, op) in item.as_object().expect("path item") {
                let Some(Json::String(schema)) =
                    op.pointer("/responses/200/content/application~1json/schema/$ref")
                else {
                    continue;
                };
                let name = schema.trim_start_matches("#/components/schemas/");
                assert!(schemas.contains_key(name), "{name} is defined");
            }
        }
    }
}
