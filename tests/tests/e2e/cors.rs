//! A web page from another origin calls fleetd from a real browser
//! (headless Chromium, web security on): gRPC-Web unary and server-stream
//! calls written against the wire format with `fetch`, and REST. Origins
//! in `cors_allowed_origins` get their preflights answered and can read
//! gRPC-Web's status headers; any other origin is blocked by the browser.

use crate::common;

use std::net::SocketAddr;

use common::browser::{Chromium, chromium_bin};
use common::{PARENT, Sandbox, create, device, device_name};
use fleetlog_tests::ADMIN_KEY;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// The page: gRPC-Web framing and the one protobuf field the requests
/// need (field 1, a string), written out as a browser client does it.
const PAGE: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>another origin</title></head><body>
<script>
function stringField(number, text) {
  const bytes = new TextEncoder().encode(text);
  const head = [(number << 3) | 2];
  let n = bytes.length;
  while (n >= 0x80) { head.push((n & 0x7f) | 0x80); n >>= 7; }
  head.push(n);
  const out = new Uint8Array(head.length + bytes.length);
  out.set(head); out.set(bytes, head.length);
  return out;
}
function frame(message) {
  const out = new Uint8Array(5 + message.length);
  new DataView(out.buffer).setUint32(1, message.length);
  out.set(message, 5);
  return out;
}
function frames(bytes) {
  const found = [];
  let at = 0;
  while (at + 5 <= bytes.length) {
    const length = new DataView(bytes.buffer, bytes.byteOffset + at + 1, 4).getUint32(0);
    if (at + 5 + length > bytes.length) break;
    found.push({ flag: bytes[at], text: new TextDecoder().decode(bytes.subarray(at + 5, at + 5 + length)) });
    at += 5 + length;
  }
  return found;
}
function grpcWeb(base, key, method, message, signal) {
  return fetch(base + '/' + method, {
    method: 'POST',
    headers: {
      'content-type': 'application/grpc-web+proto',
      'x-grpc-web': '1',
      'x-user-agent': 'grpc-web-javascript/0.1',
      'authorization': 'Bearer ' + key,
    },
    body: frame(message),
    signal,
  });
}
window.unary = async (base, key, name) => {
  const response = await grpcWeb(base, key, 'fleetlog.devices.v1.DeviceService/GetDevice', stringField(1, name));
  const found = frames(new Uint8Array(await response.arrayBuffer()));
  const data = found.find(f => f.flag === 0);
  const trailer = found.find(f => f.flag & 0x80);
  return {
    http: response.status,
    headerStatus: response.headers.get('grpc-status'),
    headerMessage: response.headers.get('grpc-message'),
    trailer: trailer ? trailer.text : null,
    data: data ? data.text : null,
  };
};
window.watch = async (base, key, parent) => {
  const abort = new AbortController();
  const response = await grpcWeb(base, key, 'fleetlog.devices.v1.DeviceService/WatchDevices', stringField(1, parent), abort.signal);
  const reader = response.body.getReader();
  let buffered = new Uint8Array(0);
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return { http: response.status, data: null };
    const joined = new Uint8Array(buffered.length + value.length);
    joined.set(buffered); joined.set(value, buffered.length);
    buffered = joined;
    const data = frames(buffered).find(f => f.flag === 0);
    if (data) { abort.abort(); return { http: response.status, data: data.text }; }
  }
};
window.rest = async (base, key, parent) => {
  const response = await fetch(base + '/v1/' + parent + '/devices', { headers: { authorization: 'Bearer ' + key } });
  return { http: response.status, body: await response.json() };
};
window.attempt = async (promise) => {
  try { await promise(); return 'answered'; } catch (e) { return 'blocked: ' + e.name; }
};
window.loaded = true;
</script></body></html>"#;

/// Serves [`PAGE`] on a port of its own: an origin fleetd is not on.
async fn serve_page() -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buffer = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buffer[..n]),
                    }
                }
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{PAGE}",
                    PAGE.len()
                );
                let _ = socket.write_all(answer.as_bytes()).await;
            });
        }
    });
    Ok((addr, task))
}

