//! What can go wrong in a command, and how it is reported.

use std::fmt::Write as _;
use std::io::{self, Write as _};
use std::process::ExitCode;

use clap::CommandFactory;

use crate::cli::Cli;
use crate::output::code_name;

#[derive(Debug)]
pub enum Error {
    /// Flags that parse but do not make sense together; reported like clap's own
    /// usage errors (exit code 2).
    Usage(String),
    /// The server answered with a non-OK status.
    Status {
        status: tonic::Status,
        /// Advice printed after the error line.
        hint: Option<String>,
    },
    /// The endpoint could not be reached at all.
    Connect {
        endpoint: String,
        source: tonic::transport::Error,
    },
    /// Anything else, already phrased for the user.
    Other(String),
    /// Writing the output failed.
    Io(io::Error),
}

impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Self {
        Error::Status { status, hint: None }
    }
}

impl From<io::Error> for Error {
    fn from(err: io::Error) -> Self {
        Error::Io(err)
    }
}

impl From<serde_json::Error> for Error {
    fn from(err: serde_json::Error) -> Self {
        Error::Other(format!("cannot render the response as JSON: {err}"))
    }
}

/// Writes a line to stderr; unlike `eprintln!`, never panics.
pub fn stderr_line(line: &str) {
    let mut err = io::stderr().lock();
    let _ = err.write_all(line.as_bytes());
    let _ = err.write_all(b"\n");
}

/// `err` followed by its chain of sources, separated by ": ".
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // Some layers repeat their source's text; don't print it twice.
        if !text.ends_with(&cause_text) {
            let _ = write!(text, ": {cause_text}");
        }
        source = cause.source();
    }
    text
}

impl Error {
    /// Prints the error to stderr and returns the process exit code.
    /// `subcommand` (e.g. `["devices", "update"]`) selects the usage line shown
    /// with usage errors.
    pub fn report(self, subcommand: &[&str]) -> ExitCode {
        match self {
            Error::Usage(message) => {
                let mut target = Cli::command();
                // Propagates "fleetctl devices ..." into the subcommands' usage lines.
                target.build();
                for name in subcommand {
                    // Stop at the deepest subcommand that exists.
                    match target.find_subcommand(name).cloned() {
                        Some(sub) => target = sub,
                        None => break,
                    }
                }
                let err = target.error(clap::error::ErrorKind::ArgumentConflict, message);
                let _ = err.print();
                ExitCode::from(2)
            }
            Error::Status { status, hint } => {
                let mut message = status.message().to_owned();
                if message.is_empty()
                    && let Some(source) = std::error::Error::source(&status)
                {
                    message = chain(source);
                }
                stderr_line(&format!("error: {}: {message}", code_name(status.code())));
                if let Some(hint) = hint {
                    stderr_line(&hint);
                }
                ExitCode::from(1)
            }
            Error::Connect { endpoint, source } => {
                stderr_line(&format!(
                    "error: {}: cannot connect to fleetd at {endpoint}: {}",
                    code_name(tonic::Code::Unavailable),
                    chain(&source)
                ));
                ExitCode::from(1)
            }
            Error::Other(message) => {
                stderr_line(&format!("error: {message}"));
                ExitCode::from(1)
            }
            // The reader went away (`fleetctl ... | head`): not worth a message.
            Error::Io(err) if err.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
            Error::Io(err) => {
                stderr_line(&format!("error: cannot write output: {err}"));
                ExitCode::from(1)
            }
        }
    }
}
