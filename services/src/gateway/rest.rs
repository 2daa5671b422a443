//! REST/JSON and server-sent events for every method the catalog lists,
//! answered by calling the gRPC service in process (docs/rest.md).
//!
//! A REST call becomes the gRPC request message (path, query and body
//! merged into its proto3 JSON form), goes through the same tonic service
//! as a gRPC call — authentication, authorization, validation and errors
//! included — and its answer is written back as JSON or as events.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use fleetlog_proto::catalog::{Action, Addressed, CATALOG, Catalog, ResourceType, Standard};
use fleetlog_proto::codec::{DynamicCodec, method_path};
use futures::{Stream, StreamExt};
use prost_reflect::{
    DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, MethodDescriptor, ReflectMessage,
};
use serde_json::{Map, Value as Json};
use tonic::Status;
use tonic::metadata::MetadataValue;

use super::status::{error_body, error_response};

/// The query parameter that may carry the key for clients that cannot set
/// headers (the browser's `EventSource`).
const ACCESS_TOKEN: &str = "access_token";

/// The in-process gRPC service the gateway calls: fleetd's routes behind the
/// same layers (metrics) as the gRPC listener's.
type GrpcService = tower::util::BoxCloneSyncService<
    axum::http::Request<tonic::body::Body>,
    axum::http::Response<tonic::body::Body>,
    Infallible,
>;

/// Serves REST by calling the gRPC service in process.
#[derive(Clone)]
pub struct Gateway {
    grpc: GrpcService,
    catalog: &'static Catalog,
}

/// One REST request, resolved to the gRPC method it calls.
struct Call {
    method: MethodDescriptor,
    /// The request in proto3 JSON form (an array for client streams).
    request: Json,
}

