//! The SQLite store: one file on the host, WAL mode so readers never wait for
//! the writer, a busy timeout and `BEGIN IMMEDIATE` writes so that many hooks
//! running at once wait their turn instead of failing with "database is
//! locked", and a schema upgraded by numbered migrations.

use crate::cluster::{Change, Cluster, ClusterError};
use crate::events::{Event, EventFilter, Outcome, Spooled};
use crate::model::{BootAction, Disk, DiskKind, Host, Mac, Nic, NicKind, Scope, Vm};
use crate::plan::Plan;
use crate::store::{
    Cell, Init, MadeImage, OpenMode, Rows, Store, StoreError, StoreStatus, VmBrief, VmDisk, TABLES,
};
use rusqlite::{
    params, Connection, OpenFlags, OptionalExtension, Transaction, TransactionBehavior,
};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `PRAGMA application_id` of a kvmroll database: "kvmr".
pub const APPLICATION_ID: i64 = 0x6b76_6d72;

/// How long a writer waits for another before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(60);

/// A hook-mode WAL longer than this many frames (a hook writes two or three)
/// gets upkeep. Each hook reads the whole WAL to rebuild its index; each
/// upkeep costs two fsyncs: measured here, 32 to 128 frames cost alike.
const WAL_UPKEEP_FRAMES: u64 = 32;

