//! The real `fleetctl` binary against a real nats-server and an in-process
//! fleetd: the generic verbs (create, get, list, update, call, delete,
//! watch) on resources of several services and both API versions, errors
//! and exit codes, settings from flags, environment and the config file,
//! completions, `api-resources`, and TLS with a self-signed certificate.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use common::{PARENT, Sandbox};
use fleetlog_proto::catalog::CATALOG;
use fleetlog_tests::ADMIN_KEY;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

/// How long one fleetctl run may take.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// The exit codes fleetctl documents (`fleetctl --help`).
const EXIT_USAGE: i32 = 2;
const EXIT_CONFIG: i32 = 3;
const EXIT_NOT_FOUND: i32 = 5;
const EXIT_ACCESS: i32 = 7;
const EXIT_UNAVAILABLE: i32 = 8;

/// The `fleetctl` binary built beside the running test binary, or
/// `FLEETLOG_FLEETCTL_BIN`.
fn fleetctl_bin() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("FLEETLOG_FLEETCTL_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("locating the target directory")?;
    [Some(dir), dir.parent()]
        .into_iter()
        .flatten()
        .map(|d| d.join("fleetctl"))
        .find(|c| c.exists())
        .with_context(|| {
            format!(
                "fleetctl is missing beside {}: build it first with \
                 `cargo build --workspace --all-targets`",
                exe.display()
            )
        })
}

/// What one run printed.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn ok(self) -> anyhow::Result<String> {
        ensure!(self.code == Some(0), "fleetctl failed: {self:?}");
        Ok(self.stdout)
    }

    fn json(self) -> anyhow::Result<Value> {
        let stdout = self.ok()?;
        serde_json::from_str(&stdout).with_context(|| format!("not JSON: {stdout}"))
    }

    fn failed(self, code: i32, mentions: &[&str]) -> anyhow::Result<String> {
        ensure!(
            self.code == Some(code),
            "expected exit code {code}: {self:?}"
        );
        for text in mentions {
            ensure!(
                self.stderr.contains(text),
                "stderr should mention {text:?}: {self:?}"
            );
        }
        Ok(self.stderr)
    }
}

/// Runs fleetctl with a clean environment: no FLEETLOG_* settings, and a
/// config home of its own (so a developer's ~/.config does not count).
struct Ctl {
    bin: PathBuf,
    url: String,
    home: tempfile::TempDir,
}

impl Ctl {
    fn new(url: String) -> anyhow::Result<Self> {
        Ok(Ctl {
            bin: fleetctl_bin()?,
            url,
            home: tempfile::tempdir()?,
        })
    }

    /// A command with no settings but the clean environment.
    fn bare(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.bin);
        command
            .args(args)
            .env("XDG_CONFIG_HOME", self.home.path())
            .env("HOME", self.home.path())
            .env_remove("FLEETLOG_ENDPOINT")
            .env_remove("FLEETLOG_KEY")
            .env_remove("FLEETLOG_API_VERSION")
            .env_remove("FLEETLOG_CA_CERT")
            .env_remove("FLEETCTL_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command
    }

    /// A command with the sandbox's endpoint and the admin key as flags.
    fn admin(&self, args: &[&str]) -> Command {
        let mut command = self.bare(args);
        command.args(["--endpoint", &self.url, "--key", ADMIN_KEY]);
        command
    }

    async fn output(mut command: Command) -> anyhow::Result<Run> {
        let output = tokio::time::timeout(RUN_TIMEOUT, command.output())
            .await
            .context("fleetctl did not finish in time")??;
        Ok(Run {
            code: output.status.code(),
            stdout: String::from_utf8(output.stdout)?,
            stderr: String::from_utf8(output.stderr)?,
        })
    }

    /// Runs as the admin.
    async fn run(&self, args: &[&str]) -> anyhow::Result<Run> {
        Self::output(self.admin(args)).await
    }

    /// Runs as the admin with `-o json` and parses the output.
    async fn json(&self, args: &[&str]) -> anyhow::Result<Value> {
        let mut args = args.to_vec();
        args.extend(["-o", "json"]);
        self.run(&args).await?.json()
    }
}

