//! The command line of `kvmroll-enable`, as clap types (also read by the man
//! page and completion generator).

use clap::Parser;

/// Make a node a kvmroll VM container (or, with --disable, not) and reinstall it.
///
/// The reinstall command is the host's resolved kvm_reinstall_command
/// attribute: a command line, split by shell rules and run without a shell,
/// with {host} replaced by the host's name (an IPMI power cycle, an ssh
/// reboot, a site script). The database changes only if the command succeeds.
#[derive(Debug, Parser)]
#[command(
    name = "kvmroll-enable",
    version,
    about,
    long_about,
    after_long_help = "EXIT STATUS\n  0 done (with --dry-run: said what it would do); 1 refused or failed, one line on stderr, the database as it was; 2 usage error.\n\nFILES\n  /var/lib/kvmroll/kvmroll.db  the cluster database ($KVMROLL_DB or --db names another)"
)]
pub struct Cli {
    /// The host to enable.
    pub host: String,
    /// Set kvm=false instead (the host stops being a VM container).
    #[arg(long)]
    pub disable: bool,
    /// Say what would be done, and do nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Reinstall even though the host's libvirt runs VMs or cannot be reached.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub db: kvmroll_cli::args::Db,

    #[command(flatten)]
    pub verbose: kvmroll_cli::args::Verbose,
}