/// How long the hook waits: libvirtd waits for the hook, so a database locked
/// for longer refuses the start (with the reason) rather than hang it.
const HOOK_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The schema, one step per version; step N brings version N-1 to N.
const MIGRATIONS: &[&str] = &[
    // 1: hosts, appliances, attributes, VMs, disks, NICs.
    r#"
    CREATE TABLE appliances (
        id   INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE
    );
    CREATE TABLE hosts (
        id             INTEGER PRIMARY KEY,
        name           TEXT NOT NULL UNIQUE,
        appliance_id   INTEGER NOT NULL REFERENCES appliances(id),
        rack           INTEGER NOT NULL DEFAULT 0,
        rank           INTEGER NOT NULL DEFAULT 0,
        cpus           INTEGER NOT NULL DEFAULT 1 CHECK (cpus > 0),
        os             TEXT NOT NULL DEFAULT 'linux',
        boot_action    TEXT NOT NULL DEFAULT 'os' CHECK (boot_action IN ('install', 'os')),
        install_action TEXT NOT NULL DEFAULT 'install',
        run_action     TEXT NOT NULL DEFAULT 'os'
    );
    CREATE TABLE attributes (
        id     INTEGER PRIMARY KEY,
        scope  TEXT NOT NULL CHECK (scope IN ('global', 'os', 'appliance', 'rack', 'host')),
        target TEXT NOT NULL,
        name   TEXT NOT NULL,
        value  TEXT NOT NULL,
        UNIQUE (scope, target, name)
    );
    CREATE TABLE vms (
        id           INTEGER PRIMARY KEY,
        host_id      INTEGER NOT NULL UNIQUE REFERENCES hosts(id),
        container_id INTEGER REFERENCES hosts(id),
        memory_mib   INTEGER NOT NULL CHECK (memory_mib > 0),
        vcpus        INTEGER NOT NULL CHECK (vcpus > 0),
        uuid         TEXT NOT NULL UNIQUE,
        cdrom        TEXT,
        virt_type    TEXT NOT NULL DEFAULT 'kvm',
        stale        INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE vm_disks (
        id       INTEGER PRIMARY KEY,
        vm_id    INTEGER NOT NULL REFERENCES vms(id) ON DELETE CASCADE,
        position INTEGER NOT NULL,
        type     TEXT NOT NULL CHECK (type IN ('file', 'raw', 'qcow2', 'block')),
        path     TEXT NOT NULL,
        dev      TEXT NOT NULL,
        bus      TEXT NOT NULL,
        size_gib INTEGER,
        UNIQUE (vm_id, dev)
    );
    CREATE TABLE vm_nics (
        id       INTEGER PRIMARY KEY,
        vm_id    INTEGER NOT NULL REFERENCES vms(id) ON DELETE CASCADE,
        position INTEGER NOT NULL,
        kind     TEXT NOT NULL CHECK (kind IN ('bridge', 'direct')),
        source   TEXT NOT NULL,
        mac      TEXT NOT NULL UNIQUE,
        vlan     INTEGER,
        model    TEXT NOT NULL DEFAULT 'virtio'
    );
    CREATE INDEX vms_container ON vms(container_id);
    "#,
    // 2: the events table of hook invocations and plugin runs.
    r#"
    CREATE TABLE events (
        id          INTEGER PRIMARY KEY,
        time_ms     INTEGER NOT NULL,
        vm          TEXT NOT NULL,
        stage       TEXT NOT NULL,
        op          TEXT NOT NULL,
        subop       TEXT NOT NULL,
        plugin      TEXT,
        outcome     TEXT NOT NULL,
        status      INTEGER,
        duration_ms INTEGER NOT NULL,
        message     TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX events_vm ON events(vm, id);
    "#,
    // 3: the disk images kvmroll made (`vm remove --delete-disks` removes
    // those and no others), and the grows waiting for a VM's next start.
    r#"
    CREATE TABLE made_images (
        vm_id     INTEGER NOT NULL REFERENCES vms(id) ON DELETE CASCADE,
        container TEXT NOT NULL,
        path      TEXT NOT NULL,
        time_ms   INTEGER NOT NULL,
        PRIMARY KEY (container, path)
    );
    CREATE INDEX made_images_vm ON made_images(vm_id);
    CREATE TABLE disk_grows (
        vm_id INTEGER NOT NULL REFERENCES vms(id) ON DELETE CASCADE,
        path  TEXT NOT NULL,
        PRIMARY KEY (vm_id, path)
    );
    "#,
    // 4: events spooled on a container reach the database exactly once,
    // keyed by their origin (HOST/FILE#N), and say which container they
    // happened on; each VM counts the generations of its definition.
    // Plain ALTER TABLE and a UNIQUE index: the same step on PostgreSQL.
    r#"
    ALTER TABLE events ADD COLUMN container TEXT;
    ALTER TABLE events ADD COLUMN origin TEXT;
    CREATE UNIQUE INDEX events_origin ON events(origin);
    ALTER TABLE vms ADD COLUMN generation INTEGER NOT NULL DEFAULT 0;
    "#,
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// The SQLite implementation of [`Store`].
#[derive(Debug)]
pub struct SqliteStore {
    path: PathBuf,
    conn: Connection,
    mode: OpenMode,
    /// How long a write waits for another writer (the busy timeout).
    wait: Duration,
    /// The schema version found at open, before any upgrade.
    found: i64,
}

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
    fn fail(&self, what: &'static str, e: rusqlite::Error) -> StoreError {
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
    fn check_identity(&self) -> Result<i64, StoreError> {
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
    fn wal_frames(&self) -> u64 {
        let frame = 24 + 4096;
        let wal = PathBuf::from(format!("{}-wal", self.path.display()));
        std::fs::metadata(&wal).map_or(0, |m| m.len().saturating_sub(32) / frame)
    }

    fn prepare(&self) -> Result<(), StoreError> {
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

    fn load(&self, tx: &Transaction<'_>) -> Result<Cluster, StoreError> {
        let p = &self.path;
        let q = |e| sql(p, "reading the cluster", e);
        let corrupt = |what: String| StoreError::Corrupt {
            path: p.clone(),
            what,
        };
        let mut c = Cluster::default();
        let mut st = tx.prepare("SELECT name FROM appliances").map_err(q)?;
        for name in st.query_map([], |r| r.get::<_, String>(0)).map_err(q)? {
            c.appliances.insert(name.map_err(q)?);
        }
        let mut st = tx
            .prepare(
                "SELECT h.name, a.name, h.rack, h.rank, h.cpus, h.os, h.boot_action,
                        h.install_action, h.run_action
                 FROM hosts h JOIN appliances a ON a.id = h.appliance_id",
            )
            .map_err(q)?;
        let rows = st
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, u32>(2)?,
                    r.get::<_, u32>(3)?,
                    r.get::<_, u32>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, String>(6)?,
                    r.get::<_, String>(7)?,
                    r.get::<_, String>(8)?,
                ))
            })
            .map_err(q)?;
        for row in rows {
            let (name, appliance, rack, rank, cpus, os, boot, install_action, run_action) =
                row.map_err(q)?;
            let boot_action = BootAction::parse(&boot).map_err(|e| corrupt(e.to_string()))?;
            c.hosts.insert(
                name.clone(),
                Host {
                    name,
                    appliance,
                    rack,
                    rank,
                    cpus,
                    os,
                    boot_action,
                    install_action,
                    run_action,
                },
            );
        }
        let mut st = tx
            .prepare("SELECT scope, target, name, value FROM attributes")
            .map_err(q)?;
        let rows = st
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                ))
            })
            .map_err(q)?;
        for row in rows {
            let (kind, target, name, value) = row.map_err(q)?;
            let scope = Scope::from_parts(&kind, &target)
                .ok_or_else(|| corrupt(format!("attribute scope {kind}:{target}")))?;
            c.attrs.entry(scope).or_default().insert(name, value);
        }
        let mut st = tx
            .prepare(
                "SELECT v.id, h.name, ct.name, v.memory_mib, v.vcpus, v.uuid, v.cdrom,
                        v.virt_type, v.stale, v.generation
                 FROM vms v JOIN hosts h ON h.id = v.host_id
                 LEFT JOIN hosts ct ON ct.id = v.container_id",
            )
            .map_err(q)?;
        let rows = st
            .query_map([], |r| {
                Ok(Vm {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    container: r.get(2)?,
                    memory_mib: r.get(3)?,
                    vcpus: r.get(4)?,
                    uuid: r.get(5)?,
                    cdrom: r.get(6)?,
                    virt_type: r.get(7)?,
                    stale: r.get::<_, i64>(8)? != 0,
                    generation: r.get::<_, i64>(9)?.max(0) as u64,
                    disks: Vec::new(),
                    nics: Vec::new(),
                })
            })
            .map_err(q)?;
        let mut by_id = std::collections::HashMap::new();
        for vm in rows {
            let vm = vm.map_err(q)?;
            by_id.insert(vm.id, vm.name.clone());
            c.vms.insert(vm.name.clone(), vm);
        }
        let mut st = tx
            .prepare(
                "SELECT vm_id, type, path, dev, bus, size_gib FROM vm_disks ORDER BY vm_id, position",
            )
            .map_err(q)?;
        let rows = st
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, Option<u32>>(5)?,
                ))
            })
            .map_err(q)?;
        for row in rows {
            let (vm_id, kind, path, dev, bus, size_gib) = row.map_err(q)?;
            let kind =
                DiskKind::parse(&kind).ok_or_else(|| corrupt(format!("disk type {kind}")))?;
            let vm = by_id
                .get(&vm_id)
                .and_then(|n| c.vms.get_mut(n))
                .ok_or_else(|| corrupt(format!("disk of unknown VM {vm_id}")))?;
            vm.disks.push(Disk {
                kind,
                path,
                dev,
                bus,
                size_gib,
            });
        }
        let mut st = tx
            .prepare(
                "SELECT vm_id, kind, source, mac, vlan, model FROM vm_nics ORDER BY vm_id, position",
            )
            .map_err(q)?;
        let rows = st
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, Option<u16>>(4)?,
                    r.get::<_, String>(5)?,
                ))
            })
            .map_err(q)?;
        for row in rows {
            let (vm_id, kind, source, mac, vlan, model) = row.map_err(q)?;
            let kind = match kind.as_str() {
                "bridge" => NicKind::Bridge,
                "direct" => NicKind::Direct,
                other => return Err(corrupt(format!("NIC kind {other}"))),
            };
            let mac = Mac::parse(&mac).map_err(|e| corrupt(e.to_string()))?;
            let vm = by_id
                .get(&vm_id)
                .and_then(|n| c.vms.get_mut(n))
                .ok_or_else(|| corrupt(format!("NIC of unknown VM {vm_id}")))?;
            vm.nics.push(Nic {
                kind,
                source,
                mac,
                vlan,
                model,
            });
        }
        Ok(c)
    }
}

