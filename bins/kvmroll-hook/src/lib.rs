//! The command line of `kvmroll-hook` as a library, so that kvmroll-docs writes its
//! man page and completions from the very definition the binary parses with.

pub mod cli;

/// `kvmroll-hook`'s clap command.
pub fn command() -> clap::Command {
    <cli::Cli as clap::CommandFactory>::command()
}
