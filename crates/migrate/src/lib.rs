//! Moving a running VM from one VM container to another with libvirt's
//! peer-to-peer migration, the database kept in step whatever fails.
//!
//! - [`Migrator::check`]: whether a VM may go to a container, each refusal
//!   one line ([`MigrateError`]): the destination is another VM container
//!   and answers, it has the CPUs and memory, the VM's pinning can be
//!   honoured there, and (live) the VM has no passed-through device and
//!   disks that are the same files on both sides.
//! - [`Migrator::migrate`]: the run. One transaction places the VM on the
//!   destination and marks it with [`MIGRATING_FROM`] (so the destination's
//!   hook, which refuses a VM the database places elsewhere, lets it in);
//!   libvirt gets kvmroll's definition for the destination (its pins, its
//!   metadata); a second transaction removes the mark. On a failure, a
//!   refusal of the destination's hook or a time limit passed (the job is
//!   aborted), the database is put back where the VM runs and the source's
//!   definition brought up to date.
//! - [`Migrator::recover`]: a VM still marked (a `kvmroll` killed
//!   mid-migration) is looked for on both containers and the database put
//!   in step; the leftover definition goes.
//!
//! One [`Migrator`] serves several threads at once: it holds the database
//! behind a mutex, taken for each transaction only, and every migration
//! opens its own libvirt connections.

mod check;
mod error;
mod run;
mod settle;

pub use check::{free_cpus, timeout_of, Checked};
pub use error::MigrateError;
pub use kvmroll_virt::Transport;
pub use run::{Moved, Progress};
pub use settle::{migrating_from, Settled};

use kvmroll_core::Store;
use kvmroll_virt::Connector;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// The VM attribute that marks a migration under way, set on the VM's own
/// row by kvmroll only: the container it left.
pub const MIGRATING_FROM: &str = "kvm_migrating_from";
/// The attribute that limits a live migration's time.
pub const TIMEOUT_ATTR: &str = "kvm_migrate_timeout";
/// The attribute that picks the transport (`tunnelled` or `native`).
pub const TRANSPORT_ATTR: &str = "kvm_migrate_transport";
/// The destination container's attribute naming where a native
/// migration's stream reaches its QEMU.
pub const ADDRESS_ATTR: &str = "kvm_migrate_address";
/// The time limit when [`TIMEOUT_ATTR`] is unset.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// The database as several migrations share it: each transaction holds the
/// lock for its own length only.
pub type SharedStore<'s> = Mutex<&'s mut dyn Store>;

/// One migration asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub vm: String,
    /// The destination container.
    pub to: String,
    /// Overrides the VM's [`TIMEOUT_ATTR`].
    pub timeout: Option<Duration>,
}

/// Moves VMs: the database, how libvirt is reached, and this machine's
/// host name (a container of that name is reached at `qemu:///system`).
/// `Sync`: share one between the threads that migrate at once.
pub struct Migrator<'a> {
    store: &'a SharedStore<'a>,
    connector: &'a dyn Connector,
    local_host: String,
}

impl std::fmt::Debug for Migrator<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Migrator")
            .field("local_host", &self.local_host)
            .finish_non_exhaustive()
    }
}

impl<'a> Migrator<'a> {
    pub fn new(
        store: &'a SharedStore<'a>,
        connector: &'a dyn Connector,
        local_host: &str,
    ) -> Migrator<'a> {
        Migrator {
            store,
            connector,
            local_host: local_host.to_owned(),
        }
    }

    /// The database, locked for one transaction.
    fn db(&self) -> MutexGuard<'_, &'a mut dyn Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests;
