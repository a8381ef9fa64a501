//! The command line of `kvmroll`, as clap types. They stay in the binary and
//! are turned into core values before any work starts.

use clap::{Args, Parser, Subcommand};
use clap_complete::engine::ArgValueCandidates;
use std::path::PathBuf;

/// Manage a kvmroll cluster: hosts, VMs and their attributes.
///
/// Exit status: 0 on success; 1 when the command failed or was refused (the
/// database is unchanged); 2 for a usage error; 3 when the database was
/// changed but a libvirt definition could not be refreshed (the VM is marked
/// stale; `kvmroll vm define VM` retries), or a removed VM's image could not
/// be deleted.
#[derive(Debug, Parser)]
#[command(
    name = "kvmroll",
    version,
    about,
    long_about,
    after_long_help = "EXIT STATUS\n  0 success; 1 failure or refusal, one line on stderr, the database unchanged (attr get of an unset attribute: 1 and no output); 2 usage error; 3 the database changed but a libvirt definition could not be refreshed (the VM is marked stale; kvmroll vm define VM retries), or vm remove --delete-disks could not delete every image (each is named).\n\nFILES\n  /var/lib/kvmroll/kvmroll.db  the cluster database (SQLite, WAL); --db or $KVMROLL_DB (a path, sqlite:PATH or a postgresql:// URL), else the db line of /etc/kvmroll/kvmroll.conf, names another. `kvmroll db init` makes it, as do host add, appliance add and attr set where nothing is at its path; no other command makes one, and a file that is not a kvmroll database is refused\n\nENVIRONMENT\n  KVMROLL_DB  the database; KVMROLL_DB_READONLY=1 refuses every write; KVMROLL_STAGE (set by kvmroll-hook) defers libvirt refreshes"
)]
pub struct Cli {
    #[command(flatten)]
    pub db: kvmroll_cli::args::Db,

    #[command(flatten)]
    pub verbose: kvmroll_cli::args::Verbose,

    /// Change the database only; do not refresh libvirt definitions.
    #[arg(long, global = true)]
    pub no_sync: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The database itself: make it, or see what it holds.
    #[command(subcommand)]
    Db(DbCmd),
    /// Physical hosts (and VMs' own node rows).
    #[command(subcommand)]
    Host(HostCmd),
    /// Appliances: the kinds of host (compute, vm-container, ...).
    #[command(subcommand)]
    Appliance(ApplianceCmd),
    /// Virtual machines.
    #[command(subcommand)]
    Vm(VmCmd),
    /// Attributes: set, get, list and remove, at any scope.
    #[command(subcommand)]
    Attr(AttrCmd),
    /// Carry a cluster over from another system.
    #[command(subcommand)]
    Import(ImportCmd),
    /// What the hook did: every invocation and plugin run.
    #[command(args_conflicts_with_subcommands = true)]
    Events {
        #[command(subcommand)]
        prune: Option<EventsCmd>,
        /// Only this VM's events.
        #[arg(long, add = ArgValueCandidates::new(crate::names::vms))]
        vm: Option<String>,
        /// Only the events that happened on this container.
        #[arg(long, add = ArgValueCandidates::new(crate::names::hosts))]
        container: Option<String>,
        /// The newest N events.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[command(flatten)]
        json: Json,
        #[command(flatten)]
        header: kvmroll_cli::args::NoHeader,
    },
}

