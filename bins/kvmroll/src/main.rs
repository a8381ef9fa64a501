//! `kvmroll`: the admin CLI over the cluster database. Parses the command
//! line, runs one command and maps its outcome to the documented exit status.

mod cli;
mod commands;
mod sync;

use clap::Parser;
use std::process::ExitCode;

/// Parses the command line; a usage error is one line on stderr and exit
/// status 2 (clap's own report spans several, with a blank one).
fn parse() -> Result<cli::Cli, ExitCode> {
    match cli::Cli::try_parse() {
        Ok(cli) => Ok(cli),
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            let _ = e.print();
            Err(ExitCode::SUCCESS)
        }
        Err(e) => {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("bad usage");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            eprintln!("kvmroll: {first} (see kvmroll --help)");
            Err(ExitCode::from(2))
        }
    }
}

fn main() -> ExitCode {
    let cli = match parse() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
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
