//! Why a host was not enabled (or disabled): what failed, with its context
//! and cause, said as one line by the report at the top of the binary
//! (`kvmroll_cli::finish`). Each one leaves the database as it was.

use kvmroll_core::{error_chain, StoreError};
use std::time::Duration;

/// Why `kvmroll-enable` did not enable (or disable) a host.
#[derive(Debug, thiserror::Error)]
pub enum EnableError {
    /// `--db` (or the configuration) names no usable database.
    #[error(transparent)]
    Location(#[from] kvmroll_core::conf::ConfigError),
    /// The database could not be opened, read or written. The store's and
    /// libvirt's errors are boxed: each is large, every other variant small.
    #[error(transparent)]
    Store(Box<StoreError>),
    /// The host is unknown, or the cluster refuses the change (a container
    /// disabled while it still holds VMs).
    #[error(transparent)]
    Cluster(#[from] kvmroll_core::ClusterError),
    #[error("{host} is a VM; VM containers are physical hosts")]
    HostIsVm { host: String },
    #[error("host {host} has no kvm_reinstall_command attribute (e.g. kvmroll attr set --global kvm_reinstall_command 'ipmitool -H {{host}}-ipmi chassis power cycle')")]
    NoReinstallCommand { host: String },
    #[error("kvm_reinstall_command {line:?} does not parse (unbalanced quotes?)")]
    ReinstallCommandUnparsable { line: String },
    #[error("kvm_reinstall_command is empty")]
    ReinstallCommandEmpty,
    #[error(
        "{host} still runs {} VM(s) ({}): stop them first, or reinstall anyway with --force",
        .vms.len(),
        .vms.join(", ")
    )]
    VmsRunning { host: String, vms: Vec<String> },
    /// The host's libvirt could not be asked what runs. The cause is not a
    /// `#[source]`: the message says it before the way out (`--force`),
    /// which the report's chain would put after it.
    #[error(
        "cannot ask {host}'s libvirt ({uri}) whether VMs run: {}; reinstall anyway with --force",
        error_chain(&**.cause)
    )]
    LibvirtUnanswered {
        host: String,
        uri: String,
        cause: Box<kvmroll_virt::VirtError>,
    },
    #[error(transparent)]
    Reinstall(#[from] ReinstallError),
    /// The reinstall failed, and putting the database back failed too: the
    /// host keeps the new `kvm` value and boot action.
    #[error("{}; and undoing the database change failed", error_chain(.reinstall))]
    UndoFailed {
        reinstall: ReinstallError,
        #[source]
        source: Box<StoreError>,
    },
}

impl From<StoreError> for EnableError {
    fn from(e: StoreError) -> Self {
        EnableError::Store(Box::new(e))
    }
}

/// Why the reinstall command did not start the reinstall.
#[derive(Debug, thiserror::Error)]
pub enum ReinstallError {
    #[error("reinstall command `{shown}` cannot be run")]
    Spawn {
        shown: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "reinstall command `{shown}` ran past {}s and was killed; the database is unchanged",
        .limit.as_secs()
    )]
    TimedOut { shown: String, limit: Duration },
    /// It ended in failure; `said` is the first line of its output (stderr
    /// before stdout), which can be of any size.
    #[error(
        "reinstall command `{shown}` failed ({ended}){}; the database is unchanged",
        .said.as_deref().map(|l| format!(": {l}")).unwrap_or_default()
    )]
    Failed {
        shown: String,
        ended: Ended,
        said: Option<String>,
    },
}

/// How a failed reinstall command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    Status(i32),
    Signal(i32),
    /// Neither an exit status nor a signal was reported.
    Unknown,
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ended::Status(code) => write!(f, "exit status: {code}"),
            Ended::Signal(sig) => write!(f, "signal: {sig}"),
            Ended::Unknown => f.write_str("failed"),
        }
    }
}
