//! Clear config errors, through the real `fleetd` binary: a bad file or
//! `FLEETLOG_*` variable stops fleetd at once (exit 2, before it creates its
//! data dir or starts a nats-server) with one line on stderr naming the key,
//! variable or path. And `ops/tls-selfsigned.sh` makes a pair that rustls
//! serves and a client trusts.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use fleetlog_services::fleetd::Config;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// What a finished `fleetd` run left behind.
struct Exit {
    code: Option<i32>,
    stderr: String,
    took: Duration,
}

/// Runs `fleetd ROLE --config FILE` with only `env` among the `FLEETLOG_*`
/// variables; a nats-server binary that does not exist, so nothing can start
/// even if the config were accepted.
fn fleetd(role: &str, config: &Path, env: &[(&str, &str)]) -> anyhow::Result<Exit> {
    let mut command = Command::new(fleetlog_tests::fleetd_bin()?);
    command
        .arg(role)
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "warn")
        .env("FLEETLOG_NATS_SERVER", "/nonexistent/nats-server")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (name, _) in std::env::vars() {
        if name.starts_with("FLEETLOG_") && name != "FLEETLOG_NATS_SERVER" {
            command.env_remove(name);
        }
    }
    for (name, value) in env {
        command.env(name, value);
    }
    let started = Instant::now();
    let mut child = command.spawn().context("starting fleetd")?;
    let mut stderr = child.stderr.take().context("fleetd stderr")?;
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            bail!("fleetd still ran 20 s after it was started with a bad config");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let took = started.elapsed();
    let stderr = reader
        .join()
        .map_err(|_| anyhow::anyhow!("reading stderr"))?;
    Ok(Exit {
        code: status.code(),
        stderr,
        took,
    })
}

/// A directory with `fleetd.yaml` holding `body` after the given first
/// lines, and the data dir fleetd would create (`data`, not there yet).
struct Case {
    dir: tempfile::TempDir,
}

impl Case {
    fn new(text: &str) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let data = dir.path().join("data");
        let text = text.replace("DATA_DIR", &data.display().to_string());
        std::fs::write(dir.path().join("fleetd.yaml"), text)?;
        Ok(Case { dir })
    }

    fn file(&self) -> PathBuf {
        self.dir.path().join("fleetd.yaml")
    }

    /// `fleetd all` must refuse the config (see [`Case::refused_as`]).
    fn refused(&self, env: &[(&str, &str)], says: &[&str]) -> anyhow::Result<String> {
        self.refused_as("all", env, says)
    }

    /// fleetd must refuse the config for `role`: exit 2 within seconds,
    /// nothing started, stderr one `fleetd: ` line holding every one of `says`.
    fn refused_as(
        &self,
        role: &str,
        env: &[(&str, &str)],
        says: &[&str],
    ) -> anyhow::Result<String> {
        let exit = fleetd(role, &self.file(), env)?;
        let stderr = exit.stderr.trim().to_owned();
        ensure!(
            exit.code == Some(2),
            "exit {:?}, stderr: {stderr}",
            exit.code
        );
        ensure!(
            exit.took < Duration::from_secs(10),
            "took {:?} to refuse",
            exit.took
        );
        ensure!(
            !self.dir.path().join("data").exists(),
            "fleetd created its data dir before refusing; stderr: {stderr}"
        );
        ensure!(
            stderr.starts_with("fleetd: ") && stderr.lines().count() == 1,
            "want one `fleetd: ` line, got: {stderr}"
        );
        ensure!(
            !stderr.contains("panicked") && !stderr.contains(" { "),
            "a panic or a Debug dump: {stderr}"
        );
        for want in says {
            ensure!(stderr.contains(want), "stderr lacks {want:?}: {stderr}");
        }
        Ok(stderr)
    }
}

const VALID: &str =
    "version: 1\ndata_dir: DATA_DIR\nlisten: 127.0.0.1:0\nhttp_listen: 127.0.0.1:0\n";

