//! The store: where the cluster lives. The binaries reach it only through the
//! [`Store`] trait, so a PostgreSQL backend serving many containers can take
//! SQLite's place without touching them.

use crate::cluster::{Change, Cluster, ClusterError, Plan};
use std::path::{Path, PathBuf};

/// The database kvmroll uses when neither `--db` nor `KVMROLL_DB` names one.
pub const DEFAULT_DB_PATH: &str = "/var/lib/kvmroll/kvmroll.db";

/// How a store is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Creates and upgrades the database as needed.
    ReadWrite,
    /// Refuses every write (plugins in read-only hook stages).
    ReadOnly,
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
    /// Where the data lives, for messages.
    fn location(&self) -> String;

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
}

/// Opens the store at `path` (SQLite, the only backend so far).
pub fn open_store(path: &Path, mode: OpenMode) -> Result<Box<dyn Store>, StoreError> {
    Ok(Box::new(crate::sqlite::SqliteStore::open(path, mode)?))
}
