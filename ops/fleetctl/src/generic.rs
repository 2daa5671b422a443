//! The generic commands — get, list, create, update, delete, watch, call,
//! api-resources — for every resource and action the catalog reads from the
//! proto descriptors. Nothing here names a resource type: a resource added
//! to the protos is addressable here as it is.

use std::sync::Arc;
use std::time::Duration;

use fleetlog_proto::catalog::{Action, Addressed, CATALOG, ResourceType, Standard};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use prost_reflect::{
    DynamicMessage, Kind, MessageDescriptor, MethodDescriptor, ReflectMessage, Value,
};
use serde_json::{Map, Value as Json, json};
use tonic::Streaming;

use crate::cli::{
    BodyArgs, CallArgs, CreateResourceArgs, DeleteResourceArgs, GetResourceArgs, ListResourceArgs,
    Output, ReadArgs, RequestIdArgs, UpdateResourceArgs, WatchResourceArgs, WriteArgs,
};
use crate::connect::Connection;
use crate::error::{Error, stderr_line};
use crate::names;
use crate::output;
use crate::render;
use crate::request;
use crate::rpc::{DynamicClient, Reply};

/// What every generic command needs.
pub struct Ctx {
    pub conn: Connection,
    pub out: Output,
    /// The API version names are read in.
    pub version: String,
}

impl Ctx {
    async fn client(&self) -> Result<DynamicClient, Error> {
        Ok(DynamicClient::new(self.conn.channel().await?))
    }
}

// ----- names (pure) -----

/// Refuses a version the catalog does not serve.
pub fn check_version(version: &str) -> Result<(), Error> {
    let versions = CATALOG.versions();
    if versions.contains(&version) {
        Ok(())
    } else {
        Err(Error::Usage(format!(
            "unknown API version '{version}' (--api-version / FLEETLOG_API_VERSION / api_version): \
             the API versions are {}",
            versions.join(", ")
        )))
    }
}

/// The name patterns of `version`, one per line, indented.
fn patterns(version: &str, collections: bool) -> String {
    CATALOG
        .resources
        .iter()
        .filter(|r| r.version == version)
        .map(|r| {
            let pattern = if collections {
                r.pattern.collection().to_string()
            } else {
                r.pattern.to_string()
            };
            format!("\n  {pattern}")
        })
        .collect()
}

/// Advice when `path` addresses something in another version.
fn other_version_hint(version: &str, path: &str) -> String {
    let others: Vec<&str> = CATALOG
        .versions()
        .into_iter()
        .filter(|v| *v != version && CATALOG.address(v, path).is_some())
        .collect();
    match others.as_slice() {
        [] => String::new(),
        [other, ..] => format!("\n(it is a {other} name: add --api-version {other})"),
    }
}

/// What `path` addresses in `version`, with its IDs checked as fleetd will
/// check them (so a bad ID is a usage error, not a round trip).
fn address(version: &str, path: &str) -> Result<Option<Addressed<'static>>, Error> {
    let addressed = CATALOG.address(version, path);
    let checked = match &addressed {
        Some(Addressed::Name(resource)) => names::check(&resource.pattern, path),
        Some(Addressed::Collection(resource, parent)) if !parent.is_empty() => {
            names::check(&resource.pattern.parent(), parent)
        }
        Some(Addressed::Collection(..)) | None => Ok(()),
    };
    checked.map_err(Error::Usage)?;
    Ok(addressed)
}

/// The resource type `name` names in `version`.
pub fn resource_named(version: &str, name: &str) -> Result<Arc<ResourceType>, Error> {
    match address(version, name)? {
        Some(Addressed::Name(resource)) => Ok(Arc::clone(resource)),
        Some(Addressed::Collection(resource, _)) => Err(Error::Usage(format!(
            "'{name}' is a collection of {}, not a resource name: `fleetctl list {name}` lists \
             it, or name one resource ({})",
            resource.plural, resource.pattern
        ))),
        None => Err(Error::Usage(format!(
            "'{name}' is not the name of any {version} resource; the {version} names are:{}{}",
            patterns(version, false),
            other_version_hint(version, name)
        ))),
    }
}

/// The resource type and parent of the collection `path` in `version`.
pub fn collection_at(version: &str, path: &str) -> Result<(Arc<ResourceType>, String), Error> {
    match address(version, path)? {
        Some(Addressed::Collection(resource, parent)) => Ok((Arc::clone(resource), parent)),
        Some(Addressed::Name(resource)) => Err(Error::Usage(format!(
            "'{path}' names one {}, not a collection: `fleetctl get {path}` reads it, or list \
             its collection {}",
            resource.singular,
            path.rsplit_once('/')
                .map_or(path, |(collection, _)| collection)
        ))),
        None => Err(Error::Usage(format!(
            "'{path}' is not a {version} collection; the {version} collections are:{}{}",
            patterns(version, true),
            other_version_hint(version, path)
        ))),
    }
}

/// The standard method `which` of `resource`.
fn standard(resource: &ResourceType, which: Standard) -> Result<MethodDescriptor, Error> {
    resource.methods.method(which).cloned().ok_or_else(|| {
        Error::Usage(format!(
            "{} ({}) has no {which:?} method",
            resource.type_name, resource.version
        ))
    })
}

