//! `kvmroll-enable HOST`: makes a node a VM container, as setting `kvm=true`
//! and reinstalling did in Rocks. Sets the host's `kvm` attribute, sets its
//! boot action to install, and runs the reinstall command of its
//! `kvm_reinstall_command` attribute.
//!
//! Exit status: 0 done (or, with --dry-run, said); 1 refused or failed, with
//! one line on stderr and the database as it was; 2 usage error.

mod cli;
mod enable;
#[path = "../../shared/usage.rs"]
mod usage;

pub use cli::Cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    let cli: Cli = usage::parse("kvmroll-enable");
    match enable::run(&cli, &kvmroll_virt::Libvirt) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The reinstall command's output can be of any size.
            eprintln!("kvmroll-enable: {}", kvmroll_core::text::one_line(&e));
            ExitCode::from(1)
        }
    }
}
