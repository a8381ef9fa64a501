//! The store: where the cluster lives. The binaries reach it only through the
//! [`Store`] trait, so a PostgreSQL backend serving many containers can take
//! SQLite's place without touching them.

use crate::cluster::{Change, Cluster, ClusterError, Plan};
use crate::events::{Event, EventFilter};
use crate::model::Disk;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The database kvmroll uses when neither `--db` nor `KVMROLL_DB` names one.
pub const DEFAULT_DB_PATH: &str = "/var/lib/kvmroll/kvmroll.db";

/// How a store is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Creates and upgrades the database as needed.
    ReadWrite,
    /// Refuses every write (plugins in read-only hook stages).
    ReadOnly,
    /// Read-write, but a commit is made durable at the next checkpoint rather
    /// than at once (SQLite's `synchronous=NORMAL` in WAL mode: the database
    /// stays consistent, a power loss may drop the last commits). For the
    /// hook, whose event records must not cost an fsync on every VM event.
    ReadWriteFast,
}

/// A VM as the hook needs it: its identity, placement and resolved
/// attributes, read without loading the whole cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VmBrief {
    pub name: String,
    pub uuid: String,
    pub container: Option<String>,
    pub attrs: BTreeMap<String, String>,
}

/// A VM disk as the hook's allocate stage needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmDisk {
    pub disk: Disk,
    /// `kvmroll vm disk resize` asked for the image to grow to the disk's
    /// size at the VM's next start.
    pub grow: bool,
}

/// A disk image kvmroll made, and where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MadeImage {
    pub container: String,
    pub path: String,
    pub time_ms: i64,
}

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create the database folder {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open database {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("{path} is not a kvmroll database")]
    NotKvmroll { path: PathBuf },
    #[error("database {path} has schema version {found}, newer than this kvmroll knows ({supported}); upgrade kvmroll")]
    NewerSchema {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    #[error("database {path} does not exist")]
    Missing { path: PathBuf },
    #[error("database {path} needs an upgrade from schema {found} to {supported}, which a read-only open cannot do")]
    NeedsUpgrade {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    #[error("the database is open read-only (KVMROLL_DB_READONLY is set): writes are refused in this stage")]
    ReadOnly,
    #[error("database {path}: {what}")]
    Sql {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error("database {path} holds a row kvmroll cannot read: {what}")]
    Corrupt { path: PathBuf, what: String },
    #[error(transparent)]
    Refused(#[from] ClusterError),
}

/// What kvmroll needs of a database.
pub trait Store {
    /// The whole cluster, read in one transaction.
    fn snapshot(&self) -> Result<Cluster, StoreError>;

    /// One atomic write: `changes` is called with the cluster as it stands
    /// inside the transaction and returns what to change; the changes are
    /// planned ([`Cluster::plan`]: checked, and refused if they would break a
    /// VM) and written, or nothing is.
    fn update(
        &mut self,
        changes: &mut dyn FnMut(&Cluster) -> Result<Vec<Change>, ClusterError>,
    ) -> Result<Plan, StoreError>;

    /// One VM's identity, placement and resolved attributes; `None` when the
    /// database does not know it.
    fn vm_brief(&self, name: &str) -> Result<Option<VmBrief>, StoreError>;

    /// One VM's disks, in order, each with whether a grow waits for it;
    /// empty when the database does not know the VM.
    fn vm_disks(&self, vm: &str) -> Result<Vec<VmDisk>, StoreError>;

    /// Records, in one transaction, what the hook did to a VM's disks on
    /// `container`: the images it made (`made`), and the grows now done
    /// (`grown`, by path). A VM gone meanwhile records nothing.
    fn record_disk_work(
        &mut self,
        vm: &str,
        container: &str,
        made: &[String],
        grown: &[String],
    ) -> Result<(), StoreError>;

    /// The images kvmroll made for a VM, oldest first.
    fn made_images(&self, vm: &str) -> Result<Vec<MadeImage>, StoreError>;

    /// Sets the size of a VM's disk to `size_gib`, never smaller than it
    /// was, and asks for its image to grow at the VM's next start, in one
    /// transaction. Returns the disk as it was.
    fn grow_disk(&mut self, vm: &str, dev: &str, size_gib: u32) -> Result<Disk, StoreError>;

    /// Appends events in one transaction (allowed in every write mode).
    fn record_events(&mut self, events: &[Event]) -> Result<(), StoreError>;

    /// Events, oldest first (the newest `limit` of them).
    fn events(&self, filter: &EventFilter) -> Result<Vec<Event>, StoreError>;

    /// Whether the backend wants upkeep (SQLite: a WAL grown long under a
    /// connection that does not checkpoint, `OpenMode::ReadWriteFast`). The
    /// hook leaves it to a detached process: it must not make libvirt wait.
    fn upkeep_due(&self) -> bool {
        false
    }

    /// Does the upkeep (SQLite: checkpoints the WAL into the database and
    /// empties it), waiting at most `patience` for other connections.
    fn upkeep(&self, _patience: Duration) -> Result<(), StoreError> {
        Ok(())
    }

    /// Deletes, in one transaction, the events recorded before `before_ms`
    /// (milliseconds since the epoch) and all but the newest `keep`; returns
    /// how many went.
    fn prune_events(
        &mut self,
        before_ms: Option<i64>,
        keep: Option<u64>,
    ) -> Result<u64, StoreError>;
}

/// Opens the store at `path` (SQLite, the only backend so far).
pub fn open_store(path: &Path, mode: OpenMode) -> Result<Box<dyn Store>, StoreError> {
    Ok(Box::new(crate::sqlite::SqliteStore::open(path, mode)?))
}
