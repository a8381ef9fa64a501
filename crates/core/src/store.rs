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

/// How a store is opened. Only `Create` ever makes a database: every other
/// mode finds one or says it is missing, and every mode refuses a file that
/// is not a kvmroll database (an empty one included) without touching it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Read-write, making the database where none exists: through
    /// [`open_store`], at the first write that a new database accepts (a
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
    // Variants of a server engine (PostgreSQL). A `location` is shown as
    // users see it: never with its password.
    #[error(transparent)]
    Location(#[from] crate::location::LocationError),
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
}

/// Opens the store at `path` (SQLite, the only backend so far). With
/// [`OpenMode::Create`] and nothing at `path`, the database is made by the
/// first write a new database accepts, so a refused write leaves nothing.
pub fn open_store(path: &Path, mode: OpenMode) -> Result<Box<dyn Store>, StoreError> {
    // A URL given where a path was expected (`--db`, `KVMROLL_DB`).
    if let Some(location) = crate::location::Location::from_url_path(path)? {
        return crate::location::open(&location, mode);
    }
    open_sqlite(path, mode)
}

/// [`open_store`] for a SQLite file.
pub(crate) fn open_sqlite(path: &Path, mode: OpenMode) -> Result<Box<dyn Store>, StoreError> {
    if mode == OpenMode::Create && !path.exists() {
        return Ok(Box::new(Unmade {
            path: path.to_path_buf(),
            made: None,
        }));
    }
    let mode = if mode == OpenMode::Create {
        OpenMode::ReadWrite
    } else {
        mode
    };
    Ok(Box::new(crate::sqlite::SqliteStore::open(path, mode)?))
}

/// Makes the database at `path` if there is none, or upgrades it: what
/// `kvmroll db init` does. A file that is not a kvmroll database is refused.
pub fn init_store(path: &Path) -> Result<(Box<dyn Store>, Init), StoreError> {
    if let Some(location) = crate::location::Location::from_url_path(path)? {
        return crate::location::init(&location);
    }
    let (store, init) = crate::sqlite::SqliteStore::init(path)?;
    Ok((Box::new(store), init))
}

/// A database not made yet: until it is, it reads as a new one would (the
/// seeded cluster, no events), and the first write that such a cluster
/// accepts makes it; from then on everything goes to the database made.
struct Unmade {
    path: PathBuf,
    made: Option<Box<dyn Store>>,
}

impl Unmade {
    fn made(&mut self) -> Result<&mut Box<dyn Store>, StoreError> {
        let store = match self.made.take() {
            Some(s) => s,
            None => init_store(&self.path)?.0,
        };
        Ok(self.made.insert(store))
    }
}

impl Store for Unmade {
    fn snapshot(&self) -> Result<Cluster, StoreError> {
        match &self.made {
            Some(s) => s.snapshot(),
            None => Ok(Cluster::seeded()),
        }
    }

    fn update(
        &mut self,
        changes: &mut dyn FnMut(&Cluster) -> Result<Vec<Change>, ClusterError>,
    ) -> Result<Plan, StoreError> {
        if self.made.is_none() {
            let new = Cluster::seeded();
            new.plan(&changes(&new)?)?;
        }
        // Another process may have made it meanwhile: the changes are asked
        // again, of what the database holds.
        self.made()?.update(changes)
    }

    fn vm_brief(&self, name: &str) -> Result<Option<VmBrief>, StoreError> {
        match &self.made {
            Some(s) => s.vm_brief(name),
            None => Ok(None),
        }
    }

    fn vm_disks(&self, vm: &str) -> Result<Vec<VmDisk>, StoreError> {
        match &self.made {
            Some(s) => s.vm_disks(vm),
            None => Ok(Vec::new()),
        }
    }

    fn record_disk_work(
        &mut self,
        vm: &str,
        container: &str,
        made: &[String],
        grown: &[String],
    ) -> Result<(), StoreError> {
        // A database not made yet has no VM to record anything of.
        match &mut self.made {
            Some(s) => s.record_disk_work(vm, container, made, grown),
            None => Ok(()),
        }
    }

    fn made_images(&self, vm: &str) -> Result<Vec<MadeImage>, StoreError> {
        match &self.made {
            Some(s) => s.made_images(vm),
            None => Ok(Vec::new()),
        }
    }

    fn grow_disk(&mut self, vm: &str, dev: &str, size_gib: u32) -> Result<Disk, StoreError> {
        match &mut self.made {
            Some(s) => s.grow_disk(vm, dev, size_gib),
            None => Err(ClusterError::UnknownVm(vm.to_string()).into()),
        }
    }

    fn record_events(&mut self, events: &[Event]) -> Result<(), StoreError> {
        self.made()?.record_events(events)
    }

    fn events(&self, filter: &EventFilter) -> Result<Vec<Event>, StoreError> {
        match &self.made {
            Some(s) => s.events(filter),
            None => Ok(Vec::new()),
        }
    }

    fn status(&self) -> Result<StoreStatus, StoreError> {
        match &self.made {
            Some(s) => s.status(),
            None => Err(StoreError::Missing {
                path: self.path.clone(),
            }),
        }
    }

    fn prune_events(
        &mut self,
        before_ms: Option<i64>,
        keep: Option<u64>,
    ) -> Result<u64, StoreError> {
        match &mut self.made {
            Some(s) => s.prune_events(before_ms, keep),
            None => Ok(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Host;

    /// A first write makes the database only when a new database accepts
    /// it: bad input to it leaves no file and no folder behind.
    #[test]
    fn a_refused_first_write_makes_no_database() {
        let d = tempfile::tempdir().unwrap();
        let db = d.path().join("sub/k.db");
        let mut s = open_store(&db, OpenMode::Create).unwrap();
        assert_eq!(s.snapshot().unwrap(), Cluster::seeded());
        let err = s
            .update(&mut |_| Ok(vec![Change::AddHost(Host::new("h", "no-such-appliance"))]))
            .unwrap_err();
        assert!(matches!(err, StoreError::Refused(_)), "{err}");
        assert!(!d.path().join("sub").exists());
        s.update(&mut |_| Ok(vec![Change::AddHost(Host::new("h", "compute"))]))
            .unwrap();
        assert!(db.exists());
        assert!(s.snapshot().unwrap().hosts.contains_key("h"));
        let again = open_store(&db, OpenMode::ReadOnly).unwrap();
        assert_eq!(again.status().unwrap().hosts, 1);
    }
}