/// Column names, double-quoted and joined for SQL.
fn quoted(columns: &[String]) -> String {
    columns
        .iter()
        .map(|c| format!("\"{}\"", c.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Every row of every kvmroll table, read in `tx`.
fn read_rows(tx: &Transaction<'_>, path: &Path) -> Result<Rows, StoreError> {
    let q = |e| sql(path, "reading every row", e);
    let mut rows = Rows::default();
    for table in TABLES {
        let columns: Vec<String> = tx
            .prepare("SELECT name FROM pragma_table_info(?1) ORDER BY cid")
            .and_then(|mut st| {
                st.query_map([table], |r| r.get(0))?
                    .collect::<rusqlite::Result<_>>()
            })
            .map_err(q)?;
        let mut st = tx
            .prepare(&format!("SELECT {} FROM \"{table}\"", quoted(&columns)))
            .map_err(q)?;
        let mut cursor = st.query([]).map_err(q)?;
        let mut cells = Vec::new();
        while let Some(r) = cursor.next().map_err(q)? {
            let mut row = Vec::with_capacity(columns.len());
            for (i, column) in columns.iter().enumerate() {
                use rusqlite::types::ValueRef;
                row.push(match r.get_ref(i).map_err(q)? {
                    ValueRef::Null => Cell::Null,
                    ValueRef::Integer(n) => Cell::Int(n),
                    ValueRef::Text(t) => Cell::Text(String::from_utf8_lossy(t).into_owned()),
                    ValueRef::Real(_) | ValueRef::Blob(_) => {
                        return Err(StoreError::Corrupt {
                            path: path.to_path_buf(),
                            what: format!("{table}.{column} holds a value kvmroll never writes"),
                        })
                    }
                });
            }
            cells.push(row);
        }
        rows.push(table, columns, cells);
    }
    Ok(rows)
}

/// Refuses a schema version this build cannot read: one newer than it
/// knows, or one no kvmroll writes (zero or below, on a stamped file).
fn check_version(path: &Path, version: i64) -> Result<(), StoreError> {
    if version > SCHEMA_VERSION {
        return Err(StoreError::NewerSchema {
            path: path.to_path_buf(),
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    if version < 1 {
        return Err(StoreError::UnknownSchema {
            path: path.to_path_buf(),
            found: version,
        });
    }
    Ok(())
}

/// Brings the schema to [`SCHEMA_VERSION`] in one transaction; a database
/// at version 0 (only ever a new one, in `create`) is stamped and seeded.
/// `path` names the database in errors.
fn migrate(conn: &Connection, path: &Path, wait: Duration) -> Result<(), StoreError> {
    let fail = |what, e| fault(path, true, wait, what, e);
    let tx = Transaction::new_unchecked(conn, TransactionBehavior::Immediate)
        .map_err(|e| fail("starting the upgrade", e))?;
    // Another process may have upgraded it while we waited for the lock.
    let found: i64 = tx
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| fail("reading its schema version", e))?;
    let fresh = found == 0;
    if !fresh {
        check_version(path, found)?;
    }
    for to in found + 1..=SCHEMA_VERSION {
        // check_version bounds `to` to 1..=MIGRATIONS.len(); `get` keeps an
        // index that is wrong all the same from becoming a panic.
        let step = usize::try_from(to - 1)
            .ok()
            .and_then(|i| MIGRATIONS.get(i))
            .ok_or_else(|| StoreError::UnknownSchema {
                path: path.to_path_buf(),
                found,
            })?;
        let failed = |source| StoreError::Upgrade {
            path: path.to_path_buf(),
            from: to - 1,
            to,
            source,
        };
        tx.execute_batch(step)
            .map_err(|e| failed(Box::new(SqlFault(e))))?;
        tx.pragma_update(None, "user_version", to)
            .map_err(|e| failed(Box::new(SqlFault(e))))?;
    }
    if fresh {
        tx.pragma_update(None, "application_id", APPLICATION_ID)
            .map_err(|e| fail("stamping the database", e))?;
        let seeded = Cluster::seeded();
        for a in &seeded.appliances {
            tx.execute("INSERT INTO appliances (name) VALUES (?1)", [a])
                .map_err(|e| fail("seeding appliances", e))?;
        }
        for (scope, attrs) in &seeded.attrs {
            for (name, value) in attrs {
                put_attr(&tx, scope, name, value).map_err(|e| fail("seeding attributes", e))?;
            }
        }
    }
    tx.commit().map_err(|e| fail("committing the upgrade", e))
}

/// Makes a new database at `path`, whole: the schema is written, stamped
/// and seeded in a temporary file beside it, which is then linked into
/// place, so that no process ever finds a half-made or empty database there
/// (and an empty file found there is never taken for a new one). Returns
/// false when another process made it first.
fn create(path: &Path) -> Result<bool, StoreError> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
        path: dir.to_path_buf(),
        source,
    })?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    // Unique per call: threads of one process may make it at once.
    let tmp = dir.join(format!(".{name}.{}.new", uuid::Uuid::new_v4().simple()));
    let made = |source| StoreError::Create {
        path: path.to_path_buf(),
        source,
    };
    let result = (|| {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)
            .map_err(made)?;
        {
            let conn = Connection::open_with_flags(
                &tmp,
                OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(|e| fault(path, true, BUSY_TIMEOUT, "making it", e))?;
            conn.execute_batch("PRAGMA synchronous = FULL")
                .map_err(|e| fault(path, true, BUSY_TIMEOUT, "making it", e))?;
            migrate(&conn, path, BUSY_TIMEOUT)?;
            // Switched last, so that closing checkpoints and removes this
            // temporary's own -wal: the header says WAL from the start.
            conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))
                .map_err(|e| fault(path, true, BUSY_TIMEOUT, "making it", e))?;
        }
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(made)?;
        // link(2) fails where anything is already at `path`; rename would
        // replace it.
        let linked = match std::fs::hard_link(&tmp, path) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
            Err(e) => return Err(made(e)),
        };
        std::fs::remove_file(&tmp).map_err(made)?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(made)?;
        Ok(linked)
    })();
    if result.is_err() {
        for suffix in ["", "-journal", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", tmp.display()));
        }
    }
    result
}

