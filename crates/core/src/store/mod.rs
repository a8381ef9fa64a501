//! The store: where the cluster lives. The binaries reach it only through the
//! [`Store`] trait, so a PostgreSQL backend serving many containers can take
//! SQLite's place without touching them.
//!
//! This module knows none of its engines ([`crate::sqlite`], [`crate::pg`]):
//! they implement the trait, and [`crate::location`], above them all, opens
//! the one a location names.

mod rows;

pub use rows::{Cell, Rows, Table, TABLES};

use crate::cluster::{Change, Cluster, ClusterError};
use crate::events::{Event, EventFilter, Spooled};
use crate::model::Disk;
use crate::plan::Plan;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// The database kvmroll uses when neither `--db` nor `KVMROLL_DB` names one.
pub const DEFAULT_DB_PATH: &str = "/var/lib/kvmroll/kvmroll.db";

/// How a store is opened. Only `Create` ever makes a database: every other
/// mode finds one or says it is missing, and every mode refuses a file that
/// is not a kvmroll database (an empty one included) without touching it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Read-write, making the database where none exists: through
    /// [`open_store`](crate::location::open_store), at the first write that a new database accepts (a
    /// refused write makes nothing); `SqliteStore::open` makes it at once.
    /// The CLI's commands that can start a cluster, and `kvmroll db init`.
    Create,
    /// Read-write on an existing database, upgrading its schema as needed.
    ReadWrite,
    /// Refuses every write (reads, and plugins in read-only hook stages).
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
    /// The generation of its rows ([`crate::Vm::generation`]).
    pub generation: u64,
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

/// A backend's own error, said on one line (SQLite's carry the statement's
/// whole text, which is no use to a reader).
pub type BackendError = Box<dyn std::error::Error + Send + Sync>;

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create the database folder {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create database {path}")]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file system refuses what the database needs, with what to do.
    #[error("cannot use database {path}: {why}")]
    NoAccess { path: PathBuf, why: String },
    #[error("{path} is not a kvmroll database")]
    NotKvmroll { path: PathBuf },
    #[error("{path} is empty, not a kvmroll database: restore it from a backup, or remove it and run `kvmroll db init`")]
    Empty { path: PathBuf },
    #[error("{path} is not a kvmroll database this kvmroll can read: its schema version {found} is one no kvmroll writes")]
    UnknownSchema { path: PathBuf, found: i64 },
    #[error("database {path} has schema version {found}, newer than this kvmroll knows ({supported}); upgrade kvmroll")]
    NewerSchema {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    #[error("database {path} does not exist; `kvmroll db init` creates it")]
    Missing { path: PathBuf },
    #[error("database {path} needs an upgrade from schema {found} to {supported}, which a read-only open cannot do; `kvmroll db init` upgrades it")]
    NeedsUpgrade {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    #[error("database {path}: upgrading the schema from version {from} to {to} failed")]
    Upgrade {
        path: PathBuf,
        from: i64,
        to: i64,
        #[source]
        source: BackendError,
    },
    #[error("database {path} was locked by another writer for {} s: {what}", waited.as_secs())]
    Busy {
        path: PathBuf,
        waited: Duration,
        what: &'static str,
    },
    #[error("the database is open read-only (KVMROLL_DB_READONLY is set): writes are refused in this stage")]
    ReadOnly,
    #[error("database {path}: {what}")]
    Sql {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: BackendError,
    },
    #[error("database {path} holds a row kvmroll cannot read: {what}")]
    Corrupt { path: PathBuf, what: String },
    #[error(transparent)]
    Refused(#[from] ClusterError),
    /// The open did not finish within the caller's time limit
    /// ([`open_within`](crate::location::open_within)).
    #[error("database {location} did not answer within {} ms", waited.as_millis())]
    NoAnswer { location: String, waited: Duration },
    // Variants of a server engine (PostgreSQL). A `location` is shown as
    // users see it: never with its password.
    #[error(transparent)]
    Location(#[from] crate::dburl::LocationError),
    #[error("cannot reach the database server at {host} port {port}")]
    Unreachable {
        host: String,
        port: u16,
        #[source]
        source: BackendError,
    },
    #[error("the database server at {location} refused the password of user {user}")]
    Auth { location: String, user: String },
    #[error("the database server at {location} asks a password for user {user}, and none was given (in the URL, PGPASSWORD or a password file)")]
    NoPassword { location: String, user: String },
    #[error(
        "password file {path} is not used: group or others have access to it (chmod 0600 {path})"
    )]
    PassfileReadable { path: PathBuf },
    #[error("database {location} holds no kvmroll schema yet; `kvmroll db init` makes it")]
    NoSchema { location: String },
    #[error("database {location}: {what} gave up after {tries} tries: other writers kept conflicting; try again")]
    Contention {
        location: String,
        what: &'static str,
        tries: u32,
    },
    #[error("database {location} is not empty (it holds {holds}): a copy goes only into a database that holds no cluster yet")]
    NotEmpty { location: String, holds: String },
    #[error("cannot copy into database {location}: {why}")]
    CopyRefused { location: String, why: String },
    #[error("the copy at {location} does not match its source: {what}")]
    CopyDiffers { location: String, what: String },
}

/// What `kvmroll db init` found at the location, or did there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Init {
    Created,
    Upgraded {
        from: i64,
    },
    /// A kvmroll database at the current schema: nothing to do.
    Current,
}

/// What `kvmroll db status` shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoreStatus {
    /// The backend: `sqlite`.
    pub engine: &'static str,
    /// Where it is: a path, or a URL without its password.
    pub location: String,
    pub schema_version: i64,
    /// Physical hosts: every host row but the VMs' own.
    pub hosts: u64,
    pub vms: u64,
    pub events: u64,
}

/// What kvmroll needs of a database. `Send`, so that an open can be left to
/// a thread and waited for with a time limit ([`open_within`](crate::location::open_within)).
pub trait Store: Send {
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
    /// transaction; a new size moves the VM's generation on, since its
    /// definition's metadata holds the size. Returns the disk as it was.
    fn grow_disk(&mut self, vm: &str, dev: &str, size_gib: u32) -> Result<Disk, StoreError>;

    /// Appends events in one transaction (allowed in every write mode).
    fn record_events(&mut self, events: &[Event]) -> Result<(), StoreError>;

    /// Appends events from a container's spool in one transaction, each
    /// with its origin, skipping every origin the database already has
    /// (`INSERT ... ON CONFLICT (origin) DO NOTHING`): a spool file handed
    /// over twice (its forwarder killed between the commit and the unlink)
    /// adds nothing the second time. Returns how many were added.
    fn record_spooled(&mut self, events: &[Spooled]) -> Result<usize, StoreError>;

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

    /// The engine, location, schema version and row counts.
    fn status(&self) -> Result<StoreStatus, StoreError>;

    /// Deletes, in one transaction, the events recorded before `before_ms`
    /// (milliseconds since the epoch) and all but the newest `keep`; returns
    /// how many went.
    fn prune_events(
        &mut self,
        before_ms: Option<i64>,
        keep: Option<u64>,
    ) -> Result<u64, StoreError>;

    /// Every row of every kvmroll table, read in one transaction
    /// (`kvmroll db copy`'s source, and its check).
    fn rows(&self) -> Result<Rows, StoreError>;

    /// Writes `rows` (another database's [`Store::rows`]) into this one, in
    /// one transaction, ids included; refused, having written nothing,
    /// where this database holds more than a new one is seeded with
    /// ([`StoreError::NotEmpty`]).
    fn fill(&mut self, rows: &Rows) -> Result<(), StoreError>;
}
