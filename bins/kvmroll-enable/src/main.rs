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

// How kvmroll-enable exits: done, or refused or failed with the database
// as it was (usage errors aside: 2).
use kvmroll_cli::report::Exit;

fn main() -> ExitCode {
    let cli: Cli = kvmroll_cli::parse("kvmroll-enable");
    kvmroll_cli::log::init_command("kvmroll-enable", cli.verbose.verbose);
    let result = enable::run(&cli, &kvmroll_virt::Libvirt).map(|()| Exit::Done);
    kvmroll_cli::finish("kvmroll-enable", result, Exit::Failed)
}