/// `name` split into its parent and ID: `projects/p/regions/r/devices/d` →
/// (`projects/p/regions/r`, `d`).
pub fn parent_and_id(name: &str) -> (String, String) {
    let parts: Vec<&str> = name.split('/').collect();
    let id = parts.last().copied().unwrap_or_default().to_owned();
    let parent = parts
        .get(..parts.len().saturating_sub(2))
        .map(|p| p.join("/"))
        .unwrap_or_default();
    (parent, id)
}

/// Lowercase without `-` and `_`: how action names are compared.
fn action_key(verb: &str) -> String {
    verb.chars()
        .filter(|c| *c != '-' && *c != '_')
        .flat_map(char::to_lowercase)
        .collect()
}

/// The custom action `verb` on `name` in `version`.
pub fn find_action(version: &str, name: &str, verb: &str) -> Result<&'static Action, Error> {
    let key = action_key(verb);
    let on_name: Vec<&'static Action> = CATALOG
        .actions
        .iter()
        .filter(|a| a.version == version && a.target.matches(name))
        .collect();
    if let Some(action) = on_name.iter().find(|a| action_key(&a.verb) == key) {
        names::check(&action.target, name).map_err(Error::Usage)?;
        return Ok(action);
    }
    if !on_name.is_empty() {
        let verbs: Vec<&str> = on_name.iter().map(|a| a.verb.as_str()).collect();
        return Err(Error::Usage(format!(
            "'{name}' has no action '{verb}' in {version}; its actions are: {}",
            verbs.join(", ")
        )));
    }
    let mut targets: Vec<String> = Vec::new();
    for action in CATALOG.actions.iter().filter(|a| a.version == version) {
        let target = action.target.to_string();
        match targets
            .iter_mut()
            .find(|t| t.starts_with(&format!("{target}:")))
        {
            Some(line) => line.push_str(&format!(", {}", action.verb)),
            None => targets.push(format!("{target}: {}", action.verb)),
        }
    }
    Err(Error::Usage(format!(
        "no {version} action is on names like '{name}'; the {version} actions are:{}{}",
        targets
            .iter()
            .map(|t| format!("\n  {t}"))
            .collect::<String>(),
        other_version_hint(version, name)
    )))
}

// ----- requests (pure) -----

/// A request under construction, as proto3 JSON, checked field by field.
struct Req {
    method: MethodDescriptor,
    json: Map<String, Json>,
    masks: Vec<(&'static str, Vec<String>)>,
}

impl Req {
    fn new(method: &MethodDescriptor) -> Req {
        Req {
            method: method.clone(),
            json: Map::new(),
            masks: Vec::new(),
        }
    }

    fn has(&self, field: &str) -> bool {
        self.method.input().get_field_by_name(field).is_some()
    }

    /// Sets `field`; `flag` is what the user gave, for the error when the
    /// method has no such field.
    fn set(&mut self, field: &str, value: Json, flag: &str) -> Result<(), Error> {
        if !self.has(field) {
            return Err(Error::Usage(format!(
                "{flag} does not apply: {} has no field {field}",
                self.method.input().full_name()
            )));
        }
        self.json.insert(field.to_owned(), value);
        Ok(())
    }

    fn set_opt(&mut self, field: &str, value: Option<Json>, flag: &str) -> Result<(), Error> {
        match value {
            Some(value) => self.set(field, value, flag),
            None => Ok(()),
        }
    }

    /// A field mask, set verbatim after decoding.
    fn mask(&mut self, field: &'static str, paths: Vec<String>, flag: &str) -> Result<(), Error> {
        if paths.is_empty() {
            return Ok(());
        }
        if !self.has(field) {
            return Err(Error::Usage(format!(
                "{flag} does not apply: {} has no field {field}",
                self.method.input().full_name()
            )));
        }
        self.masks.push((field, paths));
        Ok(())
    }

    /// `--mask` and `--min-revision`.
    fn read(&mut self, read: &ReadArgs) -> Result<(), Error> {
        self.mask("field_mask", request::mask_paths(&read.mask.mask), "--mask")?;
        self.set_opt("min_revision", read.min_revision.map(int), "--min-revision")
    }

    fn request_id(&mut self, args: &RequestIdArgs) -> Result<(), Error> {
        self.set_opt(
            "request_id",
            args.request_id.clone().map(Json::from),
            "--request-id",
        )
    }

    /// `--expected-revision`, `--allow-missing` and `--request-id`.
    fn write(&mut self, write: &WriteArgs) -> Result<(), Error> {
        self.set_opt(
            "expected_revision",
            write.expected_revision.map(int),
            "--expected-revision",
        )?;
        if write.allow_missing {
            self.set("allow_missing", json!(true), "--allow-missing")?;
        }
        self.request_id(&write.request)
    }

