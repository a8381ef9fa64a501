//! Why a migration was refused or failed, one line each; where the VM runs
//! afterwards is part of the message of a failure.

use kvmroll_core::{ClusterError, StoreError};
use kvmroll_virt::VirtError;
use std::time::Duration;

/// What refused or failed a migration (or a recovery).
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Cluster(Box<ClusterError>),
    #[error(transparent)]
    Render(#[from] kvmroll_core::RenderError),
    #[error("VM {vm} is not placed on a container")]
    NotPlaced { vm: String },
    #[error("VM {vm} is on {container} already")]
    SameContainer { vm: String, container: String },
    #[error("{to} is not a VM container: its resolved kvm attribute is not true")]
    NotAContainer { to: String },
    #[error("cannot reach container {container}")]
    Unreachable {
        container: String,
        #[source]
        source: Box<VirtError>,
    },
    #[error("cannot ask container {container} about VM {vm}")]
    Ask {
        vm: String,
        container: String,
        #[source]
        source: Box<VirtError>,
    },
    #[error("VM {vm} is not running on {container}; a stopped VM moves with `kvmroll vm set --container`")]
    NotRunning { vm: String, container: String },
    #[error("VM {vm} needs {need} CPUs but container {to} has {free} of its {cpus} not given to its VMs (kvmroll does not overcommit CPUs when it moves a VM)")]
    Cpus {
        vm: String,
        to: String,
        need: u32,
        free: i64,
        cpus: u32,
    },
    #[error("VM {vm} has {vcpus} vCPUs but container {to} has {cpus} CPUs")]
    NodeCpus {
        vm: String,
        to: String,
        vcpus: u32,
        cpus: u32,
    },
    #[error("VM {vm} needs {need_mib} MiB of memory but container {to} has {free_mib} MiB free")]
    Memory {
        vm: String,
        to: String,
        need_mib: u64,
        free_mib: u64,
    },
    #[error("VM {vm} cannot be placed on {to}")]
    Placement {
        vm: String,
        to: String,
        #[source]
        source: Box<ClusterError>,
    },
    #[error("VM {vm} has a passed-through device ({attr}), which cannot move while it runs")]
    Hostdev { vm: String, attr: String },
    /// `paths`: the disk's file on the VM's container, and on `to`.
    #[error("VM {vm}'s disk {dev} is {} on its container but {} on {to}: a live migration needs the same files on both (shared storage)", paths.0, paths.1)]
    Disks {
        vm: String,
        dev: String,
        paths: Box<(String, String)>,
        to: String,
    },
    #[error("VM {vm} was changed by another command meanwhile; nothing was moved")]
    Raced { vm: String },
    #[error("VM {vm} was not moved to {to} and runs on {runs_on}")]
    Failed {
        vm: String,
        to: String,
        runs_on: String,
        #[source]
        source: Box<VirtError>,
    },
    #[error("VM {vm} did not reach {to} within {} s: the migration was aborted and it runs on {runs_on}", limit.as_secs())]
    TimedOut {
        vm: String,
        to: String,
        runs_on: String,
        limit: Duration,
    },
    #[error("cannot tell where VM {vm} runs: {why}; it keeps its {attr} mark until `kvmroll vm define {vm}` can", attr = crate::MIGRATING_FROM)]
    Undecided { vm: String, why: String },
}

impl From<ClusterError> for MigrateError {
    fn from(e: ClusterError) -> MigrateError {
        MigrateError::Cluster(Box::new(e))
    }
}