/// A SQLite failure as a [`StoreError`], with its cause where the user can
/// act on it: a writer that held the lock past `wait`, or a file system that
/// refuses the file or its folder (SQLite says only "unable to open database
/// file" or "attempt to write a readonly database").
fn fault(
    path: &Path,
    write: bool,
    wait: Duration,
    what: &'static str,
    e: rusqlite::Error,
) -> StoreError {
    use rusqlite::ErrorCode as C;
    match e.sqlite_error_code() {
        Some(C::DatabaseBusy) => StoreError::Busy {
            path: path.to_path_buf(),
            waited: wait,
            what,
        },
        Some(C::CannotOpen | C::ReadOnly | C::PermissionDenied | C::SystemIoFailure) => {
            match access_problem(path, write) {
                Some(why) => StoreError::NoAccess {
                    path: path.to_path_buf(),
                    why,
                },
                None => sql(path, what, e),
            }
        }
        _ => sql(path, what, e),
    }
}

/// What the file system refuses of the database at `path`, and what to do,
/// if it refuses anything: reading it; writing it, when `write`; and making
/// files in its folder, where WAL keeps its `-wal` and `-shm` files (readers
/// need the `-shm` too).
fn access_problem(path: &Path, write: bool) -> Option<String> {
    use nix::errno::Errno;
    use nix::unistd::{access, AccessFlags};
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let denied = |e: Errno| matches!(e, Errno::EACCES | Errno::EPERM);
    if let Err(e) = access(path, AccessFlags::R_OK) {
        if denied(e) {
            return Some("no permission to read it: run as its owner, or fix its mode".into());
        }
    }
    if write {
        match access(path, AccessFlags::W_OK) {
            Err(Errno::EROFS) => {
                return Some(
                    "it is on a read-only file system: remount that read-write, or point \
                     --db (KVMROLL_DB) at a copy on a writable one"
                        .into(),
                )
            }
            Err(e) if denied(e) => {
                return Some(
                    "no permission to write it: run as its owner (root), or fix its mode".into(),
                )
            }
            _ => {}
        }
    }
    match access(dir, AccessFlags::W_OK | AccessFlags::X_OK) {
        Err(Errno::EROFS) => Some(format!(
            "its folder {} is on a read-only file system, and the write-ahead log needs \
             its -wal and -shm files there: remount it read-write",
            dir.display()
        )),
        Err(e) if denied(e) => Some(format!(
            "no permission to make files in its folder {}, where the write-ahead log keeps \
             its -wal and -shm files: run as the folder's owner, or let them write there",
            dir.display()
        )),
        _ => None,
    }
}

/// A SQLite error on one line: SQLite's message without the statement it
/// failed in (rusqlite's text of a failed batch carries the whole batch).
#[derive(Debug)]
struct SqlFault(rusqlite::Error);

impl std::fmt::Display for SqlFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = match &self.0 {
            rusqlite::Error::SqlInputError { msg, .. } => msg.clone(),
            e => e.to_string(),
        };
        f.write_str(text.lines().next().unwrap_or_default().trim())
    }
}

impl std::error::Error for SqlFault {}

fn sql(path: &Path, what: &'static str, source: rusqlite::Error) -> StoreError {
    StoreError::Sql {
        path: path.to_path_buf(),
        what,
        source: Box::new(SqlFault(source)),
    }
}

/// A generation as SQLite keeps it (a signed 64-bit integer).
fn generation(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn put_attr(tx: &Transaction<'_>, scope: &Scope, name: &str, value: &str) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO attributes (scope, target, name, value) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (scope, target, name) DO UPDATE SET value = excluded.value",
        params![scope.kind(), scope.target(), name, value],
    )
    .map(|_| ())
}

fn host_id(tx: &Transaction<'_>, name: &str) -> rusqlite::Result<Option<i64>> {
    tx.query_row("SELECT id FROM hosts WHERE name = ?1", [name], |r| r.get(0))
        .optional()
}

