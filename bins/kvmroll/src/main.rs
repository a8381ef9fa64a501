//! `kvmroll`: the admin CLI over the cluster database. Parses the command
//! line, runs one command and maps its outcome to the documented exit status.

use kvmroll::cli;
mod commands;
mod states;
mod sync;

use std::process::ExitCode;

fn main() -> ExitCode {
    // `COMPLETE=bash kvmroll ...`: the shell asking for completions; answered
    // and exited here. Without COMPLETE set it returns at once.
    clap_complete::CompleteEnv::with_factory(kvmroll::command).complete();
    let cli: cli::Cli = kvmroll_cli::parse("kvmroll");
    kvmroll_cli::log::init_command("kvmroll", cli.verbose.verbose);
    kvmroll_cli::finish("kvmroll", commands::run(cli), commands::Exit::Failed)
}