#[tokio::test]
async fn a_page_from_an_allowed_origin_calls_grpc_web_and_rest() -> anyhow::Result<()> {
    let bin = chromium_bin()?;
    let (allowed, allowed_task) = serve_page().await?;
    let (other, other_task) = serve_page().await?;
    let origin = format!("http://{allowed}");
    let sandbox = Sandbox::start_with(|c| c.cors_allowed_origins = vec![origin.clone()]).await?;
    let mut client = sandbox.client().await?;
    create(&mut client, "web-1", device(&[("site", "berlin")], 5)).await?;
    let grpc = format!("http://{}", sandbox.ready.grpc);
    let http = format!("http://{}", sandbox.ready.http);

    // The preflights themselves, on both ports.
    let reqwest = reqwest::Client::new();
    for (base, path) in [
        (&grpc, "/fleetlog.devices.v1.DeviceService/CreateDevice"),
        (&http, "/v1/projects/p0/regions/eu1/devices"),
    ] {
        let preflight = reqwest
            .request(reqwest::Method::OPTIONS, format!("{base}{path}"))
            .header("origin", &origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type,x-grpc-web,x-user-agent",
            )
            .send()
            .await?;
        assert!(
            preflight.status().is_success(),
            "{base}: {}",
            preflight.status()
        );
        let headers = preflight.headers();
        assert_eq!(
            headers["access-control-allow-origin"],
            origin.as_str(),
            "{base}"
        );
        let allowed_headers = headers["access-control-allow-headers"].to_str()?;
        for header in [
            "authorization",
            "content-type",
            "x-grpc-web",
            "x-user-agent",
        ] {
            assert!(
                allowed_headers.contains(header),
                "{base}: {allowed_headers}"
            );
        }
        let refused = reqwest
            .request(reqwest::Method::OPTIONS, format!("{base}{path}"))
            .header("origin", format!("http://{other}"))
            .header("access-control-request-method", "POST")
            .send()
            .await?;
        assert!(
            refused
                .headers()
                .get("access-control-allow-origin")
                .is_none(),
            "{base} allows an unlisted origin"
        );
    }

    let browser = Chromium::start(&bin)?;
    let mut page = browser.new_page().await?;
    page.open(&format!("{origin}/"), "window.loaded === true")
        .await?;

    let name = device_name("web-1");
    let call = |f: &str, args: &[&str]| {
        let args: Vec<String> = args.iter().map(|a| json!(a).to_string()).collect();
        format!("{f}({})", args.join(", "))
    };
    let unary = page
        .eval_async(&call("unary", &[&grpc, ADMIN_KEY, &name]))
        .await?;
    assert_eq!(unary["http"], 200, "{unary}");
    assert!(text(&unary["data"]).contains(&name), "{unary}");
    assert!(text(&unary["trailer"]).contains("grpc-status:0"), "{unary}");

    // An error is a trailers-only answer: the page reads its status from
    // the exposed headers.
    let missing = page
        .eval_async(&call("unary", &[&grpc, ADMIN_KEY, &device_name("nope")]))
        .await?;
    assert_eq!(missing["headerStatus"], "5", "NOT_FOUND: {missing}");
    assert!(
        text(&missing["headerMessage"]).contains("nope"),
        "{missing}"
    );

    let watched = page
        .eval_async(&call("watch", &[&grpc, ADMIN_KEY, PARENT]))
        .await?;
    assert_eq!(watched["http"], 200, "{watched}");
    assert!(text(&watched["data"]).contains(&name), "{watched}");

    let listed = page
        .eval_async(&call("rest", &[&http, ADMIN_KEY, PARENT]))
        .await?;
    assert_eq!(listed["http"], 200, "{listed}");
    assert_eq!(
        listed["body"]["devices"][0]["name"],
        name.as_str(),
        "{listed}"
    );

    // The same page from an origin fleetd does not list.
    page.open(&format!("http://{other}/"), "window.loaded === true")
        .await?;
    let rest = format!("() => {}", call("rest", &[&http, ADMIN_KEY, PARENT]));
    let unary = format!("() => {}", call("unary", &[&grpc, ADMIN_KEY, &name]));
    for attempt in [rest, unary] {
        let outcome = page.eval_async(&format!("attempt({attempt})")).await?;
        assert_eq!(outcome, "blocked: TypeError", "{attempt}");
    }

    drop(browser);
    allowed_task.abort();
    other_task.abort();
    sandbox.stop().await
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or_default()
}