impl Gateway {
    pub fn new<S, B>(grpc: S) -> Gateway
    where
        S: tower::Service<
                axum::http::Request<tonic::body::Body>,
                Response = axum::http::Response<B>,
                Error = Infallible,
            > + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
        B: axum::body::HttpBody<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        use tower::ServiceExt;
        Gateway {
            grpc: GrpcService::new(grpc.map_response(|r| r.map(tonic::body::Body::new))),
            catalog: &CATALOG,
        }
    }

    /// The axum handler: every path under a served API version.
    pub async fn handle(
        State(gateway): State<Gateway>,
        method: Method,
        uri: Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> Response {
        match gateway.serve(method, &uri, &headers, &body).await {
            Ok(response) => response,
            Err(Refusal::Status(status)) => error_response(&status),
            Err(Refusal::MethodNotAllowed { allowed, what }) => {
                let status = Status::unimplemented(format!(
                    "{what} answers {}, not this HTTP method",
                    allowed.join(", ")
                ));
                let mut body = error_body(&status);
                body["error"]["code"] = StatusCode::METHOD_NOT_ALLOWED.as_u16().into();
                let mut response =
                    (StatusCode::METHOD_NOT_ALLOWED, axum::Json(body)).into_response();
                if let Ok(value) = allowed.join(", ").parse() {
                    response.headers_mut().insert(header::ALLOW, value);
                }
                response
            }
        }
    }

    async fn serve(
        &self,
        method: Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Response, Refusal> {
        let mut query: Vec<(String, String)> =
            form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
                .into_owned()
                .collect();
        let key = bearer_key(headers).or_else(|| {
            let at = query.iter().position(|(k, _)| k == ACCESS_TOKEN)?;
            Some(query.remove(at).1)
        });
        let call = self.resolve(&method, uri.path(), query, headers, body)?;
        let path = method_path(&call.method)?;
        let codec = DynamicCodec::new(call.method.output());
        let mut grpc = tonic::client::Grpc::new(self.grpc.clone())
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX);
        grpc.ready()
            .await
            .map_err(|e| Status::unavailable(format!("the gRPC service is not ready: {e}")))?;
        let input = call.method.input();
        let streaming_out = call.method.is_server_streaming();
        if call.method.is_client_streaming() {
            let items = match call.request {
                Json::Array(items) => items,
                one => vec![one],
            };
            let messages = items
                .into_iter()
                .map(|item| decode_request(&input, item))
                .collect::<Result<Vec<_>, _>>()?;
            let request = authorized(
                tonic::Request::new(futures::stream::iter(messages)),
                key.as_deref(),
            )?;
            let answer = grpc.client_streaming(request, path, codec).await?;
            return Ok(json_response(&answer.into_inner()));
        }
        let request = authorized(
            tonic::Request::new(decode_request(&input, call.request)?),
            key.as_deref(),
        )?;
        if streaming_out {
            let answer = grpc.server_streaming(request, path, codec).await?;
            return Ok(events(answer.into_inner()).into_response());
        }
        let answer = grpc.unary(request, path, codec).await?;
        Ok(json_response(&answer.into_inner()))
    }

    /// Which method a request calls, and its request message as JSON.
    fn resolve(
        &self,
        method: &Method,
        path: &str,
        query: Vec<(String, String)>,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Call, Refusal> {
        let unknown = || {
            Status::not_found(format!(
                "no API at {path}; /openapi.json lists every path fleetd serves"
            ))
        };
        let (version, rest) = path
            .trim_start_matches('/')
            .split_once('/')
            .ok_or_else(unknown)?;
        let (target, verb) = split_verb(rest);
        let addressed = self.catalog.address(version, target);
        let (method_descriptor, mut request) = match (verb, addressed) {
            (None, Some(Addressed::Name(resource))) => {
                let which = match *method {
                    Method::GET => Standard::Get,
                    Method::PATCH => Standard::Update,
                    Method::DELETE => Standard::Delete,
                    _ => return Err(Refusal::not_allowed(&["GET", "PATCH", "DELETE"], target)),
                };
                let m = standard(resource, which)?;
                let request = if which == Standard::Update {
                    let mut resource_json = body_json(body)?;
                    if let Json::Object(fields) = &mut resource_json {
                        fields.insert("name".into(), Json::String(target.into()));
                    }
                    object([(json_name(&m.input(), &resource.body_field()), resource_json)])
                } else {
                    object([("name".to_owned(), Json::String(target.into()))])
                };
                (m, request)
            }
            (None, Some(Addressed::Collection(resource, parent))) => match *method {
                Method::GET => (
                    standard(resource, Standard::List)?,
                    object([("parent".to_owned(), Json::String(parent))]),
                ),
                Method::POST => {
                    let m = standard(resource, Standard::Create)?;
                    let field = json_name(&m.input(), &resource.body_field());
                    let request = object([
                        ("parent".to_owned(), Json::String(parent)),
                        (field, body_json(body)?),
                    ]);
                    (m, request)
                }
                _ => return Err(Refusal::not_allowed(&["GET", "POST"], target)),
            },
            (Some("watch"), Some(addressed)) => {
                if *method != Method::GET {
                    return Err(Refusal::not_allowed(&["GET"], path));
                }
                let (m, field, value) = match addressed {
                    Addressed::Name(r) => (standard(r, Standard::WatchOne)?, "name", target.into()),
                    Addressed::Collection(r, parent) => {
                        (standard(r, Standard::WatchMany)?, "parent", parent)
                    }
                };
                (m, object([(field.to_owned(), Json::String(value))]))
            }
            (Some("batchGet"), Some(Addressed::Collection(r, _))) => {
                if *method != Method::GET {
                    return Err(Refusal::not_allowed(&["GET"], path));
                }
                (standard(r, Standard::BatchGet)?, object([]))
            }
            (Some(verb), _) => {
                let action = self
                    .catalog
                    .action(version, target, verb)
                    .ok_or_else(unknown)?;
                if *method != Method::POST {
                    return Err(Refusal::not_allowed(&["POST"], path));
                }
                (action.method.clone(), action_request(action, target, body)?)
            }
            (None, None) => return Err(unknown().into()),
        };
        merge_query(&method_descriptor.input(), &mut request, query)?;
        // EventSource reconnects with the last event's id: resume there, over
        // whatever the original URL said.
        if verb == Some("watch")
            && let Some(last) = headers
                .get("last-event-id")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<i64>().ok())
            && let Json::Object(fields) = &mut request
        {
            fields.insert("resumeRevision".into(), Json::String(last.to_string()));
        }
        Ok(Call {
            method: method_descriptor,
            request,
        })
    }
}

/// Why a request was not served.
enum Refusal {
    Status(Status),
    MethodNotAllowed {
        allowed: &'static [&'static str],
        what: String,
    },
}

impl Refusal {
    fn not_allowed(allowed: &'static [&'static str], what: &str) -> Refusal {
        Refusal::MethodNotAllowed {
            allowed,
            what: what.to_owned(),
        }
    }
}

impl From<Status> for Refusal {
    fn from(status: Status) -> Self {
        Refusal::Status(status)
    }
}

/// `projects/p/devices/d:watch` → (`projects/p/devices/d`, `watch`); only the
/// last segment may carry a verb.
fn split_verb(path: &str) -> (&str, Option<&str>) {
    let last_start = path.rfind('/').map_or(0, |i| i + 1);
    match path[last_start..].find(':') {
        Some(colon) => (
            &path[..last_start + colon],
            Some(&path[last_start + colon + 1..]),
        ),
        None => (path, None),
    }
}