    fn build(self) -> Result<DynamicMessage, Error> {
        let input = self.method.input();
        let mut json = Json::Object(self.json);
        request::normalize(&mut json, &input, "")?;
        let mut message = request::decode(json, &input, "request")?;
        for (field, paths) in self.masks {
            request::set_mask(&mut message, field, &paths)?;
        }
        Ok(message)
    }
}

/// The body from `-f` and `--set`, checked against `desc`; with the field
/// paths `--set` gave and those the document sets.
struct Body {
    value: Json,
    set_paths: Vec<String>,
    document_paths: Vec<String>,
}

fn body(args: &BodyArgs, desc: &MessageDescriptor) -> Result<Body, Error> {
    let mut value = Json::Object(Map::new());
    let mut document_paths = Vec::new();
    if let Some(file) = args.file.as_deref() {
        let text = request::read_source(file)?;
        let mut parsed = request::parse_object(&text, file)?;
        request::normalize(&mut parsed, desc, "")?;
        document_paths = request::document_paths(&parsed, desc, "");
        value = parsed;
    }
    let mut set_paths = Vec::new();
    for assignment in &args.set {
        set_paths.push(request::apply_set(&mut value, desc, assignment)?);
    }
    Ok(Body {
        value,
        set_paths,
        document_paths,
    })
}

fn int(n: i64) -> Json {
    Json::String(n.to_string())
}

/// The Get or BatchGet request for `names` of `resource`.
fn get_request(
    resource: &ResourceType,
    names: &[String],
    read: &ReadArgs,
) -> Result<(MethodDescriptor, DynamicMessage), Error> {
    let (method, mut req) = if let [name] = names {
        let method = standard(resource, Standard::Get)?;
        let mut req = Req::new(&method);
        req.set("name", json!(name), "NAME")?;
        (method, req)
    } else {
        let method = standard(resource, Standard::BatchGet)?;
        let mut req = Req::new(&method);
        req.set("names", json!(names), "NAME")?;
        (method, req)
    };
    req.read(read)?;
    Ok((method, req.build()?))
}

fn list_request(
    resource: &ResourceType,
    parent: &str,
    args: &ListResourceArgs,
) -> Result<(MethodDescriptor, DynamicMessage), Error> {
    let method = standard(resource, Standard::List)?;
    let mut req = Req::new(&method);
    if !parent.is_empty() {
        req.set("parent", json!(parent), "COLLECTION")?;
    }
    req.set_opt(
        "page_size",
        args.page.page_size.map(Json::from),
        "--page-size",
    )?;
    req.set_opt(
        "page_token",
        args.page.page_token.clone().map(Json::from),
        "--page-token",
    )?;
    req.set_opt(
        "filter",
        args.page.filter.clone().map(Json::from),
        "--filter",
    )?;
    req.set_opt(
        "order_by",
        args.page.order_by.clone().map(Json::from),
        "--order-by",
    )?;
    req.read(&args.page.read)?;
    Ok((method, req.build()?))
}

pub(crate) fn create_request(
    resource: &ResourceType,
    name: &str,
    args: &CreateResourceArgs,
) -> Result<(MethodDescriptor, DynamicMessage), Error> {
    let method = standard(resource, Standard::Create)?;
    let body = body(&args.body, &resource.message)?;
    let (parent, id) = parent_and_id(name);
    let mut req = Req::new(&method);
    if !parent.is_empty() || req.has("parent") {
        req.set("parent", json!(parent), "NAME")?;
    }
    req.set(&resource.id_field(), json!(id), "NAME")?;
    req.set(&resource.body_field(), body.value, "-f/--set")?;
    req.request_id(&args.request)?;
    Ok((method, req.build()?))
}

pub(crate) fn update_request(
    resource: &ResourceType,
    name: &str,
    args: &UpdateResourceArgs,
) -> Result<(MethodDescriptor, DynamicMessage), Error> {
    let method = standard(resource, Standard::Update)?;
    let mut body = body(&args.body, &resource.message)?;
    // The name given wins over one in the body.
    if resource.message.get_field_by_name("name").is_some()
        && let Json::Object(map) = &mut body.value
    {
        map.insert("name".to_owned(), json!(name));
    }
    let mask = match &args.options.update_mask {
        Some(paths) => {
            let paths = request::mask_paths(paths);
            if paths.is_empty() {
                return Err(Error::Usage(
                    "--update-mask needs at least one field path".to_owned(),
                ));
            }
            paths
        }
        None => {
            let mut paths: Vec<String> = body
                .document_paths
                .iter()
                .filter(|f| *f != "name")
                .cloned()
                .collect();
            for path in body.set_paths {
                if !paths.contains(&path) {
                    paths.push(path);
                }
            }
            if paths.is_empty() {
                return Err(Error::Usage(
                    "nothing to update: give --set path=value, -f FILE or --update-mask".to_owned(),
                ));
            }
            paths
        }
    };
    let mut req = Req::new(&method);
    req.set(&resource.body_field(), body.value, "-f/--set")?;
    req.mask("update_mask", mask, "--update-mask")?;
    req.write(&args.options.write)?;
    Ok((method, req.build()?))
}

fn delete_request(
    resource: &ResourceType,
    name: &str,
    args: &DeleteResourceArgs,
) -> Result<(MethodDescriptor, DynamicMessage), Error> {
    let method = standard(resource, Standard::Delete)?;
    let mut req = Req::new(&method);
    req.set("name", json!(name), "NAME")?;
    req.write(&args.write)?;
    Ok((method, req.build()?))
}

/// What to watch.
struct WatchTarget {
    method: MethodDescriptor,
    request: DynamicMessage,
}

fn watch_request(
    version: &str,
    target: &str,
    filter: Option<&str>,
    mask: &[String],
    resume_revision: Option<i64>,
) -> Result<WatchTarget, Error> {
    let (method, mut req) = match address(version, target)? {
        Some(Addressed::Name(resource)) => {
            if filter.is_some() {
                return Err(Error::Usage(
                    "--filter applies to collections, not to one resource".to_owned(),
                ));
            }
            let method = standard(resource, Standard::WatchOne)?;
            let mut req = Req::new(&method);
            req.set("name", json!(target), "NAME")?;
            (method, req)
        }
        Some(Addressed::Collection(resource, parent)) => {
            let method = standard(resource, Standard::WatchMany)?;
            let mut req = Req::new(&method);
            if !parent.is_empty() {
                req.set("parent", json!(parent), "COLLECTION")?;
            }
            req.set_opt("filter", filter.map(Json::from), "--filter")?;
            (method, req)
        }
        None => {
            return Err(Error::Usage(format!(
                "'{target}' is neither a {version} resource name nor a collection; the {version} \
                 names are:{}{}",
                patterns(version, false),
                other_version_hint(version, target)
            )));
        }
    };
    req.mask("field_mask", request::mask_paths(mask), "--mask")?;
    req.set_opt(
        "resume_revision",
        resume_revision.map(int),
        "--resume-revision",
    )?;
    Ok(WatchTarget {
        method,
        request: req.build()?,
    })
}

/// The requests of a call: the body (an array for client-streaming
/// actions), each with `name` set to NAME.
fn call_requests(
    action: &Action,
    name: &str,
    args: &CallArgs,
) -> Result<Vec<DynamicMessage>, Error> {
    let input = action.method.input();
    let mut documents: Vec<Json> = Vec::new();
    let sources = [
        args.body
            .file
            .as_deref()
            .map(|f| Ok::<_, Error>((request::read_source(f)?, f.to_owned()))),
        args.data.clone().map(|d| Ok((d, "-d".to_owned()))),
    ];
    for source in sources.into_iter().flatten() {
        let (text, origin) = source?;
        for document in request::parse_documents(&text, &origin)? {
            match document {
                Json::Array(items) => documents.extend(items),
                other => documents.push(other),
            }
        }
    }
    if documents.is_empty() {
        documents.push(Json::Object(Map::new()));
    }
    if documents.len() > 1 && !action.method.is_client_streaming() {
        return Err(Error::Usage(format!(
            "{} takes one request, and {} were given (only client-streaming actions take an array)",
            action.verb,
            documents.len()
        )));
    }
    let mut requests = Vec::with_capacity(documents.len());
    for (i, mut document) in documents.into_iter().enumerate() {
        if !document.is_object() {
            return Err(Error::Usage(format!(
                "request {} is not an object ({})",
                i + 1,
                input.full_name()
            )));
        }
        request::normalize(&mut document, &input, "")?;
        for assignment in &args.body.set {
            request::apply_set(&mut document, &input, assignment)?;
        }
        // The name given wins, as REST's path does.
        if let Json::Object(map) = &mut document
            && input.get_field_by_name("name").is_some()
        {
            map.insert("name".to_owned(), json!(name));
        }
        requests.push(request::decode(document, &input, "request")?);
    }
    Ok(requests)
}

// ----- commands -----

/// Completes on Ctrl-C; never, if the signal handler cannot be installed.
async fn ctrl_c() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

pub async fn get(ctx: &Ctx, args: GetResourceArgs) -> Result<(), Error> {
    let resources = args
        .names
        .iter()
        .map(|name| resource_named(&ctx.version, name))
        .collect::<Result<Vec<_>, _>>()?;
    let Some(first) = resources.first() else {
        return Err(Error::Usage("give at least one NAME".to_owned()));
    };
    if let Some((other, name)) = resources
        .iter()
        .zip(&args.names)
        .find(|(r, _)| r.type_name != first.type_name)
    {
        return Err(Error::Usage(format!(
            "several names are read with one BatchGet, so they must be of one type: '{}' is a {}, \
             '{name}' a {}",
            args.names.first().map_or("", String::as_str),
            first.type_name,
            other.type_name
        )));
    }
    if args.watch {
        let [name] = args.names.as_slice() else {
            return Err(Error::Usage("--watch takes one name".to_owned()));
        };
        let target = watch_request(
            &ctx.version,
            name,
            None,
            &args.read.mask.mask,
            args.resume_revision,
        )?;
        return watch_stream(ctx, target, args.resume_revision.unwrap_or(0)).await;
    }
    let (method, request) = get_request(first, &args.names, &args.read)?;
    let client = ctx.client().await?;
    let response = client.unary(&method, request).await?;
    render::print(&response, ctx.out)?;
    let missing = response
        .descriptor()
        .get_field_by_name("missing")
        .map(|f| {
            response
                .get_field(&f)
                .as_list()
                .unwrap_or_default()
                .to_vec()
        })
        .unwrap_or_default();
    let missing: Vec<&str> = missing.iter().filter_map(Value::as_str).collect();
    if !missing.is_empty() {
        return Err(tonic::Status::not_found(format!("not found: {}", missing.join(", "))).into());
    }
    Ok(())
}

/// The repeated field of `response` holding `resource`s.
fn items_field(
    response: &MessageDescriptor,
    resource: &ResourceType,
) -> Option<prost_reflect::FieldDescriptor> {
    response
        .fields()
        .find(|f| f.is_list() && matches!(f.kind(), Kind::Message(m) if m == resource.message))
}

/// A spinner on stderr with the count so far (hidden unless a terminal).
fn spinner(message: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} [{elapsed}]")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.set_message(message.to_owned());
    if !bar.is_hidden() {
        bar.enable_steady_tick(Duration::from_millis(120));
    }
    bar
}

