//! The command line of `kvmroll` as a library, so that kvmroll-docs writes its
//! man page and completions from the very definition the binary parses with.

pub mod cli;
pub mod names;

/// `kvmroll`'s clap command.
pub fn command() -> clap::Command {
    <cli::Cli as clap::CommandFactory>::command()
}
