//! What can go wrong in a command, and how it is reported: one line on
//! stderr (`fleetctl: NOT_FOUND: …`) and an exit code per class of error.

use std::fmt::Write as _;
use std::io::{self, Write as _};
use std::process::ExitCode;

use clap::CommandFactory;

use crate::cli::Cli;
use crate::output::code_name;

/// The exit codes, one per class of error (also listed in `fleetctl --help`).
pub mod exit {
    /// Anything else: a local failure, an unexpected server error.
    pub const OTHER: u8 = 1;
    /// Flags, names or bodies that do not make sense (clap's own code).
    pub const USAGE: u8 = 2;
    /// The config file, endpoint or TLS settings are unusable.
    pub const CONFIG: u8 = 3;
    /// The server refused the request: INVALID_ARGUMENT, FAILED_PRECONDITION,
    /// OUT_OF_RANGE.
    pub const REFUSED: u8 = 4;
    /// NOT_FOUND.
    pub const NOT_FOUND: u8 = 5;
    /// ALREADY_EXISTS, ABORTED: a conflict with the current state.
    pub const CONFLICT: u8 = 6;
    /// UNAUTHENTICATED, PERMISSION_DENIED.
    pub const ACCESS: u8 = 7;
    /// UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, or no connection
    /// at all: worth retrying.
    pub const UNAVAILABLE: u8 = 8;
}

/// The exit code for a gRPC status code.
pub fn exit_code_of(code: tonic::Code) -> u8 {
    use tonic::Code;
    match code {
        Code::Ok => 0,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => exit::REFUSED,
        Code::NotFound => exit::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => exit::CONFLICT,
        Code::Unauthenticated | Code::PermissionDenied => exit::ACCESS,
        Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted => exit::UNAVAILABLE,
        Code::Cancelled | Code::Unknown | Code::Unimplemented | Code::Internal | Code::DataLoss => {
            exit::OTHER
        }
    }
}

/// The text of `fleetctl --help` that lists the exit codes.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success
  1  other errors (local failures, INTERNAL, UNKNOWN, UNIMPLEMENTED, ...)
  2  usage: flags, names or request bodies that do not make sense
  3  config: the config file, endpoint or TLS settings are unusable
  4  refused: INVALID_ARGUMENT, FAILED_PRECONDITION, OUT_OF_RANGE
  5  NOT_FOUND
  6  conflict: ALREADY_EXISTS, ABORTED
  7  access: UNAUTHENTICATED, PERMISSION_DENIED
  8  unavailable: UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, no connection";

#[derive(Debug)]
pub enum Error {
    /// Flags, names or bodies that parse but do not make sense; reported like
    /// clap's own usage errors (exit code 2).
    Usage(String),
    /// The configuration (file, endpoint, TLS files) is unusable.
    Config(String),
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
    /// Already reported on stderr (e.g. each failed name of a `delete`);
    /// exit with this code.
    Reported(u8),
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

impl From<serde_yaml::Error> for Error {
    fn from(err: serde_yaml::Error) -> Self {
        Error::Other(format!("cannot render the response as YAML: {err}"))
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
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) => exit::USAGE,
            Error::Config(_) => exit::CONFIG,
            Error::Status { status, .. } => exit_code_of(status.code()),
            Error::Connect { .. } => exit::UNAVAILABLE,
            Error::Other(_) => exit::OTHER,
            Error::Io(err) if err.kind() == io::ErrorKind::BrokenPipe => 0,
            Error::Io(_) => exit::OTHER,
            Error::Reported(code) => *code,
        }
    }

    /// Prints the error to stderr and returns the process exit code.
    /// `subcommand` (e.g. `["devices", "update"]`) selects the usage line shown
    /// with usage errors.
    pub fn report(self, subcommand: &[&str]) -> ExitCode {
        let code = ExitCode::from(self.exit_code());
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
            }
            Error::Config(message) => stderr_line(&format!("fleetctl: config: {message}")),
            Error::Status { status, hint } => {
                stderr_line(&status_line(&status));
                if let Some(hint) = hint {
                    stderr_line(&hint);
                }
            }
            Error::Connect { endpoint, source } => {
                stderr_line(&format!(
                    "fleetctl: {}: cannot connect to fleetd at {endpoint}: {}",
                    code_name(tonic::Code::Unavailable),
                    chain(&source)
                ));
            }
            Error::Other(message) => stderr_line(&format!("fleetctl: {message}")),
            // The reader went away (`fleetctl ... | head`): not worth a message.
            Error::Io(err) if err.kind() == io::ErrorKind::BrokenPipe => {}
            Error::Io(err) => stderr_line(&format!("fleetctl: cannot write output: {err}")),
            Error::Reported(_) => {}
        }
        code
    }
}

/// `fleetctl: CODE: message` for a status (its source when the message is
/// empty, as for transport failures).
pub fn status_line(status: &tonic::Status) -> String {
    let mut message = status.message().to_owned();
    if message.is_empty()
        && let Some(source) = std::error::Error::source(status)
    {
        message = chain(source);
    }
    format!("fleetctl: {}: {message}", code_name(status.code()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_class_has_its_own_exit_code() {
        let codes = [
            exit::OTHER,
            exit::USAGE,
            exit::CONFIG,
            exit::REFUSED,
            exit::NOT_FOUND,
            exit::CONFLICT,
            exit::ACCESS,
            exit::UNAVAILABLE,
        ];
        let mut sorted = codes.to_vec();
        sorted.dedup();
        assert_eq!(sorted.len(), codes.len());
        for (code, line) in codes.iter().zip(EXIT_CODES_HELP.lines().skip(2)) {
            assert!(line.trim_start().starts_with(&code.to_string()), "{line}");
        }
        assert_eq!(exit_code_of(tonic::Code::NotFound), exit::NOT_FOUND);
        assert_eq!(exit_code_of(tonic::Code::Aborted), exit::CONFLICT);
        assert_eq!(exit_code_of(tonic::Code::PermissionDenied), exit::ACCESS);
    }

    #[test]
    fn status_lines_name_the_code() {
        let line = status_line(&tonic::Status::not_found(
            "projects/p/regions/r/devices/d not found",
        ));
        assert_eq!(
            line,
            "fleetctl: NOT_FOUND: projects/p/regions/r/devices/d not found"
        );
    }
}