#[derive(Debug, Subcommand)]
pub enum DbCmd {
    /// Make the database (folder included), or upgrade an existing kvmroll
    /// database to this kvmroll's schema; a kvmroll database already
    /// current is left as it is. A file that is not a kvmroll database
    /// (an empty one included) is refused.
    ///
    /// Besides this, only the commands that can start a cluster (`host add`,
    /// `appliance add`, `attr set`) make a database, when its path does not
    /// exist yet; reads never do.
    ///
    /// On PostgreSQL, --container-role also creates the role VM containers
    /// connect as (or updates it), with only what containers need: read the
    /// cluster, record events, and the writes of allocate and shutdown
    /// plugins.
    Init {
        /// Create (or update) the containers' role, by default named
        /// kvmroll_container (PostgreSQL only).
        #[arg(long, value_name = "NAME", num_args = 0..=1, default_missing_value = "kvmroll_container")]
        container_role: Option<String>,
        /// The role's password: the first line of FILE, which only its
        /// owner may read (never a command-line argument).
        #[arg(long, value_name = "FILE", requires = "container_role")]
        container_password_file: Option<PathBuf>,
    },
    /// Copy a whole cluster (hosts, appliances, attributes, VMs with their
    /// disks and NICs, events, disk records) from one database to another,
    /// SQLite or PostgreSQL either way, in one transaction on TO, then check
    /// TO row for row against FROM. TO is made if it is a SQLite path that
    /// does not exist, or a PostgreSQL database without kvmroll's tables; a
    /// TO that holds a cluster already is refused. --db plays no part.
    Copy {
        /// The database to copy (a path, sqlite:PATH or postgresql://...).
        from: String,
        /// The database to fill.
        to: String,
    },
    /// The engine, location, schema version and how many hosts, VMs and
    /// events the database holds.
    Status {
        #[command(flatten)]
        json: Json,
    },
}

