//! `/openapi.json` against the server it describes, as a schema-driven
//! fuzzer uses it: requests whose path and query values are drawn from the
//! document's own schemas are never refused as malformed
//! (INVALID_ARGUMENT). A value the schema allows but the server refuses is
//! a schema that leaves out what the server enforces.

use crate::common;

use common::Sandbox;
use fleetlog_tests::ADMIN_KEY;
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::TestRunner;
use serde_json::Value;

/// Requests per operation.
const CASES: usize = 4;

#[tokio::test]
async fn requests_drawn_from_the_schemas_are_never_malformed() -> anyhow::Result<()> {
    // Drawn revisions are far ahead of the log: do not wait long for them.
    let sandbox = Sandbox::start_with(|c| c.read_wait_ms = 20).await?;
    let base = format!("http://{}", sandbox.ready.http);
    let http = reqwest::Client::new();
    let document: Value = http
        .get(format!("{base}/openapi.json"))
        .send()
        .await?
        .json()
        .await?;
    let paths = document["paths"]
        .as_object()
        .ok_or_else(|| anyhow::anyhow!("the document has no paths"))?;
    let mut runner = TestRunner::deterministic();
    let mut sent = 0;
    let mut malformed = Vec::new();
    for (template, item) in paths {
        let Some(item) = item.as_object() else {
            continue;
        };
        for (verb, operation) in item {
            // Reads and deletions: their whole input is path and query.
            let method = match verb.as_str() {
                "get" => reqwest::Method::GET,
                "delete" => reqwest::Method::DELETE,
                _ => continue,
            };
            if operation
                .pointer("/responses/200/content/text~1event-stream")
                .is_some()
            {
                continue; // a watch: it would not end
            }
            for _ in 0..CASES {
                let (path, query) = draw_request(&mut runner, template, operation)?;
                let response = http
                    .request(method.clone(), format!("{base}{path}"))
                    .bearer_auth(ADMIN_KEY)
                    .query(&query)
                    .send()
                    .await?;
                sent += 1;
                let status = response.status();
                let body: Value = response.json().await.unwrap_or(Value::Null);
                if body["error"]["status"] == "INVALID_ARGUMENT" {
                    malformed.push(format!(
                        "{verb} {path} {query:?} → {status} {}",
                        body["error"]["message"]
                    ));
                }
            }
        }
    }
    assert!(sent > 100, "only {sent} requests were drawn");
    assert!(
        malformed.is_empty(),
        "{} of {sent} requests drawn from /openapi.json were refused as malformed:\n{}",
        malformed.len(),
        malformed[..malformed.len().min(15)].join("\n")
    );
    println!("{sent} requests drawn from /openapi.json, none refused as malformed");
    sandbox.stop().await
}

/// A path with every `{variable}` filled and the query parameters, drawn
/// from the operation's parameter schemas.
fn draw_request(
    runner: &mut TestRunner,
    template: &str,
    operation: &Value,
) -> anyhow::Result<(String, Vec<(String, String)>)> {
    let mut path = template.to_owned();
    let mut query = Vec::new();
    for parameter in operation["parameters"].as_array().into_iter().flatten() {
        let name = parameter["name"].as_str().unwrap_or_default();
        let required = parameter["required"] == true;
        let schema = &parameter["schema"];
        match parameter["in"].as_str() {
            Some("path") => {
                let value = draw_string(runner, schema, true)?.unwrap_or_default();
                path = path.replace(&format!("{{{name}}}"), &value);
            }
            Some("query") => {
                // Optional parameters half the time, as a fuzzer would.
                if !required && draw(runner, proptest::bool::ANY)? {
                    continue;
                }
                for value in draw_values(runner, schema, required)? {
                    query.push((name.to_owned(), value));
                }
            }
            _ => {}
        }
    }
    Ok((path, query))
}

/// The query values of one parameter (several for an array).
fn draw_values(
    runner: &mut TestRunner,
    schema: &Value,
    required: bool,
) -> anyhow::Result<Vec<String>> {
    match schema["type"].as_str() {
        Some("array") => {
            let count = draw(runner, 1..4usize)?;
            let mut values = Vec::new();
            for _ in 0..count {
                values.extend(draw_string(runner, &schema["items"], true)?);
            }
            Ok(values)
        }
        Some("integer") => {
            let min = schema["minimum"].as_i64().unwrap_or(i64::from(i32::MIN));
            let max = schema["maximum"].as_i64().unwrap_or(i64::from(i32::MAX));
            Ok(vec![draw(runner, min..=max)?.to_string()])
        }
        Some("boolean") => Ok(vec![draw(runner, proptest::bool::ANY)?.to_string()]),
        _ => Ok(draw_string(runner, schema, required)?.into_iter().collect()),
    }
}

/// A string the schema allows: from its enum or pattern; a free-form one
/// (filters, tokens) only when the parameter is required, as arbitrary
/// text is all a fuzzer knows of it.
fn draw_string(
    runner: &mut TestRunner,
    schema: &Value,
    required: bool,
) -> anyhow::Result<Option<String>> {
    if let Some(values) = schema["enum"].as_array() {
        let index = draw(runner, 0..values.len().max(1))?;
        return Ok(values.get(index).and_then(Value::as_str).map(str::to_owned));
    }
    let pattern = match schema["pattern"].as_str() {
        Some(pattern) => pattern
            .trim_start_matches('^')
            .trim_end_matches('$')
            .to_owned(),
        None if required => "[A-Za-z0-9._~-]{1,24}".to_owned(),
        None => return Ok(None),
    };
    let strategy = proptest::string::string_regex(&pattern)
        .map_err(|e| anyhow::anyhow!("pattern {pattern:?}: {e}"))?;
    let mut value = draw(runner, strategy)?;
    if let Some(max) = schema["maxLength"].as_u64() {
        value.truncate(usize::try_from(max).unwrap_or(usize::MAX));
        // A cut may leave a dot or hyphen at the end of a DNS-style ID.
        while value.ends_with(['.', '-']) {
            value.pop();
        }
    }
    Ok(Some(value))
}

fn draw<S: Strategy>(runner: &mut TestRunner, strategy: S) -> anyhow::Result<S::Value> {
    Ok(strategy
        .new_tree(runner)
        .map_err(|e| anyhow::anyhow!("drawing a value: {e}"))?
        .current())
}