fn standard(resource: &ResourceType, which: Standard) -> Result<MethodDescriptor, Status> {
    resource.methods.method(which).cloned().ok_or_else(|| {
        Status::unimplemented(format!("{} has no {which:?} method", resource.type_name))
    })
}

/// A custom action's request: the body, with the name from the path.
fn action_request(action: &Action, target: &str, body: &[u8]) -> Result<Json, Status> {
    let set_name = |mut item: Json| -> Result<Json, Status> {
        match &mut item {
            Json::Object(fields) => {
                fields.insert("name".into(), Json::String(target.into()));
                Ok(item)
            }
            _ => Err(Status::invalid_argument(format!(
                "the body of :{} must be a JSON object (the {} message)",
                action.verb,
                action.method.input().name()
            ))),
        }
    };
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        Json::Object(Map::new())
    } else {
        body_json(body)?
    };
    match body {
        Json::Array(items) if action.method.is_client_streaming() => Ok(Json::Array(
            items.into_iter().map(set_name).collect::<Result<_, _>>()?,
        )),
        other => set_name(other),
    }
}

fn body_json(body: &[u8]) -> Result<Json, Status> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(Status::invalid_argument(
            "the request needs a JSON body (the resource)",
        ));
    }
    serde_json::from_slice(body)
        .map_err(|e| Status::invalid_argument(format!("the body is not valid JSON: {e}")))
}

fn object<const N: usize>(fields: [(String, Json); N]) -> Json {
    Json::Object(fields.into_iter().collect())
}

/// The JSON name of `field` in `message` (`device_id` → `deviceId`).
fn json_name(message: &MessageDescriptor, field: &str) -> String {
    message
        .get_field_by_name(field)
        .map_or_else(|| field.to_owned(), |f| f.json_name().to_owned())
}

/// Adds query parameters to the request: each names a field by its JSON or
/// proto name; repeated fields repeat the parameter. The path's fields win.
fn merge_query(
    message: &MessageDescriptor,
    request: &mut Json,
    query: Vec<(String, String)>,
) -> Result<(), Status> {
    let Json::Object(fields) = request else {
        return Ok(());
    };
    for (key, value) in query {
        let field = message
            .get_field_by_json_name(&key)
            .or_else(|| message.get_field_by_name(&key))
            .ok_or_else(|| {
                let known: Vec<String> =
                    message.fields().map(|f| f.json_name().to_owned()).collect();
                Status::invalid_argument(format!(
                    "unknown query parameter {key:?}; {} takes {}",
                    message.name(),
                    known.join(", ")
                ))
            })?;
        let name = field.json_name().to_owned();
        if matches!(name.as_str(), "name" | "parent") && fields.contains_key(&name) {
            return Err(Status::invalid_argument(format!(
                "{key} comes from the path, not the query"
            )));
        }
        let value = query_value(&field, &value)?;
        if field.is_list() {
            match fields
                .entry(name)
                .or_insert_with(|| Json::Array(Vec::new()))
            {
                Json::Array(items) => items.push(value),
                _ => return Err(Status::invalid_argument(format!("{key} is given twice"))),
            }
        } else if fields.insert(name, value).is_some() {
            return Err(Status::invalid_argument(format!(
                "{key} is given twice or also in the body"
            )));
        }
    }
    Ok(())
}

/// A query parameter's text as the JSON value of its field.
fn query_value(field: &FieldDescriptor, text: &str) -> Result<Json, Status> {
    let invalid = |what: &str| {
        Status::invalid_argument(format!(
            "invalid {}: {text:?} is not {what}",
            field.json_name()
        ))
    };
    Ok(match field.kind() {
        Kind::Bool => Json::Bool(text.parse().map_err(|_| invalid("true or false"))?),
        Kind::Int32
        | Kind::Sint32
        | Kind::Sfixed32
        | Kind::Int64
        | Kind::Sint64
        | Kind::Sfixed64 => Json::Number(
            text.parse::<i64>()
                .map_err(|_| invalid("an integer"))?
                .into(),
        ),
        Kind::Uint32 | Kind::Fixed32 | Kind::Uint64 | Kind::Fixed64 => Json::Number(
            text.parse::<u64>()
                .map_err(|_| invalid("an unsigned integer"))?
                .into(),
        ),
        Kind::Double | Kind::Float => {
            serde_json::Number::from_f64(text.parse::<f64>().map_err(|_| invalid("a number"))?)
                .map(Json::Number)
                .ok_or_else(|| invalid("a finite number"))?
        }
        Kind::Message(message)
            if !matches!(
                message.full_name(),
                "google.protobuf.FieldMask"
                    | "google.protobuf.Timestamp"
                    | "google.protobuf.Duration"
            ) =>
        {
            serde_json::from_str(text).map_err(|_| invalid("a JSON object"))?
        }
        _ => Json::String(text.to_owned()),
    })
}

