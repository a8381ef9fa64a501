//! The command line of `kvmroll-hook` outside libvirt's calls, as clap types
//! (also read by the man page and completion generator). libvirt's own call,
//! `qemu VM OP SUBOP EXTRA`, is recognised before clap runs.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// libvirt's qemu hook for kvmroll: runs the cluster's plugins at every VM lifecycle event.
///
/// Called by libvirtd as /etc/libvirt/hooks/qemu VM OP SUBOP EXTRA with the
/// domain XML on stdin. prepare begin runs the allocate plugins (database
/// read-write), start begin the preboot plugins (read-only; the VM is
/// compared with the facts of its kvmroll metadata), restore begin and
/// migrate begin the preboot filters (their XML goes back to libvirt on
/// stdout), release end the shutdown plugins (all run; then a detached
/// kvmroll vm sync), and every other event the on-OP plugins. The VM is
/// known from its definition's kvmroll metadata: the database is opened only
/// at allocate and shutdown with plugins, and plugins are told when it does
/// not answer. Events go to the container's spool, which a detached upkeep
/// forwards to the database. Plugins live in ROOT/plugins/STAGE.d and
/// ROOT/vms/VM/STAGE.d and must be owned by root and not writable by group
/// or others.
#[derive(Debug, Parser)]
#[command(
    name = "kvmroll-hook",
    version,
    about,
    long_about,
    after_long_help = "EXIT STATUS\n  0 libvirt may go on (always, for a VM the database does not know); 1 a stage refused, one line on stderr that libvirt shows; 2 a malformed call.\n\nFILES\n  /etc/libvirt/hooks/qemu (or qemu.d/kvmroll)  where it is installed\n  /etc/kvmroll/kvmroll.conf  db = PATH, root = DIR, host = NAME, kvmroll = PATH, spool = DIR ($KVMROLL_CONF names another)\n  /etc/kvmroll/plugins/STAGE.d/, /etc/kvmroll/vms/VM/STAGE.d/  the plugins"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Install this binary as libvirt's qemu hook, atomically, and say whether libvirtd must be restarted.
    Install {
        /// Install as /etc/libvirt/hooks/qemu.d/kvmroll (libvirt 6.5 and later), beside another hook.
        #[arg(long)]
        dropin: bool,
        /// Install under this root (package builds).
        #[arg(long, value_name = "DIR", default_value = "/")]
        root: PathBuf,
        /// Replace a hook that is not kvmroll's.
        #[arg(long)]
        force: bool,
    },
}
