//! `fleetctl`, the Fleetlog command-line client.

mod cli;
mod config;
mod connect;
mod devices;
mod error;
mod generic;
mod names;
mod output;
mod projection;
mod render;
mod request;
mod rpc;
mod upgrade;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

use crate::cli::{Cli, Command, ConfigCommand};
use crate::config::Flags;
use crate::error::Error;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    // Usage errors exit with code 2 here, `--help` and `--version` with 0.
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(err) => err.exit(),
    };
    let flags = Flags::from_cli(&cli, &matches);
    let subcommand = cli.command.path();
    match run(cli.command, flags).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => err.report(&subcommand),
    }
}

async fn run(command: Command, flags: Flags) -> Result<(), Error> {
    // Commands that need no settings run even with a broken config file.
    let command = match command {
        Command::Completion(args) => {
            // Into a buffer: clap_complete panics when its writer fails
            // (`fleetctl completion bash | head`).
            let mut script = Vec::new();
            clap_complete::generate(args.shell, &mut Cli::command(), "fleetctl", &mut script);
            return Ok(output::write_stdout(&String::from_utf8_lossy(&script))?);
        }
        Command::Projection(command) => return projection::run(command).await,
        other => other,
    };
    let settings = config::load(flags)?;
    let out = settings.output.value;
    let conn = settings.connection();
    let ctx = generic::Ctx {
        conn: conn.clone(),
        out,
        version: settings.api_version.value.clone(),
    };
    // `devices` speaks its own version, and the rest name none.
    let generic_command = !matches!(
        command,
        Command::Config(_) | Command::Devices(_) | Command::Upgrade(_) | Command::ApiResources
    );
    if generic_command {
        generic::check_version(&ctx.version)?;
    }
    match command {
        Command::Get(args) => generic::get(&ctx, args).await,
        Command::List(args) => generic::list(&ctx, args).await,
        Command::Create(args) => generic::create(&ctx, args).await,
        Command::Update(args) => generic::update(&ctx, args).await,
        Command::Delete(args) => generic::delete(&ctx, args).await,
        Command::Watch(args) => generic::watch(&ctx, args).await,
        Command::Call(args) => generic::call(&ctx, args).await,
        Command::ApiResources => generic::api_resources(out),
        Command::Config(ConfigCommand::Show) => config::show(&settings),
        Command::Devices(command) => devices::run(&ctx, command).await,
        Command::Upgrade(command) => upgrade::run(&conn, command, out).await,
        Command::Completion(_) | Command::Projection(_) => Ok(()),
    }
}