#[derive(Debug, Subcommand)]
pub enum ImportCmd {
    /// Import a Rocks cluster from the output of `rocks dump`.
    ///
    /// Appliances, hosts (the frontend under its Kickstart_PrivateHostname), every
    /// attribute at its scope, and the VMs with their disks, NICs and MACs,
    /// in one transaction. Each value is checked as if it were typed; a
    /// refused one stops the import naming its line. Lines of other verbs
    /// are counted. libvirt is not touched: `kvmroll vm define` defines the
    /// VMs on their containers.
    Rocks {
        /// The output of `rocks dump` on the Rocks frontend.
        dump: PathBuf,
        /// The output of `rocks list host vm showdisks=1`, for the VMs' cdroms.
        #[arg(long, value_name = "FILE")]
        vm_list: Option<PathBuf>,
        /// Print what the import would make, and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Import the rest when a value is refused, and list what was left out.
        #[arg(long)]
        skip_invalid: bool,
        /// Import into a database that already has hosts; a conflict (the
        /// same name with other values) is still refused.
        #[arg(long)]
        merge: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum EventsCmd {
    /// Delete old events: those older than DAYS days and beyond the newest N.
    /// With neither, the global attribute kvm_events_keep_days (default 90)
    /// gives the age. systemd/kvmroll-events-prune.timer runs it daily.
    Prune {
        /// Delete events older than this many days.
        #[arg(long, value_name = "DAYS", value_parser = clap::value_parser!(u32).range(1..))]
        older_than: Option<u32>,
        /// Keep only the newest N events.
        #[arg(long, value_name = "N")]
        keep: Option<u64>,
    },
}

#[derive(Debug, Args)]
pub struct Json {
    /// Print JSON for scripts (its fields: kvmroll(1), JSON OUTPUT).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum HostCmd {
    /// Add a host.
    Add {
        name: String,
        #[arg(long, default_value = "compute")]
        appliance: String,
        #[arg(long, default_value_t = 0)]
        rack: u32,
        #[arg(long, default_value_t = 0)]
        rank: u32,
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=4096))]
        cpus: u32,
        #[arg(long, default_value = "linux")]
        os: String,
    },
    /// Change a host's row.
    Set {
        #[arg(add = ArgValueCandidates::new(crate::names::hosts))]
        name: String,
        #[arg(long)]
        appliance: Option<String>,
        #[arg(long)]
        rack: Option<u32>,
        #[arg(long)]
        rank: Option<u32>,
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=4096))]
        cpus: Option<u32>,
        #[arg(long)]
        os: Option<String>,
        /// install or os.
        #[arg(long)]
        boot_action: Option<String>,
    },
    /// List hosts.
    List {
        #[command(flatten)]
        json: Json,
        #[command(flatten)]
        header: kvmroll_cli::args::NoHeader,
    },
    /// Show one host.
    Show {
        #[arg(add = ArgValueCandidates::new(crate::names::hosts))]
        name: String,
        #[command(flatten)]
        json: Json,
    },
    /// Remove a host (not a VM's, nor a container that holds VMs).
    Remove {
        #[arg(add = ArgValueCandidates::new(crate::names::hosts))]
        name: String,
    },
    /// Empty a VM container before it goes down: live-migrate its running
    /// VMs to other containers with room (free CPUs in the database, free
    /// memory, pinning), a few at once, each as `vm migrate` moves it. One
    /// line per VM: where it went, or why it stayed; exit 1 unless all moved.
    Evacuate {
        #[arg(add = ArgValueCandidates::new(crate::names::hosts))]
        container: String,
        /// How many migrations run at once.
        #[arg(long, value_name = "N", default_value_t = kvmroll_evacuate::DEFAULT_PARALLEL as u16, value_parser = clap::value_parser!(u16).range(1..=64))]
        parallel: u16,
        /// Abort a migration that takes longer than this (default: each
        /// VM's kvm_migrate_timeout, 600); the VM stays where it runs.
        #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=86400))]
        timeout: Option<u64>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ApplianceCmd {
    /// Add an appliance.
    Add { name: String },
    /// List appliances.
    List {
        #[command(flatten)]
        json: Json,
        #[command(flatten)]
        header: kvmroll_cli::args::NoHeader,
    },
}

#[derive(Debug, Subcommand)]
pub enum VmCmd {
    /// Add a VM and its own node row (appliance hosted-vm).
    Add(VmAdd),
    /// Change a VM's placement or size.
    Set(VmSet),
    /// List VMs, with the state each container's libvirt gives (asked of
    /// every container at once; one that does not answer within --timeout
    /// shows its VMs as unreachable).
    List {
        #[arg(long, add = ArgValueCandidates::new(crate::names::hosts))]
        container: Option<String>,
        #[command(flatten)]
        timeout: Timeout,
        #[command(flatten)]
        json: Json,
        #[command(flatten)]
        header: kvmroll_cli::args::NoHeader,
    },
    /// Start VMs through their container's libvirt (restoring a saved one);
    /// the hook runs their allocate and preboot plugins, which may refuse.
    Start(PowerArgs),
    /// Ask VMs to shut down (an ACPI request, which a guest may ignore).
    Shutdown(PowerArgs),
    /// Stop VMs at once, as pulling the plug would.
    Destroy {
        #[arg(required = true)]
        names: Vec<String>,
        #[command(flatten)]
        timeout: Timeout,
    },
    /// Attach to a VM's serial console: runs `virsh -c URI console NAME`
    /// with its container's libvirt_uri (Ctrl+] leaves it).
    Console { name: String },
    /// Show one VM.
    Show {
        #[arg(add = ArgValueCandidates::new(crate::names::vms))]
        name: String,
        #[command(flatten)]
        json: Json,
    },
    /// Remove a VM (and its libvirt definition, unless it runs). Its disk
    /// images stay, and the command says where, unless --delete-disks.
    Remove {
        #[arg(add = ArgValueCandidates::new(crate::names::vms))]
        name: String,
        /// Also delete the disk images kvmroll made for it, on its container.
        #[arg(long)]
        delete_disks: bool,
    },
    /// Set the VM's cdrom (an absolute path; under /dev a block device) or
    /// `none`. The definition changes; a running VM sees it at its next
    /// power cycle, or at once with --live.
    Cdrom {
        #[arg(add = ArgValueCandidates::new(crate::names::vms))]
        name: String,
        path: String,
        /// Also change the medium in the running VM now (libvirt's media
        /// change), as `virsh change-media --live` does.
        #[arg(long)]
        live: bool,
    },
    /// Add, remove or grow a disk.
    #[command(subcommand)]
    Disk(DiskCmd),
    /// Add or remove a NIC.
    #[command(subcommand)]
    Nic(NicCmd),
    /// Redefine VMs whose libvirt definition differs from the database (or is stale).
    Sync {
        #[arg(required_unless_present = "all")]
        #[arg(add = ArgValueCandidates::new(crate::names::vms))]
        names: Vec<String>,
        /// Every placed VM.
        #[arg(long, conflicts_with = "names")]
        all: bool,
        /// Also move the definition of each VM that CONTAINER's libvirt has
        /// but that now belongs to another container: defined there, then
        /// undefined on CONTAINER (unless it runs or has a saved image
        /// there). The hook runs this after an allocate plugin moved a VM.
        #[arg(long, value_name = "CONTAINER")]
        from: Option<String>,
    },
    /// Move a VM to another container: a running one live (libvirt's
    /// peer-to-peer migration, the destination's hook and plugins deciding
    /// too), a shut-off one as `vm set --container` does.
    Migrate {
        #[arg(add = ArgValueCandidates::new(crate::names::vms))]
        name: String,
        /// The destination container.
        #[arg(long, value_name = "CONTAINER", add = ArgValueCandidates::new(crate::names::hosts))]
        to: String,
        /// Abort a live migration that takes longer than this (default: the
        /// VM's kvm_migrate_timeout, 600).
        #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=86400))]
        timeout: Option<u64>,
    },
    /// Render VMs and define them in the libvirt of their container.
    Define {
        #[arg(required_unless_present = "all")]
        #[arg(add = ArgValueCandidates::new(crate::names::vms))]
        names: Vec<String>,
        /// Every placed VM (with --container, those of one container).
        #[arg(long, conflicts_with = "names")]
        all: bool,
        #[arg(long, requires = "all", add = ArgValueCandidates::new(crate::names::hosts))]
        container: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum DiskCmd {
    /// Add a disk: TYPE:PATH,DEV,BUS[,SIZE_GIB]. An image missing at the VM's
    /// first start is made then, inside kvm_disk_roots.
    Add {
        #[arg(add = ArgValueCandidates::new(crate::names::vms))]
        name: String,
        spec: String,
        /// Allow an image outside kvm_disk_roots: used as it is, never made.
        #[arg(long)]
        force: bool,
    },
    /// Remove a disk from the VM (its image stays).
    Remove {
        #[arg(add = ArgValueCandidates::new(crate::names::vms))]
        name: String,
        dev: String,
    },
    /// Grow a disk to SIZE GiB (never shrinks): at once while the VM runs,
    /// else at its next start.
    Resize {
        #[arg(add = ArgValueCandidates::new(crate::names::vms))]
        name: String,
        dev: String,
        #[arg(value_name = "SIZE_GIB", value_parser = clap::value_parser!(u32).range(1..))]
        size: u32,
    },
}

#[derive(Debug, Subcommand)]
pub enum NicCmd {
    Add {
        #[arg(add = ArgValueCandidates::new(crate::names::vms))]
        name: String,
        spec: String,
    },
    Remove {
        #[arg(add = ArgValueCandidates::new(crate::names::vms))]
        name: String,
        mac: String,
    },
}

/// Which scope an attribute command acts on; none of these means a host.
#[derive(Debug, Args)]
#[group(multiple = false)]
pub struct ScopeArgs {
    #[arg(long)]
    pub global: bool,
    #[arg(long, value_name = "OS")]
    pub os: Option<String>,
    #[arg(long, value_name = "APPLIANCE")]
    pub appliance: Option<String>,
    #[arg(long, value_name = "N")]
    pub rack: Option<u32>,
}

#[derive(Debug, Subcommand)]
pub enum AttrCmd {
    /// Set an attribute: `attr set HOST NAME VALUE`, or `attr set --global NAME VALUE`.
    ///
    /// VALUE may be `-` for standard input, or given with --value-file.
    Set {
        #[command(flatten)]
        scope: ScopeArgs,
        /// [HOST] NAME [VALUE]
        #[arg(num_args = 1..=3, required = true)]
        args: Vec<String>,
        /// Read the value from a file (`-` for standard input).
        #[arg(long, value_name = "FILE")]
        value_file: Option<PathBuf>,
        /// Set a name within two edits of a known attribute's, which is
        /// otherwise refused as a likely typo.
        #[arg(long)]
        force: bool,
    },
    /// Print a host's resolved value of an attribute (exit 1 when unset).
    Get {
        #[arg(add = ArgValueCandidates::new(crate::names::hosts))]
        host: String,
        #[arg(add = ArgValueCandidates::new(crate::names::attributes))]
        name: String,
    },
    /// Every resolved attribute of a host, with the scope it came from; or,
    /// after a scope flag, the attributes set at that scope alone.
    List {
        #[command(flatten)]
        scope: ScopeArgs,
        #[arg(
            required_unless_present_any = ["global", "os", "appliance", "rack"],
            add = ArgValueCandidates::new(crate::names::hosts)
        )]
        host: Option<String>,
        #[command(flatten)]
        json: Json,
        #[command(flatten)]
        header: kvmroll_cli::args::NoHeader,
    },
    /// The attributes kvmroll reads: name, scope, type, default and what
    /// each does (kvmroll-attributes(7) says more). Exit 1 for a NAME
    /// kvmroll does not read.
    Known {
        /// Only this attribute (kvm_device_3 is kvm_device_N).
        #[arg(add = ArgValueCandidates::new(crate::names::attributes))]
        name: Option<String>,
        #[command(flatten)]
        json: Json,
        #[command(flatten)]
        header: kvmroll_cli::args::NoHeader,
    },
    /// Remove an attribute: `attr rm HOST NAME` or `attr rm --global NAME`.
    Rm {
        #[command(flatten)]
        scope: ScopeArgs,
        /// [HOST] NAME
        #[arg(num_args = 1..=2, required = true)]
        args: Vec<String>,
    },
}

// `vm start`'s and `vm shutdown`'s arguments (their help is the variant's).
#[derive(Debug, Args)]
pub struct PowerArgs {
    #[arg(required_unless_present = "all")]
    pub names: Vec<String>,
    /// Every placed VM (with --container, those of one container).
    #[arg(long, conflicts_with = "names")]
    pub all: bool,
    #[arg(long, requires = "all")]
    pub container: Option<String>,
    #[command(flatten)]
    pub timeout: Timeout,
}

/// How long a command waits for the containers' libvirt to answer, all
/// asked at once; a container that has not answered by then is unreachable.
#[derive(Debug, Args)]
pub struct Timeout {
    /// How long to wait for the containers' libvirt to answer, in seconds.
    #[arg(
        long = "timeout",
        value_name = "SECONDS",
        default_value = "3",
        value_parser = parse_seconds
    )]
    pub limit: std::time::Duration,
}