pub async fn list(ctx: &Ctx, args: ListResourceArgs) -> Result<(), Error> {
    let (resource, parent) = collection_at(&ctx.version, &args.collection)?;
    if args.watch {
        let target = watch_request(
            &ctx.version,
            &args.collection,
            args.page.filter.as_deref(),
            &args.page.read.mask.mask,
            args.resume_revision,
        )?;
        return watch_stream(ctx, target, args.resume_revision.unwrap_or(0)).await;
    }
    let (method, mut request) = list_request(&resource, &parent, &args)?;
    let output = method.output();
    let items = items_field(&output, &resource);
    let token_field = output.get_field_by_name("next_page_token");
    let page_token_field = request.descriptor().get_field_by_name("page_token");
    let min_revision_field = request.descriptor().get_field_by_name("min_revision");
    let client = ctx.client().await?;
    let bar = args
        .page
        .all
        .then(|| spinner(&format!("listing {}", resource.plural)));
    let mut merged: Option<DynamicMessage> = None;
    let mut pages = 0usize;
    let result: Result<(), Error> = async {
        loop {
            let page = client.unary(&method, request.clone()).await?;
            pages += 1;
            let token = token_field
                .as_ref()
                .and_then(|f| page.get_field(f).as_str().map(str::to_owned))
                .unwrap_or_default();
            let revision = render::int_field(&page, "revision").unwrap_or(0);
            let all = match merged.as_mut() {
                None => merged.insert(page),
                Some(all) => {
                    if let Some(items) = &items {
                        let more = page.get_field(items).as_list().unwrap_or_default().to_vec();
                        if let Some(list) = all.get_field_mut(items).as_list_mut() {
                            list.extend(more);
                        }
                    }
                    if let Some(field) = &token_field {
                        let _ = all.try_set_field(field, Value::String(token.clone()));
                    }
                    if let Some(field) = all.descriptor().get_field_by_name("revision")
                        && render::int_field(all, "revision").unwrap_or(0) < revision
                    {
                        let _ = all.try_set_field(&field, Value::I64(revision));
                    }
                    all
                }
            };
            let count = items
                .as_ref()
                .map_or(0, |f| all.get_field(f).as_list().map_or(0, <[Value]>::len));
            if let Some(bar) = &bar {
                bar.set_message(format!("{count} {} ({pages} pages)", resource.plural));
            }
            if !args.page.all || token.is_empty() {
                return Ok(());
            }
            let previous = page_token_field
                .as_ref()
                .and_then(|f| request.get_field(f).as_str().map(str::to_owned))
                .unwrap_or_default();
            if token == previous {
                return Err(Error::Other(format!(
                    "the server returned page token '{token}' twice; stopping"
                )));
            }
            if let Some(field) = &page_token_field {
                let _ = request.try_set_field(field, Value::String(token));
            }
            // Later pages must not be read from an older state than earlier ones.
            if let Some(field) = &min_revision_field {
                let asked = request.get_field(field).as_i64().unwrap_or(0);
                let _ = request.try_set_field(field, Value::I64(asked.max(revision)));
            }
        }
    }
    .await;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    result?;
    match merged {
        Some(all) => render::print(&all, ctx.out),
        None => Ok(()),
    }
}

