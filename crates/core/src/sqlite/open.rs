//! Opening a SQLite database: the connection's settings per mode, the
//! identity check that refuses a foreign file, and the upgrade.

use super::fault::fault;
use super::schema::{check_version, create, migrate};
use super::*;

impl SqliteStore {
    /// Opens the database at `path`, upgrading its schema unless read-only.
    /// Only [`OpenMode::Create`] makes one where none exists.
    ///
    /// A file that is not a kvmroll database (an empty one included), or one
    /// from a newer kvmroll, is refused before anything is written to it.
    pub fn open(path: &Path, mode: OpenMode) -> Result<SqliteStore, StoreError> {
        let path = path.to_path_buf();
        let mode = match mode {
            OpenMode::Create => {
                if !path.exists() {
                    create(&path)?;
                }
                OpenMode::ReadWrite
            }
            _ if !path.exists() => return Err(StoreError::Missing { path }),
            mode => mode,
        };
        // Never SQLITE_OPEN_CREATE: the file exists, and a database is only
        // ever made whole, by `create`. Read-write at the file level even in
        // ReadOnly, so that WAL's shared memory can be set up; `query_only`
        // below refuses every write.
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI;
        let wait = if mode == OpenMode::ReadWriteFast {
            HOOK_BUSY_TIMEOUT
        } else {
            BUSY_TIMEOUT
        };
        let write = mode != OpenMode::ReadOnly;
        let conn = Connection::open_with_flags(&path, flags)
            .map_err(|e| fault(&path, write, wait, "opening it", e))?;
        conn.busy_timeout(wait)
            .map_err(|e| sql(&path, "setting the busy timeout", e))?;
        let mut store = SqliteStore {
            path,
            conn,
            mode,
            wait,
            found: 0,
        };
        store.found = store.check_identity()?;
        store.prepare()?;
        Ok(store)
    }

    /// Makes the database at `path` if there is none, else opens it
    /// read-write and upgrades it; says which.
    pub fn init(path: &Path) -> Result<(SqliteStore, Init), StoreError> {
        let made = !path.exists() && create(path)?;
        let store = SqliteStore::open(path, OpenMode::ReadWrite)?;
        let init = if made {
            Init::Created
        } else if store.found < SCHEMA_VERSION {
            Init::Upgraded { from: store.found }
        } else {
            Init::Current
        };
        Ok((store, init))
    }

    /// A failure of this connection, with its cause where it is one the
    /// user can act on (a lock held too long, a file system that refuses).
    pub(super) fn fail(&self, what: &'static str, e: rusqlite::Error) -> StoreError {
        fault(
            &self.path,
            self.mode != OpenMode::ReadOnly,
            self.wait,
            what,
            e,
        )
    }

    /// Refuses foreign files, empty ones, and schemas this build cannot
    /// read, reading only. Returns the schema version found.
    ///
    /// The identity is read with SQL, never by opening the file a second
    /// time: closing any descriptor of a file drops every POSIX lock the
    /// process holds on it, SQLite's included, and another process could then
    /// checkpoint and delete a WAL this one still writes to (seen as hook
    /// events that vanished).
    pub(super) fn check_identity(&self) -> Result<i64, StoreError> {
        let path = || self.path.clone();
        // Plain pragmas, not the pragma_* table functions, which cost a
        // SELECT's planning each: the hook opens the database at every VM
        // event. The table count is only needed for a file not stamped.
        let read = |pragma: &str| -> rusqlite::Result<i64> {
            self.conn.query_row(pragma, [], |r| r.get(0))
        };
        let identity = || -> rusqlite::Result<(i64, i64, i64)> {
            let app_id = read("PRAGMA application_id")?;
            let version = read("PRAGMA user_version")?;
            let tables = if app_id == 0 {
                read("SELECT count(*) FROM sqlite_master")?
            } else {
                0
            };
            Ok((app_id, version, tables))
        };
        let (app_id, version, tables) = identity().map_err(|e| match e {
            rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::NotADatabase => {
                StoreError::NotKvmroll { path: path() }
            }
            e => self.fail("reading its identity", e),
        })?;
        // A database is made whole, stamped, in a temporary file (`create`):
        // an unstamped file here is someone else's, or one that lost its
        // contents (truncated), never one to fill with an empty cluster.
        if app_id != APPLICATION_ID {
            return Err(if app_id == 0 && tables == 0 && version == 0 {
                StoreError::Empty { path: path() }
            } else {
                StoreError::NotKvmroll { path: path() }
            });
        }
        check_version(&self.path, version)?;
        if self.mode == OpenMode::ReadOnly && version < SCHEMA_VERSION {
            return Err(StoreError::NeedsUpgrade {
                path: path(),
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        Ok(version)
    }

    /// The WAL of a connection that does not checkpoint (the hook's) is
    /// kept short by upkeep: a process that opens the database while no
    /// other has it open rebuilds the WAL index by reading every frame, and a
    /// rebuilt index counts none of them as checkpointed, so without upkeep
    /// every hook would read all of it, and it would only grow.
    pub(super) fn wal_frames(&self) -> u64 {
        let frame = 24 + 4096;
        let wal = PathBuf::from(format!("{}-wal", self.path.display()));
        std::fs::metadata(&wal).map_or(0, |m| m.len().saturating_sub(32) / frame)
    }

    pub(super) fn prepare(&self) -> Result<(), StoreError> {
        if self.mode != OpenMode::ReadWrite {
            // The last connection to close checkpoints the WAL into the
            // database and deletes it: four fsyncs and two unlinks, the bulk
            // of a hook invocation's cost. The hook leaves it to a detached
            // upkeep (`Store::upkeep`); kvmroll's CLI checkpoints at close.
            self.conn
                .set_db_config(
                    rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
                    true,
                )
                .map_err(|e| self.fail("keeping the WAL at close", e))?;
        }
        match self.mode {
            // check_identity refused a read-only open of an old schema.
            OpenMode::ReadOnly => self
                .conn
                .execute_batch("PRAGMA query_only = ON")
                .map_err(|e| self.fail("making the connection read-only", e))?,
            // The hook: one statement per open, as it opens the database at
            // every VM event. It writes only events (no foreign keys), into a
            // database kvmroll's CLI made and put in WAL mode.
            OpenMode::ReadWriteFast => self
                .conn
                .execute_batch("PRAGMA wal_autocheckpoint = 0; PRAGMA synchronous = NORMAL;")
                .map_err(|e| self.fail("setting up the connection", e))?,
            OpenMode::ReadWrite | OpenMode::Create => {
                let journal: String = self
                    .conn
                    .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
                    .map_err(|e| self.fail("switching to WAL", e))?;
                if !journal.eq_ignore_ascii_case("wal") {
                    log::warn!(
                        "database {}: journal mode is {journal}, not wal",
                        self.path.display()
                    );
                }
                self.conn
                    .execute_batch("PRAGMA foreign_keys = ON; PRAGMA synchronous = FULL;")
                    .map_err(|e| self.fail("setting up the connection", e))?;
            }
        }
        if self.found < SCHEMA_VERSION {
            migrate(&self.conn, &self.path, self.wait)?;
        }
        Ok(())
    }
}