/// The request message from its JSON form; unknown fields are refused.
fn decode_request(message: &MessageDescriptor, json: Json) -> Result<DynamicMessage, Status> {
    DynamicMessage::deserialize(message.clone(), json).map_err(|e| {
        Status::invalid_argument(format!(
            "the request is not a valid {}: {e}",
            message.name()
        ))
    })
}

fn authorized<T>(
    mut request: tonic::Request<T>,
    key: Option<&str>,
) -> Result<tonic::Request<T>, Status> {
    if let Some(key) = key {
        let value = MetadataValue::try_from(format!("Bearer {key}"))
            .map_err(|_| Status::unauthenticated("the key holds characters a header cannot"))?;
        request.metadata_mut().insert("authorization", value);
    }
    Ok(request)
}

fn bearer_key(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, key) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| key.trim().to_owned())
}

fn to_json(message: &DynamicMessage) -> Json {
    serde_json::to_value(message).unwrap_or_else(|e| {
        error_body(&Status::internal(format!(
            "{} has no JSON form: {e}",
            message.descriptor().name()
        )))
    })
}

fn json_response(message: &DynamicMessage) -> Response {
    axum::Json(to_json(message)).into_response()
}

/// A server stream as server-sent events: `id:` the revision, `data:` the
/// message; an error ends the stream with an `error` event.
fn events(
    stream: tonic::Streaming<DynamicMessage>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let events = futures::stream::unfold(Some(stream), |stream| async move {
        let mut stream = stream?;
        match stream.next().await {
            Some(Ok(message)) => {
                let mut event = Event::default().data(to_json(&message).to_string());
                if let Some(revision) = message
                    .get_field_by_name("revision")
                    .and_then(|v| v.as_i64())
                    .filter(|r| *r > 0)
                {
                    event = event.id(revision.to_string());
                }
                Some((Ok(event), Some(stream)))
            }
            Some(Err(status)) => Some((
                Ok(Event::default()
                    .event("error")
                    .data(error_body(&status).to_string())),
                None,
            )),
            None => None,
        }
    });
    Sse::new(events).keep_alive(
        KeepAlive::new()
            .interval(Duration::from_secs(15))
            .text("keep-alive"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_last_segment_carries_a_verb() {
        assert_eq!(split_verb("a/b/c:watch"), ("a/b/c", Some("watch")));
        assert_eq!(split_verb("a/b/c"), ("a/b/c", None));
        assert_eq!(split_verb("regions:watch"), ("regions", Some("watch")));
        assert_eq!(split_verb("a:b/c"), ("a:b/c", None));
    }

    #[test]
    fn query_parameters_become_typed_request_fields() {
        let list = CATALOG
            .resource_by_plural("v1", "devices")
            .and_then(|r| r.methods.list.clone())
            .map(|m| m.input())
            .expect("devices have List");
        let mut request = object([(
            "parent".to_owned(),
            Json::String("projects/p/regions/r".into()),
        )]);
        merge_query(
            &list,
            &mut request,
            vec![
                ("pageSize".into(), "10".into()),
                ("filter".into(), "labels.site = \"x\"".into()),
                ("field_mask".into(), "name,metadata".into()),
                ("minRevision".into(), "12".into()),
            ],
        )
        .expect("valid parameters");
        let message = decode_request(&list, request).expect("decodes");
        assert_eq!(
            message
                .get_field_by_name("page_size")
                .and_then(|v| v.as_i32()),
            Some(10)
        );
        assert_eq!(
            message
                .get_field_by_name("min_revision")
                .and_then(|v| v.as_i64()),
            Some(12)
        );
        for (key, value, says) in [
            ("pageSize", "ten", "pageSize"),
            ("bogus", "1", "unknown query parameter \"bogus\""),
            ("parent", "projects/q/regions/r", "from the path"),
        ] {
            let mut request = object([(
                "parent".to_owned(),
                Json::String("projects/p/regions/r".into()),
            )]);
            let err =
                merge_query(&list, &mut request, vec![(key.into(), value.into())]).expect_err(key);
            assert_eq!(err.code(), tonic::Code::InvalidArgument);
            assert!(err.message().contains(says), "{}", err.message());
        }
    }
}
