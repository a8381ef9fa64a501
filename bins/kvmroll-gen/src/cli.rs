//! The command line of `kvmroll-gen`, as clap types (also read by the man
//! page and completion generator).

use clap::{Parser, Subcommand};

/// Render libvirt domain XML, kickstart fragments, udev rules and dracut
/// configuration from the kvmroll database.
#[derive(Debug, Parser)]
#[command(
    name = "kvmroll-gen",
    version,
    about,
    after_long_help = "EXIT STATUS\n  0 success; 1 something could not be rendered (one line per fault on stderr; with --all the other VMs are still printed); 2 usage error.\n\nFILES\n  /var/lib/kvmroll/kvmroll.db  the cluster database, opened read-only"
)]
pub struct Cli {
    #[command(flatten)]
    pub db: kvmroll_cli::args::Db,

    #[command(flatten)]
    pub verbose: kvmroll_cli::args::Verbose,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print a VM's libvirt domain XML (`--all`: every VM, one document after another).
    Domain {
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        vm: Option<String>,
        #[arg(long)]
        all: bool,
    },
    /// Print the Rocks-style kickstart XML fragment that makes HOST a VM container (kvm=true).
    Kickstart {
        host: String,
        /// Install kvmroll from this tarball (scripts/install.sh --tarball)
        /// instead of the kvmroll package [default: the kvmroll_dist_url
        /// attribute, else the package from the frontend's repository].
        #[arg(long)]
        dist_url: Option<String>,
    },
    /// Print the udev rules binding HOST's passed-through PCI devices to vfio-pci.
    Udev { host: String },
    /// Print the dracut configuration putting vfio-pci and those rules into HOST's initramfs.
    Dracut { host: String },
}
