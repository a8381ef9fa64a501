//! `kvmroll`: the admin CLI over the cluster database. Parses the command
//! line, runs one command and maps its outcome to the documented exit status.

use kvmroll::cli;
mod commands;
mod import;
mod sync;

use std::process::ExitCode;

fn main() -> ExitCode {
    let cli: cli::Cli = kvmroll_cli::parse("kvmroll");
    match commands::run(cli) {
        Ok(commands::Outcome::Done) => ExitCode::SUCCESS,
        Ok(commands::Outcome::Unset) => ExitCode::from(1),
        Ok(commands::Outcome::Stale) => ExitCode::from(3),
        Err(e) => {
            eprintln!("kvmroll: {}", sync::chain(e.as_ref()));
            ExitCode::from(1)
        }
    }
}
