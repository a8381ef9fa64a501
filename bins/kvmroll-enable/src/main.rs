//! `kvmroll-enable HOST`: makes a node a VM container, as setting `kvm=true`
//! and reinstalling did in Rocks. Sets the host's `kvm` attribute, sets its
//! boot action to install, and runs the reinstall command of its
//! `kvm_reinstall_command` attribute.
//!
//! Exit status: 0 done (or, with --dry-run, said); 1 refused or failed, with
//! one line on stderr and the database as it was; 2 usage error.

use kvmroll_enable::cli;
mod enable;

pub use cli::Cli;

use std::process::ExitCode;

/// How `kvmroll-enable` exits (usage errors aside: 2).
#[derive(Debug, Clone, Copy)]
enum Exit {
    Done,
    /// Refused or failed; the database as it was.
    Failed,
}

impl kvmroll_cli::ExitStatus for Exit {
    fn code(&self) -> u8 {
        match self {
            Exit::Done => 0,
            Exit::Failed => 1,
        }
    }
}

/// Why the host was not enabled, as enable::run says it (the reinstall
/// command's output included, which can be of any size: the report keeps
/// its first line).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct NotEnabled(String);

fn main() -> ExitCode {
    let cli: Cli = kvmroll_cli::parse("kvmroll-enable");
    let result = enable::run(&cli).map(|()| Exit::Done).map_err(NotEnabled);
    kvmroll_cli::finish("kvmroll-enable", result, Exit::Failed)
}