fn put_host(tx: &Transaction<'_>, h: &Host, insert: bool) -> rusqlite::Result<()> {
    let sql = if insert {
        "INSERT INTO hosts (name, appliance_id, rack, rank, cpus, os, boot_action, install_action, run_action)
         VALUES (?1, (SELECT id FROM appliances WHERE name = ?2), ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
    } else {
        "UPDATE hosts SET appliance_id = (SELECT id FROM appliances WHERE name = ?2), rack = ?3,
             rank = ?4, cpus = ?5, os = ?6, boot_action = ?7, install_action = ?8, run_action = ?9
         WHERE name = ?1"
    };
    tx.execute(
        sql,
        params![
            h.name,
            h.appliance,
            h.rack,
            h.rank,
            h.cpus,
            h.os,
            h.boot_action.as_str(),
            h.install_action,
            h.run_action
        ],
    )
    .map(|_| ())
}

fn put_vm(tx: &Transaction<'_>, vm: &Vm, insert: bool) -> rusqlite::Result<()> {
    let container = match &vm.container {
        Some(c) => host_id(tx, c)?,
        None => None,
    };
    if insert {
        let own = host_id(tx, &vm.name)?;
        tx.execute(
            "INSERT INTO vms (id, host_id, container_id, memory_mib, vcpus, uuid, cdrom, virt_type, stale,
                              generation)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                vm.id,
                own,
                container,
                vm.memory_mib,
                vm.vcpus,
                vm.uuid,
                vm.cdrom,
                vm.virt_type,
                vm.stale,
                generation(vm.generation)
            ],
        )?;
    } else {
        tx.execute(
            "UPDATE vms SET container_id = ?2, memory_mib = ?3, vcpus = ?4, cdrom = ?5,
                 virt_type = ?6, stale = ?7 WHERE id = ?1",
            params![
                vm.id,
                container,
                vm.memory_mib,
                vm.vcpus,
                vm.cdrom,
                vm.virt_type,
                vm.stale
            ],
        )?;
        tx.execute("DELETE FROM vm_disks WHERE vm_id = ?1", [vm.id])?;
        tx.execute("DELETE FROM vm_nics WHERE vm_id = ?1", [vm.id])?;
    }
    for (i, d) in vm.disks.iter().enumerate() {
        tx.execute(
            "INSERT INTO vm_disks (vm_id, position, type, path, dev, bus, size_gib)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![vm.id, i, d.kind.as_str(), d.path, d.dev, d.bus, d.size_gib],
        )?;
    }
    for (i, n) in vm.nics.iter().enumerate() {
        tx.execute(
            "INSERT INTO vm_nics (vm_id, position, kind, source, mac, vlan, model)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                vm.id,
                i,
                n.kind.as_str(),
                n.source,
                n.mac.as_str(),
                n.vlan,
                n.model
            ],
        )?;
    }
    Ok(())
}

/// Writes one planned change; values come from the planned cluster, where
/// they were normalised.
fn write(tx: &Transaction<'_>, change: &Change, after: &Cluster) -> rusqlite::Result<()> {
    match change {
        Change::AddAppliance(name) => {
            tx.execute("INSERT INTO appliances (name) VALUES (?1)", [name])?;
        }
        Change::AddHost(h) => put_host(tx, h, true)?,
        Change::SetHost(h) => put_host(tx, h, false)?,
        Change::RemoveHost(name) => {
            tx.execute(
                "DELETE FROM attributes WHERE scope = 'host' AND target = ?1",
                [name],
            )?;
            tx.execute("DELETE FROM hosts WHERE name = ?1", [name])?;
        }
        Change::SetAttr { scope, name, .. } => {
            let value = after
                .attrs
                .get(scope)
                .and_then(|m| m.get(name))
                .map(String::as_str)
                .unwrap_or_default();
            put_attr(tx, scope, name, value)?;
        }
        Change::RemoveAttr { scope, name } => {
            tx.execute(
                "DELETE FROM attributes WHERE scope = ?1 AND target = ?2 AND name = ?3",
                params![scope.kind(), scope.target(), name],
            )?;
        }
        Change::AddVm(vm) | Change::SetVm(vm) => {
            let insert = matches!(change, Change::AddVm(_));
            let planned = after.vms.get(&vm.name).unwrap_or(vm);
            if insert {
                let own = after
                    .hosts
                    .get(&vm.name)
                    .cloned()
                    .unwrap_or_else(|| Host::new(&vm.name, crate::cluster::VM_APPLIANCE));
                put_host(tx, &own, true)?;
            } else {
                tx.execute(
                    "UPDATE hosts SET cpus = ?2 WHERE name = ?1",
                    params![vm.name, planned.vcpus],
                )?;
            }
            put_vm(tx, planned, insert)?;
        }
        Change::RemoveVm(name) => {
            tx.execute(
                "DELETE FROM attributes WHERE scope = 'host' AND target = ?1",
                [name],
            )?;
            tx.execute(
                "DELETE FROM vms WHERE host_id = (SELECT id FROM hosts WHERE name = ?1)",
                [name],
            )?;
            tx.execute("DELETE FROM hosts WHERE name = ?1", [name])?;
        }
    }
    Ok(())
}

/// The row id of a VM, by its name.
fn vm_id(tx: &Transaction<'_>, vm: &str) -> rusqlite::Result<Option<i64>> {
    tx.query_row(
        "SELECT v.id FROM vms v JOIN hosts h ON h.id = v.host_id WHERE h.name = ?1",
        [vm],
        |r| r.get(0),
    )
    .optional()
}

const EVENT_COLUMNS: &str =
    "id, time_ms, vm, stage, op, subop, plugin, outcome, status, duration_ms, message, container";