fn str_at<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// `metadata.revision` of a resource in JSON (a string: int64).
fn revision(resource: &Value) -> String {
    str_at(resource, "/metadata/revision").to_owned()
}

/// Reads lines of a running fleetctl until one contains `wanted`.
async fn line_with(
    lines: &mut Lines<BufReader<ChildStdout>>,
    wanted: &str,
) -> anyhow::Result<String> {
    let read = async {
        while let Some(line) = lines.next_line().await? {
            if line.contains(wanted) {
                return Ok(line);
            }
        }
        bail!("fleetctl's output ended before a line with {wanted:?}")
    };
    tokio::time::timeout(RUN_TIMEOUT, read)
        .await
        .with_context(|| format!("no line with {wanted:?} in time"))?
}

fn spawn_lines(mut command: Command) -> anyhow::Result<(Child, Lines<BufReader<ChildStdout>>)> {
    let mut child = command.stderr(Stdio::inherit()).spawn()?;
    let stdout = child.stdout.take().context("fleetctl's stdout")?;
    Ok((child, BufReader::new(stdout).lines()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_verb_works_on_devices_accounts_and_both_versions() -> anyhow::Result<()> {
    let sandbox = Sandbox::start().await?;
    let ctl = Ctl::new(sandbox.grpc_url())?;
    let gw1 = format!("{PARENT}/devices/gw-1");
    let gw2 = format!("{PARENT}/devices/gw-2");

    // create: parent, collection and ID from the name; the body from --set.
    let created = ctl
        .json(&[
            "create",
            &gw1,
            "--set",
            "displayName=x",
            "--set",
            "metadata.labels.site=berlin",
        ])
        .await?;
    ensure!(str_at(&created, "/name") == gw1, "{created}");
    let rev1 = revision(&created);
    ensure!(!rev1.is_empty(), "{created}");
    let created2 = ctl
        .json(&[
            "create",
            &gw2,
            "--set",
            "labels.site=paris",
            "--set",
            "spec.logging_config.units=sshd.service,cron.service",
        ])
        .await?;
    let rev2 = revision(&created2);

    // get: JSON, and the table.
    let got = ctl.json(&["get", &gw1, "--min-revision", &rev1]).await?;
    ensure!(str_at(&got, "/displayName") == "x", "{got}");
    ensure!(str_at(&got, "/metadata/labels/site") == "berlin", "{got}");
    let table = ctl
        .run(&["get", &gw1, "--min-revision", &rev1])
        .await?
        .ok()?;
    ensure!(
        table.starts_with("NAME")
            && table.contains("DISPLAY NAME")
            && table.contains("site=berlin"),
        "{table}"
    );
    ensure!(table.contains(&gw1), "{table}");
    let masked = ctl
        .json(&[
            "get",
            &gw1,
            "--mask",
            "metadata.labels",
            "--min-revision",
            &rev1,
        ])
        .await?;
    ensure!(masked.get("displayName").is_none(), "masked out: {masked}");
    ensure!(
        str_at(&masked, "/metadata/labels/site") == "berlin",
        "{masked}"
    );

    // get of several names: one BatchGet.
    let both = ctl
        .json(&["get", &gw1, &gw2, "--min-revision", &rev2])
        .await?;
    ensure!(
        both["devices"].as_array().map(Vec::len) == Some(2),
        "{both}"
    );

    // list with a filter, as YAML.
    let collection = format!("{PARENT}/devices");
    let yaml = ctl
        .run(&[
            "list",
            &collection,
            "--filter",
            r#"labels.site = "berlin""#,
            "--min-revision",
            &rev2,
            "-o",
            "yaml",
        ])
        .await?
        .ok()?;
    let listed: Value = serde_yaml::from_str(&yaml).with_context(|| format!("YAML: {yaml}"))?;
    let names: Vec<&str> = listed["devices"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| str_at(d, "/name"))
        .collect();
    ensure!(names == [gw1.as_str()], "{yaml}");
    // --all follows the pages.
    let all = ctl
        .json(&[
            "list",
            &collection,
            "--page-size",
            "1",
            "--all",
            "--min-revision",
            &rev2,
        ])
        .await?;
    ensure!(all["devices"].as_array().map(Vec::len) == Some(2), "{all}");
    ensure!(all.get("nextPageToken").is_none(), "{all}");
    let first_page = ctl
        .run(&[
            "list",
            &collection,
            "--page-size",
            "1",
            "--min-revision",
            &rev2,
        ])
        .await?;
    ensure!(first_page.stderr.contains("--page-token"), "{first_page:?}");

    // update: the mask is the paths --set gave; the labels stay.
    let updated = ctl
        .json(&[
            "update",
            &gw1,
            "--set",
            "displayName=y",
            "--set",
            "spec.loggingConfig.priority=6",
        ])
        .await?;
    ensure!(str_at(&updated, "/displayName") == "y", "{updated}");
    ensure!(
        updated.pointer("/spec/loggingConfig/priority") == Some(&Value::from(6)),
        "{updated}"
    );
    ensure!(
        str_at(&updated, "/metadata/labels/site") == "berlin",
        "{updated}"
    );
    let rev3 = revision(&updated);

    // The same device in v1alpha2: no region, flat logging fields.
    let old = ctl
        .json(&[
            "--api-version",
            "v1alpha2",
            "get",
            "projects/p0/devices/gw-1",
            "--min-revision",
            &rev3,
        ])
        .await?;
    ensure!(str_at(&old, "/name") == "projects/p0/devices/gw-1", "{old}");
    ensure!(str_at(&old, "/displayName") == "y", "{old}");
    ensure!(
        old.pointer("/spec/logPriority") == Some(&Value::from(6)),
        "{old}"
    );

    // Actions: a service account made with fleetctl, and its key.
    let account = ctl
        .json(&[
            "create",
            "projects/p0/serviceAccounts/ops",
            "--set",
            "displayName=Ops",
        ])
        .await?;
    ensure!(
        str_at(&account, "/name") == "projects/p0/serviceAccounts/ops",
        "{account}"
    );
    let key = ctl
        .json(&[
            "call",
            "projects/p0/serviceAccounts/ops",
            "createServiceAccountKey",
        ])
        .await?;
    ensure!(
        str_at(&key, "/keyName").starts_with("projects/p0/serviceAccounts/ops/keys/"),
        "{key}"
    );
    let secret = str_at(&key, "/key").to_owned();
    ensure!(!secret.is_empty(), "{key}");
    // The new key has no role yet: PERMISSION_DENIED, its own exit code.
    let mut denied = ctl.bare(&["get", &gw1]);
    denied.args(["--endpoint", &ctl.url, "--key", &secret]);
    Ctl::output(denied)
        .await?
        .failed(EXIT_ACCESS, &["fleetctl: PERMISSION_DENIED: "])?;
    let provisioned = ctl
        .json(&["call", &gw2, "provisionServiceAccountToDevice"])
        .await?;
    ensure!(
        !str_at(&provisioned, "/serviceAccountKey/key").is_empty(),
        "{provisioned}"
    );
    // A table of a response that is no resource.
    let table = ctl
        .run(&[
            "call",
            "projects/p0/serviceAccounts/ops",
            "CreateServiceAccountKey",
        ])
        .await?
        .ok()?;
    ensure!(
        table.contains("key_name") && table.contains("fl"),
        "{table}"
    );

    // delete, then the second delete finds nothing; --allow-missing is fine.
    let deleted = ctl.run(&["delete", &gw1]).await?.ok()?;
    ensure!(deleted.contains(&format!("deleted {gw1}")), "{deleted}");
    ctl.run(&["delete", &gw1])
        .await?
        .failed(EXIT_NOT_FOUND, &["fleetctl: NOT_FOUND: "])?;
    ctl.run(&["delete", &gw1, "--allow-missing"]).await?.ok()?;

    // Errors.
    ctl.run(&["get", &format!("{PARENT}/devices/never")])
        .await?
        .failed(EXIT_NOT_FOUND, &["NOT_FOUND"])?;
    ctl.run(&["get", "projects/p0/things/x"]).await?.failed(
        EXIT_USAGE,
        &[
            "projects/p0/things/x",
            "projects/{project}/regions/{region}/devices/{device}",
            "projects/{project}/serviceAccounts/{service_account}",
        ],
    )?;
    ctl.run(&["get", "projects/p0/devices/gw-2"])
        .await?
        .failed(EXIT_USAGE, &["--api-version v1alpha2"])?;
    ctl.run(&[
        "create",
        &format!("{PARENT}/devices/gw-3"),
        "--set",
        "spec.nope=1",
    ])
    .await?
    .failed(EXIT_USAGE, &["unknown field `spec.nope`"])?;
    ctl.run(&["call", &gw2, "explode"])
        .await?
        .failed(EXIT_USAGE, &["provisionServiceAccountToDevice"])?;
    ctl.run(&["list", &collection, "--filter", "nope = 1"])
        .await?
        .failed(4, &["INVALID_ARGUMENT"])?;
    sandbox.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_prints_changes_as_they_happen() -> anyhow::Result<()> {
    let sandbox = Sandbox::start().await?;
    let ctl = Ctl::new(sandbox.grpc_url())?;
    let name = format!("{PARENT}/devices/watched");
    ctl.run(&["create", &name, "--set", "displayName=before"])
        .await?
        .ok()?;

    // `get --watch`: the current state, then the change made meanwhile.
    let (mut child, mut lines) = spawn_lines(ctl.admin(&["get", &name, "--watch"]))?;
    line_with(&mut lines, "-- current state complete").await?;
    ctl.run(&["update", &name, "--set", "displayName=after"])
        .await?
        .ok()?;
    let line = line_with(&mut lines, "MODIFIED").await?;
    ensure!(line.contains(&name), "{line}");
    child.kill().await?;

    // `watch COLLECTION -o json`: one JSON document per line.
    let collection = format!("{PARENT}/devices");
    let (mut child, mut lines) = spawn_lines(ctl.admin(&["watch", &collection, "-o", "json"]))?;
    line_with(&mut lines, "\"isCurrent\":true").await?;
    let added = format!("{PARENT}/devices/added");
    ctl.run(&["create", &added]).await?.ok()?;
    let line = line_with(&mut lines, "ADDED").await?;
    let change: Value = serde_json::from_str(&line)?;
    ensure!(str_at(&change, "/changes/0/name") == added, "{line}");
    child.kill().await?;
    sandbox.stop().await
}

fn write_config(dir: &Path, text: &str) -> anyhow::Result<String> {
    let path = dir.join("fleetctl.yaml");
    std::fs::write(&path, text)?;
    Ok(path.display().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_come_from_flags_env_and_the_config_file() -> anyhow::Result<()> {
    let sandbox = Sandbox::start().await?;
    let ctl = Ctl::new(sandbox.grpc_url())?;
    let dir = tempfile::tempdir()?;
    let file = write_config(
        dir.path(),
        &format!("endpoint: {}\nkey: wrong-key\noutput: json\n", ctl.url),
    )?;

    // The file's wrong key: UNAUTHENTICATED.
    Ctl::output(ctl.bare(&["--config", &file, "list", "regions"]))
        .await?
        .failed(EXIT_ACCESS, &["UNAUTHENTICATED"])?;
    // --key beats the file; the file's endpoint and output still count.
    let listed = Ctl::output(ctl.bare(&["--config", &file, "list", "regions", "--key", ADMIN_KEY]))
        .await?
        .json()?;
    ensure!(listed.is_object(), "{listed}");
    // So does FLEETLOG_KEY, and FLEETCTL_CONFIG names the file.
    let mut from_env = ctl.bare(&["list", "regions"]);
    from_env
        .env("FLEETCTL_CONFIG", &file)
        .env("FLEETLOG_KEY", ADMIN_KEY);
    Ctl::output(from_env).await?.json()?;
    // The default location is read too.
    let home_config = ctl.home.path().join("fleetlog");
    std::fs::create_dir_all(&home_config)?;
    write_config(
        &home_config,
        &format!("endpoint: {}\nkey: {ADMIN_KEY}\n", ctl.url),
    )?;
    let table = Ctl::output(ctl.bare(&["list", "regions"])).await?.ok()?;
    ensure!(table.starts_with("NAME"), "{table}");

    // `config show` says where each setting came from, never the key.
    let mut show = ctl.bare(&["config", "show", "--config", &file]);
    show.env("FLEETLOG_KEY", ADMIN_KEY);
    let shown = Ctl::output(show).await?.ok()?;
    ensure!(
        !shown.contains(ADMIN_KEY) && !shown.contains("wrong-key"),
        "{shown}"
    );
    ensure!(
        shown.contains("<redacted>") && shown.contains("env FLEETLOG_KEY"),
        "{shown}"
    );
    ensure!(
        shown.contains(&ctl.url) && shown.contains("config file"),
        "{shown}"
    );

    // A key the file format does not have is refused, naming it.
    let bad = write_config(dir.path(), "endpoint: http://127.0.0.1:1\nkee: x\n")?;
    Ctl::output(ctl.bare(&["--config", &bad, "list", "regions", "--key", ADMIN_KEY]))
        .await?
        .failed(EXIT_CONFIG, &["kee", &bad])?;
    // A config file given but missing is an error too.
    Ctl::output(ctl.bare(&["--config", "/nonexistent/fleetctl.yaml", "list", "regions"]))
        .await?
        .failed(EXIT_CONFIG, &["/nonexistent/fleetctl.yaml"])?;
    sandbox.stop().await
}

#[tokio::test]
async fn completions_and_api_resources_need_no_server() -> anyhow::Result<()> {
    let ctl = Ctl::new("http://127.0.0.1:1".into())?;
    for shell in ["bash", "zsh", "fish", "powershell"] {
        let script = Ctl::output(ctl.bare(&["completion", shell])).await?.ok()?;
        ensure!(script.contains("fleetctl"), "{shell}: {script}");
    }
    let table = Ctl::output(ctl.bare(&["api-resources"])).await?.ok()?;
    let listed = Ctl::output(ctl.bare(&["api-resources", "-o", "json"]))
        .await?
        .json()?;
    let resources = listed["resources"].as_array().context("resources")?;
    ensure!(resources.len() == CATALOG.resources.len(), "{listed}");
    for resource in &CATALOG.resources {
        let pattern = resource.pattern.to_string();
        ensure!(
            table.lines().any(|l| l.contains(&pattern)
                && l.contains(&resource.type_name)
                && l.starts_with(&resource.version)),
            "{} {pattern} missing from\n{table}",
            resource.version
        );
    }
    for action in &CATALOG.actions {
        ensure!(table.contains(&action.verb), "{} missing", action.verb);
    }
    // Nothing listens there: UNAVAILABLE, its own exit code.
    Ctl::output(ctl.bare(&["list", "regions", "--endpoint", &ctl.url]))
        .await?
        .failed(EXIT_UNAVAILABLE, &["UNAVAILABLE"])?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_endpoints_use_tls_with_a_given_ca_certificate() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ops/tls-selfsigned.sh");
    let made = std::process::Command::new(&script)
        .arg(dir.path())
        .output()
        .context("running ops/tls-selfsigned.sh")?;
    ensure!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let cert = dir.path().join("fleetd.crt");
    let key = dir.path().join("fleetd.key");
    let sandbox = Sandbox::start_with(|config| {
        config.tls = Some(fleetlog_services::fleetd::config::TlsFiles {
            cert_file: cert.clone(),
            key_file: key.clone(),
        });
    })
    .await?;
    let url = format!("https://{}", sandbox.ready.grpc);
    let ctl = Ctl::new(url.clone())?;
    let cert_arg = cert.display().to_string();
    let listed = ctl
        .json(&["list", "regions", "--ca-cert", &cert_arg])
        .await?;
    ensure!(listed.is_object(), "{listed}");
    // By name, too (the certificate is for localhost).
    let by_name = format!("https://localhost:{}", sandbox.ready.grpc.port());
    let mut named = ctl.bare(&["list", "regions", "-o", "json", "--key", ADMIN_KEY]);
    named
        .args(["--endpoint", &by_name])
        .env("FLEETLOG_CA_CERT", &cert_arg);
    Ctl::output(named).await?.json()?;
    // Without trusting the certificate the connection is refused.
    ctl.run(&["list", "regions"])
        .await?
        .failed(EXIT_UNAVAILABLE, &["UNAVAILABLE"])?;
    sandbox.stop().await
}
