//! `stop` and `start`: the libvirt-guests job done for a cluster.
//!
//! Debian's libvirt-guests saves one guest after another and knows nothing of
//! which VMs should come back; here the `kvm_autostart` VMs of this container
//! are managed-saved several at once, each within a time limit with a
//! fallback, the others are shut down, and a journal records every step.
//!
//! One file per operation: [`stop`] (saving and shutting down, with the
//! save and shutdown steps of one VM in `save.rs` and `shutdown.rs`),
//! [`start`], and `define.rs` (definitions brought up to date from the
//! database at boot). This file holds what they share. The libvirt
//! connections come from the [`Connector`] the caller hands in.

mod auto;
mod budget;
mod define;
mod evacuate;
mod save;
mod shutdown;
mod start;
mod stop;
#[cfg(test)]
mod tests;

pub use evacuate::Evacuation;
pub use start::start;
pub use stop::stop;

use crate::journal::{Journal, VmState};
use crate::known::{Known, Parallel, Settings};
use kvmroll_virt::{Connector, Hypervisor};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Where a run left this container's VMs.
#[derive(Debug, PartialEq, Eq)]
pub enum Placement {
    /// Every VM is where it should be.
    AllInPlace,
    /// Some VMs are not (not saved, left running, failed to start), each
    /// named with its journal state.
    Missed(Vec<String>),
}

impl Placement {
    /// All in place when nothing was missed.
    fn of(missed: Vec<String>) -> Placement {
        if missed.is_empty() {
            Placement::AllInPlace
        } else {
            Placement::Missed(missed)
        }
    }
}