#[test]
fn an_unknown_key_is_named_with_its_line_and_the_valid_keys() -> anyhow::Result<()> {
    let case = Case::new(&format!("{VALID}lisen: 127.0.0.1:7400\n"))?;
    let file = case.file().display().to_string();
    case.refused(
        &[],
        &[
            &format!("{file}:5:1: unknown field `lisen`"),
            "expected one of `version`, `nats_url`, `listen`",
            "did you mean `listen`?",
        ],
    )?;
    Ok(())
}

#[test]
fn the_api_and_projector_roles_need_a_nats_url() -> anyhow::Result<()> {
    let case = Case::new(VALID)?;
    for role in ["api", "projector"] {
        case.refused_as(
            role,
            &[],
            &[
                &format!("the {role} role needs a NATS server"),
                "FLEETLOG_NATS_URL",
            ],
        )?;
    }
    Ok(())
}

#[test]
fn a_file_without_a_version_says_to_add_one() -> anyhow::Result<()> {
    let case = Case::new("data_dir: DATA_DIR\nregion: eu1\n")?;
    let file = case.file().display().to_string();
    case.refused(&[], &[&file, "add `version: 1`"])?;
    Ok(())
}

#[test]
fn another_version_is_refused() -> anyhow::Result<()> {
    let case = Case::new("version: 2\ndata_dir: DATA_DIR\nsomething_new: true\n")?;
    let file = case.file().display().to_string();
    case.refused(
        &[],
        &[
            &format!("{file}:1: config version 2 is not supported"),
            "reads version 1",
        ],
    )?;
    Ok(())
}

#[test]
fn a_bad_environment_value_names_the_variable() -> anyhow::Result<()> {
    let case = Case::new(VALID)?;
    case.refused(
        &[("FLEETLOG_LISTEN", "notanaddress")],
        &[
            "environment variable FLEETLOG_LISTEN=\"notanaddress\"",
            "expected IP:PORT",
        ],
    )?;
    case.refused(
        &[("FLEETLOG_READ_WAIT_MS", "5s")],
        &["FLEETLOG_READ_WAIT_MS=\"5s\"", "milliseconds"],
    )?;
    Ok(())
}

#[test]
fn a_missing_tls_file_is_named() -> anyhow::Result<()> {
    let missing = "/nonexistent/fleetlog/fleetd.crt";
    let case = Case::new(&format!(
        "{VALID}tls:\n  cert_file: {missing}\n  key_file: /nonexistent/fleetlog/fleetd.key\n"
    ))?;
    let file = case.file().display().to_string();
    case.refused(
        &[],
        &[
            &format!("{file}:6: tls.cert_file \"{missing}\" cannot be read"),
            "ops/tls-selfsigned.sh",
        ],
    )?;
    // From the environment, and only one of the pair.
    let case = Case::new(VALID)?;
    case.refused(
        &[("FLEETLOG_TLS_CERT", missing)],
        &["FLEETLOG_TLS_CERT", "tls.key_file is not"],
    )?;
    Ok(())
}

/// The control: the same harness with a valid file gets past the config
/// (fleetd creates its data dir) and fails on the nats-server that does not
/// exist, with another exit code.
#[test]
fn a_valid_file_gets_past_the_config() -> anyhow::Result<()> {
    let case = Case::new(VALID)?;
    let exit = fleetd("all", &case.file(), &[])?;
    ensure!(
        exit.code == Some(1),
        "exit {:?}: {}",
        exit.code,
        exit.stderr
    );
    ensure!(case.dir.path().join("data").exists(), "{}", exit.stderr);
    ensure!(exit.stderr.contains("nats-server"), "{}", exit.stderr);
    Ok(())
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../ops/tls-selfsigned.sh")
}