/// A time limit in seconds, e.g. `3` or `0.5`.
fn parse_seconds(s: &str) -> Result<std::time::Duration, String> {
    match s.parse::<f64>() {
        Ok(n) if n > 0.0 && n <= 3600.0 => Ok(std::time::Duration::from_secs_f64(n)),
        _ => Err("a number of seconds above 0 and at most 3600".into()),
    }
}

// `vm add`'s arguments (its help is the variant's).
#[derive(Debug, Args)]
pub struct VmAdd {
    pub name: String,
    /// The VM container it runs on.
    #[arg(long, add = ArgValueCandidates::new(crate::names::hosts))]
    pub container: String,
    /// Memory in MiB.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub mem: u32,
    /// Virtual CPUs.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub cpus: u32,
    /// TYPE:PATH,DEV,BUS[,SIZE_GIB], TYPE one of file, raw, qcow2, block.
    #[arg(long = "disk", value_name = "SPEC")]
    pub disks: Vec<String>,
    /// bridge:NAME[,mac=MAC][,vlan=N][,model=M] or direct:DEV[,...].
    #[arg(long = "nic", value_name = "SPEC")]
    pub nics: Vec<String>,
    /// kvm, or qemu for software emulation.
    #[arg(long, default_value = "kvm")]
    pub virt_type: String,
    /// Allow disk images outside kvm_disk_roots: used as they are, never made.
    #[arg(long)]
    pub force: bool,
}

// `vm set`'s arguments (its help is the variant's).
#[derive(Debug, Args)]
pub struct VmSet {
    #[arg(add = ArgValueCandidates::new(crate::names::vms))]
    pub name: String,
    #[arg(long, add = ArgValueCandidates::new(crate::names::hosts))]
    pub container: Option<String>,
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub mem: Option<u32>,
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub cpus: Option<u32>,
    #[arg(long)]
    pub virt_type: Option<String>,
}
