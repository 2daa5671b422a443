//! `fleetctl`, the Fleetlog command-line client.

mod cli;
mod devices;
mod error;
mod names;
mod output;
mod projection;
mod upgrade;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::error::Error;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    // Usage errors exit with code 2 here, `--help` and `--version` with 0.
    let cli = Cli::parse();
    let subcommand = cli.command.path();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => err.report(&subcommand),
    }
}

async fn run(cli: Cli) -> Result<(), Error> {
    match cli.command {
        Command::Devices(command) => {
            let conn = devices::Connection {
                endpoint: cli.endpoint,
                key: cli.key,
            };
            devices::run(&conn, command, cli.output).await
        }
        Command::Upgrade(command) => {
            let conn = devices::Connection {
                endpoint: cli.endpoint,
                key: cli.key,
            };
            upgrade::run(&conn, command, cli.output).await
        }
        Command::Projection(command) => projection::run(command).await,
    }
}