/// Runs `ops/tls-selfsigned.sh args…`; returns its stdout.
fn selfsigned(args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new(script())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running ops/tls-selfsigned.sh")?;
    ensure!(
        output.status.success(),
        "ops/tls-selfsigned.sh {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8(output.stdout)?)
}

#[test]
fn the_selfsigned_script_makes_a_pem_pair() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let tls = dir.path().join("tls");
    let tls_arg = tls.display().to_string();
    let stdout = selfsigned(&[&tls_arg])?;
    let cert = tls.join("fleetd.crt");
    let key = tls.join("fleetd.key");
    let cert_pem = std::fs::read_to_string(&cert)?;
    let key_pem = std::fs::read_to_string(&key)?;
    ensure!(
        cert_pem.starts_with("-----BEGIN CERTIFICATE-----"),
        "{cert_pem}"
    );
    ensure!(
        key_pem.starts_with("-----BEGIN PRIVATE KEY-----"),
        "a PEM key"
    );
    ensure!(
        stdout.contains(&format!("FLEETLOG_TLS_CERT={}", cert.display()))
            && stdout.contains(&format!("FLEETLOG_TLS_KEY={}", key.display())),
        "{stdout}"
    );
    // Run again: the pair is kept; with --force it is replaced.
    selfsigned(&[&tls_arg])?;
    ensure!(std::fs::read_to_string(&cert)? == cert_pem, "kept");
    selfsigned(&["--force", &tls_arg])?;
    ensure!(std::fs::read_to_string(&cert)? != cert_pem, "replaced");
    // fleetd's config accepts the pair.
    let tls_env = [
        ("FLEETLOG_TLS_CERT", cert.display().to_string()),
        ("FLEETLOG_TLS_KEY", key.display().to_string()),
    ];
    let config = Config::load(None, |name| {
        tls_env
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
    })?;
    let files = config.tls.context("tls is set")?;
    ensure!(files.cert_file == cert && files.key_file == key);
    Ok(())
}

#[test]
fn a_key_from_another_pair_is_refused() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (one, two) = (dir.path().join("one"), dir.path().join("two"));
    selfsigned(&[&one.display().to_string()])?;
    selfsigned(&[&two.display().to_string()])?;
    let key = two.join("fleetd.key").display().to_string();
    let cert = one.join("fleetd.crt").display().to_string();
    let err = Config::load(None, |name| match name {
        "FLEETLOG_TLS_CERT" => Some(cert.clone()),
        "FLEETLOG_TLS_KEY" => Some(key.clone()),
        _ => None,
    })
    .err()
    .context("a mismatched pair was accepted")?;
    let message = err.to_string();
    ensure!(
        message.starts_with(&format!("environment variable FLEETLOG_TLS_KEY={key:?}"))
            && message.contains("does not match the certificate"),
        "{message}"
    );
    Ok(())
}

/// A client that trusts only the certificate itself (as the TLS tests and
/// `curl --cacert` do) completes a handshake for every name in it, and not
/// for another.
#[test]
fn rustls_serves_and_trusts_the_selfsigned_pair() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    selfsigned(&[&dir.path().display().to_string(), "fleetd.test", "10.1.2.3"])?;
    let certs = CertificateDer::pem_file_iter(dir.path().join("fleetd.crt"))?
        .collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(dir.path().join("fleetd.key"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = Arc::new(
        rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(certs.clone(), key)?,
    );
    let mut roots = rustls::RootCertStore::empty();
    for cert in &certs {
        roots.add(cert.clone())?;
    }
    let client = Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    for name in ["localhost", "127.0.0.1", "::1", "fleetd.test", "10.1.2.3"] {
        handshake(&client, &server, name).with_context(|| format!("as {name}"))?;
    }
    let err = handshake(&client, &server, "example.com")
        .err()
        .context("a name not in the certificate was accepted")?;
    ensure!(format!("{err:#}").contains("not valid for name"), "{err:#}");
    Ok(())
}

/// A TLS handshake in memory, with `name` as the server name.
fn handshake(
    client: &Arc<rustls::ClientConfig>,
    server: &Arc<rustls::ServerConfig>,
    name: &str,
) -> anyhow::Result<()> {
    let mut client =
        rustls::ClientConnection::new(client.clone(), ServerName::try_from(name.to_owned())?)?;
    let mut server = rustls::ServerConnection::new(server.clone())?;
    for _ in 0..10 {
        let mut bytes = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut bytes)?;
        }
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            server.read_tls(&mut rest)?;
            server.process_new_packets()?;
        }
        bytes.clear();
        while server.wants_write() {
            server.write_tls(&mut bytes)?;
        }
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            client.read_tls(&mut rest)?;
            client.process_new_packets()?;
        }
        if !client.is_handshaking() && !server.is_handshaking() {
            return Ok(());
        }
    }
    bail!("the handshake did not finish")
}
