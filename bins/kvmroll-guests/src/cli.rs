//! The command line of `kvmroll-guests`, as clap types (also read by the
//! man page and completion generator).

use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// Save this container's VMs at shutdown and bring them back at boot.
#[derive(Debug, Parser)]
#[command(
    name = "kvmroll-guests",
    version,
    about,
    after_long_help = "EXIT STATUS\n  0 done; 1 could not run (a conflict with libvirt-guests or qemu.conf auto_shutdown, no database, no libvirt), one line on stderr; 2 usage error; 3 ran, but some VMs are not where they should be (listed on stderr).\n\nFILES\n  /var/lib/kvmroll/guests/journal.json  what stop and start did to each VM\n  /var/lib/kvmroll/guests/quarantine/   unusable save images, kept\n  /var/lib/libvirt/qemu/save/VM.save    libvirt's managed-save images\n  /usr/lib/systemd/system/kvmroll-guests.service  runs start at boot and stop at shutdown"
)]
pub struct Cli {
    #[command(flatten)]
    pub db: kvmroll_cli::args::Db,
    #[command(flatten)]
    pub verbose: kvmroll_cli::args::Verbose,
    /// This container's name in the database [default: the short host name].
    #[arg(long, global = true)]
    pub host: Option<String>,
    /// Where the journal and quarantined images are kept.
    #[arg(long, global = true, default_value = "/var/lib/kvmroll/guests")]
    pub state_dir: PathBuf,
    /// The system root for libvirt's save folder and configuration (tests, chroots).
    #[arg(long, global = true, default_value = "/", hide = true)]
    pub root: PathBuf,
    /// This container's libvirt [default: its libvirt_uri in the database, else qemu:///system].
    #[arg(long, global = true, value_name = "URI")]
    pub libvirt_uri: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// At boot: define this container's VMs libvirt lacks or has stale (from the database, when it
    /// answers), then restore the kvm_autostart VMs from their saved images, cold-boot those without.
    Start,
    /// At shutdown: managed-save the running kvm_autostart VMs, shut the others down.
    Stop,
    /// Each VM of this container: its state, its saved image, what the journal says.
    Status {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        header: kvmroll_cli::args::NoHeader,
    },
}