pub async fn create(ctx: &Ctx, args: CreateResourceArgs) -> Result<(), Error> {
    let resource = resource_named(&ctx.version, &args.name)?;
    let (method, request) = create_request(&resource, &args.name, &args)?;
    let client = ctx.client().await?;
    let response = client.unary(&method, request).await?;
    render::print(&response, ctx.out)
}

pub async fn update(ctx: &Ctx, args: UpdateResourceArgs) -> Result<(), Error> {
    let resource = resource_named(&ctx.version, &args.name)?;
    let (method, request) = update_request(&resource, &args.name, &args)?;
    let client = ctx.client().await?;
    let response = client.unary(&method, request).await?;
    render::print(&response, ctx.out)
}

pub async fn delete(ctx: &Ctx, args: DeleteResourceArgs) -> Result<(), Error> {
    if args.names.len() > 1 && args.write.request.request_id.is_some() {
        return Err(Error::Usage("--request-id takes one name".to_owned()));
    }
    // Every name is checked before anything is deleted.
    let requests = args
        .names
        .iter()
        .map(|name| {
            let resource = resource_named(&ctx.version, name)?;
            let (method, request) = delete_request(&resource, name, &args)?;
            Ok((name.clone(), method, request))
        })
        .collect::<Result<Vec<_>, Error>>()?;
    let client = ctx.client().await?;
    if let [(name, method, request)] = requests.as_slice() {
        client.unary(method, request.clone()).await?;
        return match ctx.out {
            Output::Table => Ok(output::write_line(&format!("deleted {name}"))?),
            out => output::print_value(&json!({ "deleted": [name] }), out),
        };
    }
    let bar = ProgressBar::with_draw_target(
        Some(u64::try_from(requests.len()).unwrap_or(u64::MAX)),
        ProgressDrawTarget::stderr(),
    );
    bar.set_style(
        ProgressStyle::with_template("{spinner} deleting [{bar:32}] {pos}/{len} {msg}")
            .map(|s| s.progress_chars("=> "))
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut deleted = Vec::new();
    let mut failed = Vec::new();
    let mut first_error: Option<u8> = None;
    for (name, method, request) in requests {
        bar.set_message(name.clone());
        match client.unary(&method, request).await {
            Ok(_) => {
                if ctx.out == Output::Table {
                    let line = format!("deleted {name}");
                    bar.suspend(|| output::write_line(&line))?;
                }
                deleted.push(name);
            }
            Err(status) => {
                let mut line = crate::error::status_line(&status);
                if !line.contains(&name) {
                    line.push_str(&format!(" ({name})"));
                }
                bar.suspend(|| stderr_line(&line));
                first_error.get_or_insert(crate::error::exit_code_of(status.code()));
                failed.push(json!({
                    "name": name,
                    "code": output::code_name(status.code()),
                    "message": status.message(),
                }));
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    if ctx.out != Output::Table {
        output::print_value(&json!({ "deleted": deleted, "failed": failed }), ctx.out)?;
    }
    match first_error {
        Some(code) => Err(Error::Reported(code)),
        None => Ok(()),
    }
}

pub async fn watch(ctx: &Ctx, args: WatchResourceArgs) -> Result<(), Error> {
    let options = &args.options;
    let target = watch_request(
        &ctx.version,
        &args.target,
        options.filter.as_deref(),
        &options.mask.mask,
        options.resume_revision,
    )?;
    watch_stream(ctx, target, options.resume_revision.unwrap_or(0)).await
}

async fn watch_stream(ctx: &Ctx, target: WatchTarget, resume_revision: i64) -> Result<(), Error> {
    let work = async {
        let client = ctx.client().await?;
        let stream = client
            .server_streaming(&target.method, target.request)
            .await?;
        if ctx.out == Output::Table {
            output::write_line(&output::watch_header())?;
        }
        print_stream(stream, ctx.out, resume_revision).await
    };
    tokio::select! {
        result = work => result,
        () = ctrl_c() => Ok(()),
    }
}

/// Prints each message of `stream` as it comes; an error says from where a
/// watch can be resumed.
async fn print_stream(
    mut stream: Streaming<DynamicMessage>,
    out: Output,
    resume_revision: i64,
) -> Result<(), Error> {
    let mut last_revision = resume_revision;
    loop {
        match stream.message().await {
            Ok(Some(message)) => {
                render::print_stream_item(&message, out)?;
                last_revision =
                    last_revision.max(render::int_field(&message, "revision").unwrap_or(0));
            }
            Ok(None) => return Ok(()),
            Err(status) => {
                let hint = (last_revision > 0).then(|| {
                    format!("the watch can be resumed with --resume-revision {last_revision}")
                });
                return Err(Error::Status { status, hint });
            }
        }
    }
}

pub async fn call(ctx: &Ctx, args: CallArgs) -> Result<(), Error> {
    let action = find_action(&ctx.version, &args.name, &args.action)?;
    let requests = call_requests(action, &args.name, &args)?;
    let work = async {
        let client = ctx.client().await?;
        match client.call(&action.method, requests).await? {
            Reply::One(response) => {
                if ctx.out == Output::Table && render::table(&response).text.is_empty() {
                    output::write_line(&format!("{} {}: done", action.verb, args.name))?;
                    Ok(())
                } else {
                    render::print(&response, ctx.out)
                }
            }
            Reply::Stream(stream) => print_stream(stream, ctx.out, 0).await,
        }
    };
    tokio::select! {
        result = work => result,
        () = ctrl_c() => Ok(()),
    }
}

/// The short names of the standard methods `resource` has.
fn method_names(resource: &ResourceType) -> Vec<&'static str> {
    [
        (Standard::Get, "get"),
        (Standard::BatchGet, "batchGet"),
        (Standard::List, "list"),
        (Standard::WatchOne, "watch"),
        (Standard::WatchMany, "watchList"),
        (Standard::Create, "create"),
        (Standard::Update, "update"),
        (Standard::Delete, "delete"),
    ]
    .into_iter()
    .filter(|(which, _)| resource.methods.method(*which).is_some())
    .map(|(_, name)| name)
    .collect()
}

fn streaming(method: &MethodDescriptor) -> &'static str {
    match (method.is_client_streaming(), method.is_server_streaming()) {
        (false, false) => "unary",
        (true, false) => "client-streaming",
        (false, true) => "server-streaming",
        (true, true) => "bidi-streaming",
    }
}

/// `fleetctl api-resources`: every resource and its actions; actions on
/// names that are no resource (a service account's keys) get a row each.
pub fn api_resources(out: Output) -> Result<(), Error> {
    let mut resources: Vec<&Arc<ResourceType>> = CATALOG.resources.iter().collect();
    resources.sort_by(|a, b| (&a.version, &a.type_name).cmp(&(&b.version, &b.type_name)));
    let actions_of = |version: &str, pattern: &str| -> Vec<&Action> {
        CATALOG
            .actions
            .iter()
            .filter(|a| a.version == version && a.target.to_string() == pattern)
            .collect()
    };
    let strays: Vec<&Action> = CATALOG
        .actions
        .iter()
        .filter(|a| {
            !CATALOG
                .resources
                .iter()
                .any(|r| r.version == a.version && r.pattern == a.target)
        })
        .collect();
    if out == Output::Table {
        let mut rows: Vec<Vec<String>> = resources
            .iter()
            .map(|r| {
                let actions: Vec<&str> = actions_of(&r.version, &r.pattern.to_string())
                    .iter()
                    .map(|a| a.verb.as_str())
                    .collect();
                vec![
                    r.version.clone(),
                    r.type_name.clone(),
                    r.pattern.to_string(),
                    method_names(r).join(","),
                    if actions.is_empty() {
                        "-".to_owned()
                    } else {
                        actions.join(",")
                    },
                ]
            })
            .collect();
        for action in &strays {
            rows.push(vec![
                action.version.clone(),
                "-".to_owned(),
                action.target.to_string(),
                "-".to_owned(),
                action.verb.clone(),
            ]);
        }
        output::write_stdout(&output::format_table(
            &["VERSION", "TYPE", "PATTERN", "METHODS", "ACTIONS"],
            &rows,
        ))?;
        return Ok(());
    }
    let action_json = |a: &Action| {
        json!({
            "action": a.verb,
            "method": a.method.full_name(),
            "target": a.target.to_string(),
            "streaming": streaming(&a.method),
        })
    };
    let resources_json: Vec<Json> = resources
        .iter()
        .map(|r| {
            json!({
                "version": r.version,
                "type": r.type_name,
                "pattern": r.pattern.to_string(),
                "collection": r.pattern.collection().to_string(),
                "singular": r.singular,
                "plural": r.plural,
                "message": r.message.full_name(),
                "service": r.service.full_name(),
                "methods": method_names(r),
                "actions": actions_of(&r.version, &r.pattern.to_string())
                    .into_iter()
                    .map(action_json)
                    .collect::<Vec<_>>(),
            })
        })
        .collect();
    let strays_json: Vec<Json> = strays.into_iter().map(action_json).collect();
    output::print_value(
        &json!({ "resources": resources_json, "otherActions": strays_json }),
        out,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_split_into_parent_and_id() {
        assert_eq!(
            parent_and_id("projects/p/regions/r/devices/d"),
            ("projects/p/regions/r".to_owned(), "d".to_owned())
        );
        assert_eq!(
            parent_and_id("regions/eu1"),
            (String::new(), "eu1".to_owned())
        );
    }

    #[test]
    fn names_resolve_per_version_and_say_what_exists() {
        let device = resource_named("v1", "projects/p/regions/r/devices/d").expect("a device");
        assert_eq!(device.type_name, "devices.fleetlog.io/Device");
        let old = resource_named("v1alpha2", "projects/p/devices/d").expect("a v1alpha2 device");
        assert_eq!(old.version, "v1alpha2");
        let Err(Error::Usage(message)) = resource_named("v1", "projects/p/devices/d") else {
            panic!("a v1alpha2 name is no v1 name")
        };
        assert!(
            message.contains("projects/{project}/regions/{region}/devices/{device}"),
            "{message}"
        );
        assert!(message.contains("--api-version v1alpha2"), "{message}");
        let Err(Error::Usage(message)) = resource_named("v1", "projects/p/regions/r/devices")
        else {
            panic!("a collection")
        };
        assert!(message.contains("fleetctl list"), "{message}");
        let (regions, parent) = collection_at("v1", "regions").expect("regions");
        assert_eq!((regions.plural.as_str(), parent.as_str()), ("regions", ""));
        assert!(collection_at("v1", "regions/eu1").is_err());
        assert!(check_version("v1alpha2").is_ok());
        assert!(check_version("v9").is_err());
    }

    #[test]
    fn ids_are_checked_as_fleetd_checks_them() {
        let Err(Error::Usage(message)) = resource_named("v1", "projects/P/regions/r/devices/d")
        else {
            panic!("an uppercase project")
        };
        assert!(
            message.contains("contains 'P'")
                && message.contains("projects/{project}/regions/{region}/devices/{device}"),
            "{message}"
        );
        assert!(collection_at("v1", "projects/p/regions/r_/devices").is_ok());
        assert!(collection_at("v1", "projects/p/regions/R/devices").is_err());
        assert!(collection_at("v1", "services/a..b/deployments").is_err());
        assert!(watch_request("v1", "projects/p/regions/r/devices/d e", None, &[], None).is_err());
        assert!(
            find_action(
                "v1",
                "projects/p/serviceAccounts/S",
                "createServiceAccountKey"
            )
            .is_err()
        );
    }

    #[test]
    fn actions_are_found_in_any_case() {
        let action = find_action(
            "v1",
            "projects/p/serviceAccounts/sa",
            "CreateServiceAccountKey",
        )
        .expect("found");
        assert_eq!(action.verb, "createServiceAccountKey");
        assert!(
            find_action(
                "v1",
                "projects/p/serviceAccounts/sa",
                "create-service-account-key"
            )
            .is_ok()
        );
        let Err(Error::Usage(message)) = find_action("v1", "projects/p/serviceAccounts/sa", "nope")
        else {
            panic!("no such action")
        };
        assert!(message.contains("createServiceAccountKey"), "{message}");
    }

    #[test]
    fn requests_are_built_from_flags_and_bodies() {
        let device = resource_named("v1", "projects/p/regions/r/devices/d").expect("device");
        let args = CreateResourceArgs {
            name: "projects/p/regions/r/devices/d".into(),
            body: BodyArgs {
                file: None,
                set: vec!["displayName=x".into(), "labels.site=berlin".into()],
            },
            request: RequestIdArgs {
                request_id: Some("r1".into()),
            },
        };
        let (method, request) =
            create_request(&device, &args.name, &args).expect("a create request");
        assert_eq!(method.name(), "CreateDevice");
        let json = serde_json::to_value(&request).expect("json");
        assert_eq!(json["parent"], "projects/p/regions/r");
        assert_eq!(json["deviceId"], "d");
        assert_eq!(json["device"]["metadata"]["labels"]["site"], "berlin");
        assert_eq!(json["requestId"], "r1");

        let args = UpdateResourceArgs {
            name: "projects/p/regions/r/devices/d".into(),
            body: BodyArgs {
                file: None,
                set: vec![
                    "labels.site=paris".into(),
                    "spec.loggingConfig.priority=3".into(),
                ],
            },
            options: crate::cli::UpdateOptions {
                update_mask: None,
                write: WriteArgs {
                    expected_revision: Some(4),
                    ..WriteArgs::default()
                },
            },
        };
        let (_, request) = update_request(&device, &args.name, &args).expect("an update");
        let json = serde_json::to_value(&request).expect("json");
        assert_eq!(json["device"]["name"], "projects/p/regions/r/devices/d");
        assert_eq!(json["expectedRevision"], "4");
        let mask = request.get_field_by_name("update_mask").and_then(|m| {
            m.as_message()
                .and_then(|m| m.get_field_by_name("paths"))
                .map(|p| p.into_owned())
        });
        assert_eq!(
            mask,
            Some(Value::List(vec![
                Value::String("metadata.labels.site".into()),
                Value::String("spec.logging_config.priority".into())
            ]))
        );
        let empty = UpdateResourceArgs {
            body: BodyArgs::default(),
            ..args
        };
        assert!(matches!(
            update_request(&device, &empty.name, &empty),
            Err(Error::Usage(_))
        ));
    }

    #[test]
    fn call_bodies_get_the_name_and_client_streams_take_arrays() {
        let heartbeat =
            find_action("v1", "projects/p/regions/r/devices/d", "heartbeat").expect("heartbeat");
        let args = CallArgs {
            name: "projects/p/regions/r/devices/d".into(),
            action: "heartbeat".into(),
            data: Some(r#"[{"status": {"deviceInfo": {"osVersion": "1"}}}, {}]"#.into()),
            body: BodyArgs::default(),
        };
        let requests = call_requests(heartbeat, &args.name, &args).expect("requests");
        assert_eq!(requests.len(), 2);
        for request in &requests {
            assert_eq!(
                render::string_field(request, "name").as_deref(),
                Some("projects/p/regions/r/devices/d")
            );
        }
        let key = find_action(
            "v1",
            "projects/p/serviceAccounts/sa",
            "createServiceAccountKey",
        )
        .expect("key");
        let args = CallArgs {
            name: "projects/p/serviceAccounts/sa".into(),
            action: "createServiceAccountKey".into(),
            data: Some(r#"{"nope": 1}"#.into()),
            body: BodyArgs::default(),
        };
        let Err(Error::Usage(message)) = call_requests(key, &args.name, &args) else {
            panic!("unknown field")
        };
        assert!(message.contains("unknown field `nope`"), "{message}");
    }
}
