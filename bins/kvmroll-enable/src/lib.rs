//! The command line of `kvmroll-enable` as a library, so that kvmroll-docs writes its
//! man page and completions from the very definition the binary parses with.

pub mod cli;

/// `kvmroll-enable`'s clap command.
pub fn command() -> clap::Command {
    <cli::Cli as clap::CommandFactory>::command()
}
