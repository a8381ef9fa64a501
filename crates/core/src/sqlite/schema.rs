//! The SQLite schema: its numbered migrations, and making or upgrading a
//! database with them, whole or not at all.

use super::fault::{fault, SqlFault};
use super::write::put_attr;
use super::*;

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

/// Refuses a schema version this build cannot read: one newer than it
/// knows, or one no kvmroll writes (zero or below, on a stamped file).
pub(super) fn check_version(path: &Path, version: i64) -> Result<(), StoreError> {
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
pub(super) fn migrate(conn: &Connection, path: &Path, wait: Duration) -> Result<(), StoreError> {
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
pub(super) fn create(path: &Path) -> Result<bool, StoreError> {
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