/// Why a run could not be made at all.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Store(#[from] kvmroll_core::StoreError),
    #[error(transparent)]
    Config(#[from] kvmroll_core::conf::ConfigError),
    #[error(transparent)]
    Virt(#[from] kvmroll_virt::VirtError),
    #[error(transparent)]
    Journal(#[from] crate::journal::JournalError),
    #[error("host {0:?} is not in the kvmroll database (give --host NAME)")]
    UnknownHost(String),
    #[error("cannot write to standard output")]
    Output(#[from] std::io::Error),
}

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct Service {
    pub host: String,
    pub uri: String,
    pub root: PathBuf,
    pub state_dir: PathBuf,
    /// This container's VMs, from the database or from libvirt.
    pub known: Known,
    /// The run's own settings ([`Known::settings`]).
    pub settings: Settings,
    /// How many saves or restores at once: `kvm_guests_parallel`, or
    /// what `auto` chose for this machine.
    pub parallel: usize,
    /// The save folder's disk, bytes per second, where known (measured by
    /// this stop, or kept in the journal by the last one).
    pub disk_rate: Option<u64>,
}

impl Service {
    /// Settles `kvm_guests_parallel` for this run: the number it says, or
    /// for `auto` the machine's choice (`auto`), logged. A stop
    /// measures the save folder's disk; a start takes the last stop's
    /// figure from the journal and measures nothing.
    pub fn settle_parallel(&mut self, measure: bool) {
        let Parallel::Fixed(n) = self.settings.parallel else {
            self.disk_rate = if measure {
                let image = crate::image::path(&self.root, "x");
                image.parent().and_then(auto::measure_disk)
            } else {
                Journal::load(&self.journal_path())
                    .ok()
                    .flatten()
                    .and_then(|j| j.disk_bytes_per_sec)
            };
            let (n, why) = auto::choose(&auto::machine(self.disk_rate));
            log::info!("kvm_guests_parallel=auto: {n} at once ({why})");
            self.parallel = n;
            return;
        };
        self.parallel = n;
    }

    pub fn journal_path(&self) -> PathBuf {
        self.state_dir.join("journal.json")
    }

    fn quarantine_dir(&self) -> PathBuf {
        self.state_dir.join("quarantine")
    }

    /// A connection to this container's libvirt.
    fn connect(&self, connector: &dyn Connector) -> Result<Box<dyn Hypervisor>, ServiceError> {
        Ok(connector.connect(&self.uri)?)
    }

    /// A connection for a worker thread, or `None` (said) when refused.
    fn worker_connection(&self, connector: &dyn Connector) -> Option<Box<dyn Hypervisor>> {
        match self.connect(connector) {
            Ok(h) => Some(h),
            Err(e) => {
                log::error!(
                    "cannot connect to {}: {}",
                    self.uri,
                    kvmroll_core::error_chain(&e)
                );
                None
            }
        }
    }

    /// This container's VMs whose `kvm_autostart` is true.
    fn autostart(&self) -> BTreeSet<String> {
        self.known.autostart()
    }

    /// A VM's save and shutdown limits.
    fn limits(&self, name: &str) -> &Settings {
        self.known.limits(name)
    }
}

/// The journal, shared by the workers and written at every step.
struct Shared {
    journal: Mutex<Journal>,
    path: PathBuf,
    /// Steps journaled so far: what the monitors count as progress.
    steps: AtomicU64,
}

impl Shared {
    fn new(journal: Journal, path: PathBuf) -> Shared {
        Shared {
            journal: Mutex::new(journal),
            path,
            steps: AtomicU64::new(0),
        }
    }

    /// The journal as it stands, the workers done.
    fn into_journal(self) -> Journal {
        self.journal.into_inner().unwrap_or_else(|e| e.into_inner())
    }

    fn steps(&self) -> u64 {
        self.steps.load(Ordering::SeqCst)
    }

    fn set(&self, vm: &str, state: VmState, note: impl Into<String>) {
        self.with(|j| j.set(vm, state, note));
    }

    /// Records a step in memory only; [`Shared::write`] writes it later.
    fn remember(&self, vm: &str, state: VmState, note: impl Into<String>) {
        let mut j = self.journal.lock().unwrap_or_else(|e| e.into_inner());
        j.set(vm, state, note);
        self.steps.fetch_add(1, Ordering::SeqCst);
    }

    /// Writes the journal as it stands, outside the lock: the workers go on
    /// recording while it is synced.
    fn write(&self) {
        let j = self
            .journal
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Err(e) = j.save(&self.path) {
            log::error!("{}", kvmroll_core::error_chain(&e));
        }
    }

    fn with(&self, f: impl FnOnce(&mut Journal)) {
        let mut j = self.journal.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut j);
        self.steps.fetch_add(1, Ordering::SeqCst);
        if let Err(e) = j.save(&self.path) {
            log::error!("{}", kvmroll_core::error_chain(&e));
        }
    }
}

/// Writes the journal; a journal that cannot be written (a full or
/// read-only state folder) is said, and the VMs are still saved or started:
/// at a host's shutdown or boot that matters more.
fn save_or_go_on(journal: &Journal, path: &std::path::Path) {
    if let Err(e) = journal.save(path) {
        log::error!("{}; going on without it", kvmroll_core::error_chain(&e));
    }
}

/// Takes the next VM off a shared queue; its own statement, so that the
/// queue's lock is not held while the VM is worked on.
fn next_in(queue: &Mutex<std::collections::VecDeque<String>>) -> Option<String> {
    queue.lock().unwrap_or_else(|e| e.into_inner()).pop_front()
}

/// A size for people: KiB under a MiB, MiB under a GiB, else GiB.
pub fn human(bytes: u64) -> String {
    match bytes {
        b if b < 1 << 20 => format!("{} KiB", b.div_ceil(1024)),
        b if b < 1 << 30 => format!("{:.1} MiB", b as f64 / f64::from(1 << 20)),
        b => format!("{:.2} GiB", b as f64 / f64::from(1 << 30)),
    }
}

/// Sends on drop: a worker's "done", even when it ends by a panic.
struct Done(std::sync::mpsc::Sender<()>);

impl Drop for Done {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}
