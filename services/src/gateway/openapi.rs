//! The OpenAPI 3 document of the REST gateway, generated from the catalog
//! (and so from the proto descriptors): every path the gateway answers,
//! with every message as a schema in its proto3 JSON form.

use std::collections::{BTreeMap, VecDeque};
use std::sync::LazyLock;

use fleetlog_proto::catalog::{CATALOG, Catalog, NamePattern, ResourceType};
use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor, MethodDescriptor};
use serde_json::{Map, Value as Json, json};

/// The document, built once.
pub static DOCUMENT: LazyLock<Json> = LazyLock::new(|| document(&CATALOG));

/// Builds the document for `catalog`.
pub fn document(catalog: &Catalog) -> Json {
    let mut builder = Builder::default();
    for resource in &catalog.resources {
        builder.resource(resource);
    }
    for action in &catalog.actions {
        let path = format!("/{}/{}:{}", action.version, action.target, action.verb);
        let operation = builder.operation(&action.method, &action.target, OperationBody::Whole);
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

#[derive(Default)]
struct Builder {
    paths: Map<String, Json>,
    /// Messages referenced so far, to become schemas.
    referenced: VecDeque<MessageDescriptor>,
}

impl Builder {
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
                let op = self.operation(method, &resource.pattern, body);
                self.add(path.clone(), verb, op);
            }
        }
        if let Some(method) = &m.watch_one {
            let op = self.operation(method, &resource.pattern, OperationBody::None);
            self.add(format!("{name_path}:watch"), "get", op);
        }
        for (method, verb, body, suffix) in [
            (&m.list, "get", OperationBody::None, ""),
            (&m.create, "post", OperationBody::Field(body_field), ""),
            (&m.batch_get, "get", OperationBody::None, ":batchGet"),
            (&m.watch_many, "get", OperationBody::None, ":watch"),
        ] {
            if let Some(method) = method {
                let op = self.operation(method, &collection, body);
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
    /// fields as query parameters or body.
    fn operation(
        &mut self,
        method: &MethodDescriptor,
        path: &NamePattern,
        body: OperationBody,
    ) -> Json {
        let input = method.input();
        let mut parameters: Vec<Json> = path
            .variables()
            .map(|variable| {
                json!({"name": variable, "in": "path", "required": true, "schema": {"type": "string"}})
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
                parameters.push(json!({
                    "name": field.json_name(),
                    "in": "query",
                    "required": false,
                    "schema": self.field_schema(&field),
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
        let single = self.single_schema(field);
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
            // proto3 JSON writes 64-bit integers as strings.
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 | Kind::Uint64 | Kind::Fixed64 => {
                json!({"type": "string", "format": "int64"})
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

/// The JSON form of the well-known types, inline.
fn well_known(message: &MessageDescriptor) -> Option<Json> {
    Some(match message.full_name() {
        "google.protobuf.Timestamp" => json!({"type": "string", "format": "date-time"}),
        "google.protobuf.Duration" => {
            json!({"type": "string", "description": "Seconds with an `s` suffix, e.g. \"1.5s\"."})
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