/// Appends events, each with its origin (`None` for events recorded at once,
/// which have none); an origin the table already has is skipped. Returns
/// how many rows were added.
fn insert_events<'a>(
    tx: &Transaction<'_>,
    path: &Path,
    events: impl Iterator<Item = (&'a Event, Option<&'a str>)>,
) -> Result<usize, StoreError> {
    let q = |e| sql(path, "recording events", e);
    // SQLite's upsert takes the UNIQUE index on origin as its target, as
    // PostgreSQL's does; NULL origins never conflict.
    let mut st = tx
        .prepare_cached(
            "INSERT INTO events (time_ms, vm, stage, op, subop, plugin, outcome, status,
                                 duration_ms, message, container, origin)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
             ON CONFLICT (origin) DO NOTHING",
        )
        .map_err(q)?;
    let mut added = 0;
    for (e, origin) in events {
        added += st
            .execute(params![
                e.time_ms,
                e.vm,
                e.stage,
                e.op,
                e.subop,
                e.plugin,
                e.outcome.as_str(),
                e.status,
                e.duration_ms as i64,
                e.message,
                e.container,
                origin
            ])
            .map_err(q)?;
    }
    Ok(added)
}

impl Store for SqliteStore {
    fn vm_brief(&self, name: &str) -> Result<Option<VmBrief>, StoreError> {
        let p = &self.path;
        let q = |e| sql(p, "looking up a VM", e);
        let row = self
            .conn
            .query_row(
                "SELECT h.os, a.name, h.rack, v.uuid, ct.name, v.generation
                 FROM vms v JOIN hosts h ON h.id = v.host_id
                 JOIN appliances a ON a.id = h.appliance_id
                 LEFT JOIN hosts ct ON ct.id = v.container_id
                 WHERE h.name = ?1",
                [name],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, u32>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, Option<String>>(4)?,
                        r.get::<_, i64>(5)?,
                    ))
                },
            )
            .optional()
            .map_err(q)?;
        let Some((os, appliance, rack, uuid, container, generation)) = row else {
            return Ok(None);
        };
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT scope, name, value FROM attributes
                 WHERE scope = 'global' OR (scope = 'os' AND target = ?1)
                    OR (scope = 'appliance' AND target = ?2)
                    OR (scope = 'rack' AND target = ?3) OR (scope = 'host' AND target = ?4)",
            )
            .map_err(q)?;
        let rank = |scope: &str| match scope {
            "global" => 0,
            "os" => 1,
            "appliance" => 2,
            "rack" => 3,
            _ => 4,
        };
        let mut found: Vec<(u8, String, String)> = st
            .query_map(params![os, appliance, rack.to_string(), name], |r| {
                Ok((
                    rank(&r.get::<_, String>(0)?),
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })
            .map_err(q)?
            .collect::<Result<_, _>>()
            .map_err(q)?;
        found.sort_by_key(|(rank, _, _)| *rank);
        Ok(Some(VmBrief {
            name: name.to_string(),
            uuid,
            container,
            generation: generation.max(0) as u64,
            attrs: found.into_iter().map(|(_, n, v)| (n, v)).collect(),
        }))
    }

    fn vm_disks(&self, vm: &str) -> Result<Vec<VmDisk>, StoreError> {
        let p = &self.path;
        let q = |e| sql(p, "reading a VM's disks", e);
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT d.type, d.path, d.dev, d.bus, d.size_gib, g.path IS NOT NULL
                 FROM vm_disks d JOIN vms v ON v.id = d.vm_id JOIN hosts h ON h.id = v.host_id
                 LEFT JOIN disk_grows g ON g.vm_id = d.vm_id AND g.path = d.path
                 WHERE h.name = ?1 ORDER BY d.position",
            )
            .map_err(q)?;
        let rows = st
            .query_map([vm], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    Disk {
                        kind: DiskKind::File,
                        path: r.get(1)?,
                        dev: r.get(2)?,
                        bus: r.get(3)?,
                        size_gib: r.get(4)?,
                    },
                    r.get::<_, bool>(5)?,
                ))
            })
            .map_err(q)?;
        rows.map(|row| {
            let (kind, mut disk, grow) = row.map_err(q)?;
            disk.kind = DiskKind::parse(&kind).ok_or_else(|| StoreError::Corrupt {
                path: p.clone(),
                what: format!("disk type {kind}"),
            })?;
            Ok(VmDisk { disk, grow })
        })
        .collect()
    }

    fn record_disk_work(
        &mut self,
        vm: &str,
        container: &str,
        made: &[String],
        grown: &[String],
    ) -> Result<(), StoreError> {
        if self.mode == OpenMode::ReadOnly {
            return Err(StoreError::ReadOnly);
        }
        if made.is_empty() && grown.is_empty() {
            return Ok(());
        }
        let p = &self.path;
        let q = |e| sql(p, "recording disk work", e);
        let tx =
            Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate).map_err(q)?;
        let Some(id) = vm_id(&tx, vm).map_err(q)? else {
            return Ok(());
        };
        let now = crate::now_ms();
        for path in made {
            tx.execute(
                "INSERT OR REPLACE INTO made_images (vm_id, container, path, time_ms)
                 VALUES (?1, ?2, ?3, ?4)",
                params![id, container, path, now],
            )
            .map_err(q)?;
        }
        for path in grown {
            tx.execute(
                "DELETE FROM disk_grows WHERE vm_id = ?1 AND path = ?2",
                params![id, path],
            )
            .map_err(q)?;
        }
        tx.commit().map_err(q)
    }

    fn made_images(&self, vm: &str) -> Result<Vec<MadeImage>, StoreError> {
        let p = &self.path;
        let q = |e| sql(p, "reading the images made for a VM", e);
        let mut st = self
            .conn
            .prepare(
                "SELECT m.container, m.path, m.time_ms FROM made_images m
                 JOIN vms v ON v.id = m.vm_id JOIN hosts h ON h.id = v.host_id
                 WHERE h.name = ?1 ORDER BY m.time_ms, m.path",
            )
            .map_err(q)?;
        let rows = st
            .query_map([vm], |r| {
                Ok(MadeImage {
                    container: r.get(0)?,
                    path: r.get(1)?,
                    time_ms: r.get(2)?,
                })
            })
            .map_err(q)?;
        rows.collect::<Result<_, _>>().map_err(q)
    }

    fn grow_disk(&mut self, vm: &str, dev: &str, size_gib: u32) -> Result<Disk, StoreError> {
        if self.mode == OpenMode::ReadOnly {
            return Err(StoreError::ReadOnly);
        }
        let p = &self.path;
        let q = |e| sql(p, "growing a disk", e);
        let tx =
            Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate).map_err(q)?;
        let id = vm_id(&tx, vm)
            .map_err(q)?
            .ok_or_else(|| ClusterError::UnknownVm(vm.to_string()))?;
        let found = tx
            .query_row(
                "SELECT type, path, bus, size_gib FROM vm_disks WHERE vm_id = ?1 AND dev = ?2",
                params![id, dev],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, Option<u32>>(3)?,
                    ))
                },
            )
            .optional()
            .map_err(q)?;
        let Some((kind, path, bus, size)) = found else {
            return Err(ClusterError::UnknownDisk {
                vm: vm.to_string(),
                dev: dev.to_string(),
            }
            .into());
        };
        let kind = DiskKind::parse(&kind).ok_or_else(|| StoreError::Corrupt {
            path: p.clone(),
            what: format!("disk type {kind}"),
        })?;
        if let Some(from) = size.filter(|from| *from > size_gib) {
            return Err(ClusterError::DiskShrink {
                vm: vm.to_string(),
                dev: dev.to_string(),
                from,
                to: size_gib,
            }
            .into());
        }
        tx.execute(
            "UPDATE vm_disks SET size_gib = ?3 WHERE vm_id = ?1 AND dev = ?2",
            params![id, dev, size_gib],
        )
        .map_err(q)?;
        // The size is in the VM's definition (its kvmroll metadata).
        if size != Some(size_gib) {
            tx.execute(
                "UPDATE vms SET generation = generation + 1 WHERE id = ?1",
                [id],
            )
            .map_err(q)?;
        }
        tx.execute(
            "INSERT OR IGNORE INTO disk_grows (vm_id, path) VALUES (?1, ?2)",
            params![id, path],
        )
        .map_err(q)?;
        tx.commit().map_err(q)?;
        Ok(Disk {
            kind,
            path,
            dev: dev.to_string(),
            bus,
            size_gib: size,
        })
    }

    fn record_events(&mut self, events: &[Event]) -> Result<(), StoreError> {
        if self.mode == OpenMode::ReadOnly {
            return Err(StoreError::ReadOnly);
        }
        let tx = Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)
            .map_err(|e| self.fail("starting to record events", e))?;
        insert_events(&tx, &self.path, events.iter().map(|e| (e, None)))?;
        tx.commit().map_err(|e| self.fail("committing events", e))
    }

    fn record_spooled(&mut self, events: &[Spooled]) -> Result<usize, StoreError> {
        if self.mode == OpenMode::ReadOnly {
            return Err(StoreError::ReadOnly);
        }
        let tx = Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)
            .map_err(|e| self.fail("starting to record spooled events", e))?;
        let added = insert_events(
            &tx,
            &self.path,
            events.iter().map(|s| (&s.event, Some(s.origin.as_str()))),
        )?;
        tx.commit()
            .map_err(|e| self.fail("committing spooled events", e))?;
        Ok(added)
    }

    fn upkeep_due(&self) -> bool {
        self.mode == OpenMode::ReadWriteFast && self.wal_frames() > WAL_UPKEEP_FRAMES
    }

    fn upkeep(&self, patience: Duration) -> Result<(), StoreError> {
        let p = &self.path;
        self.conn
            .busy_timeout(patience)
            .map_err(|e| sql(p, "setting the busy timeout", e))?;
        // TRUNCATE: copy every frame into the database, then empty the WAL,
        // so that the next hook's rebuild of the WAL index reads nothing.
        let (busy, _, _): (i64, i64, i64) = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .map_err(|e| sql(p, "checkpointing the WAL", e))?;
        if busy != 0 {
            log::debug!("{}: WAL checkpoint deferred: busy", p.display());
        }
        Ok(())
    }

    fn events(&self, filter: &EventFilter) -> Result<Vec<Event>, StoreError> {
        let p = &self.path;
        let q = |e| sql(p, "reading events", e);
        let limit = filter.limit.map_or(-1, i64::from);
        let text = format!(
            "SELECT * FROM (SELECT {EVENT_COLUMNS} FROM events
             WHERE (?1 IS NULL OR vm = ?1) AND (?3 IS NULL OR container = ?3)
             ORDER BY id DESC LIMIT ?2) ORDER BY id"
        );
        let mut st = self.conn.prepare(&text).map_err(q)?;
        let rows = st
            .query_map(params![filter.vm, limit, filter.container], |r| {
                Ok((
                    Event {
                        id: r.get(0)?,
                        time_ms: r.get(1)?,
                        vm: r.get(2)?,
                        stage: r.get(3)?,
                        op: r.get(4)?,
                        subop: r.get(5)?,
                        plugin: r.get(6)?,
                        outcome: Outcome::Ok,
                        status: r.get(8)?,
                        duration_ms: r.get::<_, i64>(9)?.max(0) as u64,
                        message: r.get(10)?,
                        container: r.get(11)?,
                    },
                    r.get::<_, String>(7)?,
                ))
            })
            .map_err(q)?;
        rows.map(|row| {
            let (mut event, outcome) = row.map_err(q)?;
            event.outcome = Outcome::parse(&outcome).ok_or_else(|| StoreError::Corrupt {
                path: p.clone(),
                what: format!("event outcome {outcome}"),
            })?;
            Ok(event)
        })
        .collect()
    }

    fn status(&self) -> Result<StoreStatus, StoreError> {
        let q = |e| sql(&self.path, "counting its rows", e);
        let tx = self.conn.unchecked_transaction().map_err(q)?;
        let count = |query: &str| -> Result<u64, StoreError> {
            let n: i64 = tx.query_row(query, [], |r| r.get(0)).map_err(q)?;
            Ok(n.max(0) as u64)
        };
        let status = StoreStatus {
            engine: "sqlite",
            location: self.path.display().to_string(),
            schema_version: tx
                .query_row("PRAGMA user_version", [], |r| r.get(0))
                .map_err(q)?,
            hosts: count("SELECT count(*) FROM hosts WHERE id NOT IN (SELECT host_id FROM vms)")?,
            vms: count("SELECT count(*) FROM vms")?,
            events: count("SELECT count(*) FROM events")?,
        };
        tx.finish().map_err(q)?;
        Ok(status)
    }

    fn prune_events(
        &mut self,
        before_ms: Option<i64>,
        keep: Option<u64>,
    ) -> Result<u64, StoreError> {
        if self.mode == OpenMode::ReadOnly {
            return Err(StoreError::ReadOnly);
        }
        let p = &self.path;
        let q = |e| sql(p, "pruning events", e);
        let tx = Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)
            .map_err(|e| self.fail("starting to prune events", e))?;
        let mut gone = 0;
        if let Some(before) = before_ms {
            gone += tx
                .execute("DELETE FROM events WHERE time_ms < ?1", [before])
                .map_err(q)?;
        }
        if let Some(keep) = keep {
            let keep = i64::try_from(keep).unwrap_or(i64::MAX);
            gone += tx
                .execute(
                    "DELETE FROM events WHERE id <= (SELECT id FROM events ORDER BY id DESC
                                                     LIMIT 1 OFFSET ?1)",
                    [keep],
                )
                .map_err(q)?;
        }
        tx.commit().map_err(q)?;
        Ok(gone as u64)
    }

    fn rows(&self) -> Result<Rows, StoreError> {
        let tx = self
            .conn
            .unchecked_transaction()
            .map_err(|e| sql(&self.path, "starting a read", e))?;
        let rows = read_rows(&tx, &self.path)?;
        tx.finish()
            .map_err(|e| sql(&self.path, "ending a read", e))?;
        Ok(rows)
    }

    fn fill(&mut self, rows: &Rows) -> Result<(), StoreError> {
        if self.mode == OpenMode::ReadOnly {
            return Err(StoreError::ReadOnly);
        }
        let p = &self.path;
        let location = p.display().to_string();
        let q = |e| sql(p, "copying rows in", e);
        let tx = Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)
            .map_err(|e| self.fail("starting the copy", e))?;
        let here = read_rows(&tx, p)?;
        if let Some(holds) = here.occupied() {
            return Err(StoreError::NotEmpty { location, holds });
        }
        rows.check_columns(&here, &location)?;
        // The seed goes: the source's appliances and attributes replace it.
        tx.execute_batch("DELETE FROM attributes; DELETE FROM appliances;")
            .map_err(q)?;
        for table in &rows.tables {
            let marks: Vec<String> = (1..=table.columns.len()).map(|i| format!("?{i}")).collect();
            let insert = format!(
                "INSERT INTO \"{}\" ({}) VALUES ({})",
                table.name,
                quoted(&table.columns),
                marks.join(", ")
            );
            let mut st = tx.prepare(&insert).map_err(q)?;
            for row in &table.rows {
                let values = row.iter().map(|c| match c {
                    Cell::Null => rusqlite::types::Value::Null,
                    Cell::Int(i) => rusqlite::types::Value::Integer(*i),
                    Cell::Text(t) => rusqlite::types::Value::Text(t.clone()),
                });
                st.execute(rusqlite::params_from_iter(values)).map_err(q)?;
            }
        }
        tx.commit().map_err(|e| self.fail("committing the copy", e))
    }

    fn snapshot(&self) -> Result<Cluster, StoreError> {
        let tx = self
            .conn
            .unchecked_transaction()
            .map_err(|e| sql(&self.path, "starting a read", e))?;
        let c = self.load(&tx)?;
        tx.finish()
            .map_err(|e| sql(&self.path, "ending a read", e))?;
        Ok(c)
    }

    fn update(
        &mut self,
        changes: &mut dyn FnMut(&Cluster) -> Result<Vec<Change>, ClusterError>,
    ) -> Result<Plan, StoreError> {
        if self.mode == OpenMode::ReadOnly {
            return Err(StoreError::ReadOnly);
        }
        let tx = Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)
            .map_err(|e| self.fail("starting a write", e))?;
        let before = self.load(&tx)?;
        let list = changes(&before)?;
        let plan = before.plan(&list)?;
        for change in &list {
            write(&tx, change, &plan.after).map_err(|e| sql(&self.path, "writing a change", e))?;
        }
        for (vm, n) in plan.generations() {
            tx.execute(
                "UPDATE vms SET generation = ?2
                 WHERE host_id = (SELECT id FROM hosts WHERE name = ?1)",
                params![vm, generation(n)],
            )
            .map_err(|e| sql(&self.path, "writing a generation", e))?;
        }
        tx.commit()
            .map_err(|e| self.fail("committing a write", e))?;
        Ok(plan)
    }
}

#[cfg(test)]
mod tests;
