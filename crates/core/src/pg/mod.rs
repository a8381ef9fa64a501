//! The PostgreSQL store: one database on the frontend that the CLI and every
//! VM container's hook share, behind the same [`Store`] trait and with the
//! same guarantees as SQLite's. The client is the pure-Rust `postgres` crate
//! (no libpq), so the hook stays a static binary.
//!
//! Concurrency. Every `update` takes kvmroll's writer lock (a transaction-
//! scoped advisory lock) before it reads the cluster, so writers take turns
//! as they do on SQLite (`BEGIN IMMEDIATE`), and each one's closure sees the
//! cluster its changes are written over: two CLIs changing the same VM are
//! both kept. SERIALIZABLE alone would not serve better here: `update` reads
//! every table to plan, so any two concurrent updates conflict, and SSI would
//! resolve each pair by aborting one (a round trip wasted, and a burst of
//! allocate plugins could exhaust any bounded retry) where a lock makes them
//! wait in line. Serialization failures and deadlocks (40001, 40P01), which
//! can still come from elsewhere (an upgrade's DDL, another program's locks),
//! are retried a bounded number of times, calling the closure again with
//! the fresh cluster, then reported in one line. Events are plain inserts
//! that take no lock and conflict with nothing. Reads run in one
//! REPEATABLE READ transaction, so a snapshot is consistent.

mod connect;
mod schema;

pub use connect::{PgEnv, DEFAULT_CONNECT_TIMEOUT, DEFAULT_SOCKET_DIR};
pub use schema::SCHEMA_VERSION;

use crate::cluster::{Change, Cluster, ClusterError};
use crate::dburl::PgLocation;
use crate::events::{Event, EventFilter, Outcome, Spooled};
use crate::model::{BootAction, Disk, DiskKind, Host, Mac, Nic, NicKind, Scope, Vm};
use crate::plan::Plan;
use crate::store::{
    BackendError, Cell, Init, MadeImage, OpenMode, Rows, Store, StoreError, StoreStatus, VmBrief,
    VmDisk, TABLES,
};
use postgres::error::SqlState;
use postgres::{Client, GenericClient, IsolationLevel};
use schema::Found;
use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

/// kvmroll's advisory locks: the class "kvmr", and within it the writers'
/// lock that `update` and migrations take.
const LOCK_CLASS: i32 = 0x6b76_6d72;
const LOCK_WRITERS: i32 = 1;

/// How many times a transaction is tried before contention is reported.
const TRIES: u32 = 8;

/// What failed inside the engine, before it is told to users.
#[derive(Debug)]
enum Fail {
    Pg(postgres::Error),
    /// A migration step (the one that makes schema `to`) failed.
    Step {
        to: i64,
        error: postgres::Error,
    },
    Corrupt(String),
    Refused(ClusterError),
}

impl From<postgres::Error> for Fail {
    fn from(e: postgres::Error) -> Fail {
        Fail::Pg(e)
    }
}

/// An engine error as one line, with no SQL text: the server's message and
/// its SQLSTATE, or the client's chain of causes.
#[derive(Debug)]
struct Fault(String);

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Fault {}

fn one_line(e: &postgres::Error) -> BackendError {
    let text = match e.as_db_error() {
        Some(db) => {
            let mut t = format!("{} (SQLSTATE {})", db.message(), db.code().code());
            if let Some(detail) = db.detail() {
                t.push_str("; ");
                t.push_str(detail);
            }
            t
        }
        None => crate::sys::error_chain(e),
    };
    Box::new(Fault(text.replace(['\n', '\r'], "; ")))
}

/// A failure of the engine, told on one line: `Sql` is the engine-neutral
/// variant (its `path` holds the location shown, without password).
fn backend(location: &str, what: &'static str, e: &postgres::Error) -> StoreError {
    StoreError::Sql {
        path: location.into(),
        what,
        source: one_line(e),
    }
}

/// The PostgreSQL implementation of [`Store`].
pub struct PgStore {
    /// The location as shown to users: without its password.
    shown: String,
    /// For a connection lost on the way: the server's host and port.
    host: String,
    port: u16,
    client: RefCell<Client>,
    mode: OpenMode,
    /// How long a write waits for another (`lock_timeout`).
    wait: Duration,
    /// The schema version found at open, before any upgrade.
    found: Found,
}

impl fmt::Debug for PgStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgStore")
            .field("location", &self.shown)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connects to the database at `location` and checks it is kvmroll's:
    /// a database with tables of others is refused, as is one of a newer
    /// schema, before anything is written. An older schema is upgraded in
    /// every write mode.
    ///
    /// `Create` makes kvmroll's tables in an empty database; the other
    /// modes are told to run `kvmroll db init`. Unlike a SQLite file, the
    /// PostgreSQL database itself is never made here: an administrator made
    /// it (`CREATE DATABASE`), so a mistyped URL is refused by the server,
    /// and making kvmroll's tables at the first command that may start a
    /// cluster leaves nothing where nothing was meant to be.
    pub fn open(location: &PgLocation, mode: OpenMode, env: &PgEnv) -> Result<PgStore, StoreError> {
        let shown = location.to_string();
        let target = connect::Target::resolve(location, env)?;
        let client = connect::connect(&target, &shown, mode)?;
        let mut store = PgStore {
            shown,
            host: target.host_text(),
            port: target.port,
            client: RefCell::new(client),
            mode,
            wait: connect::lock_wait(mode),
            found: Found::Empty,
        };
        store.found = store.prepare()?;
        Ok(store)
    }

    /// Makes kvmroll's tables in the database at `location` if it has none,
    /// or upgrades them: what `kvmroll db init` does. A database of others
    /// is refused.
    pub fn init(location: &PgLocation, env: &PgEnv) -> Result<(PgStore, Init), StoreError> {
        let store = PgStore::open(location, OpenMode::Create, env)?;
        let init = match store.found {
            Found::Version(v) if v == SCHEMA_VERSION => Init::Current,
            Found::Version(from) => Init::Upgraded { from },
            Found::Empty | Found::Foreign => Init::Created,
        };
        Ok((store, init))
    }

    /// Checks the identity, and makes or upgrades the schema where the mode
    /// allows; returns what was found before.
    fn prepare(&self) -> Result<Found, StoreError> {
        let mut client = self.client.borrow_mut();
        let found =
            schema::identify(&mut *client).map_err(|f| self.fail("reading its identity", f))?;
        let version = match found {
            Found::Foreign => return Err(self.foreign()),
            Found::Version(v) if v > SCHEMA_VERSION => return Err(self.too_new(v)),
            Found::Version(v) if v < 1 => return Err(self.unknown(v)),
            Found::Version(v) if v == SCHEMA_VERSION => return Ok(found),
            Found::Empty if self.mode != OpenMode::Create => {
                return Err(StoreError::NoSchema {
                    location: self.shown.clone(),
                })
            }
            Found::Empty => 0,
            Found::Version(v) if self.mode == OpenMode::ReadOnly => {
                return Err(StoreError::NeedsUpgrade {
                    path: self.shown.clone().into(),
                    found: v,
                    supported: SCHEMA_VERSION,
                })
            }
            Found::Version(v) => v,
        };
        match schema::migrate(&mut client) {
            Ok(Found::Foreign) => Err(self.foreign()),
            Ok(Found::Version(v)) if v > SCHEMA_VERSION => Err(self.too_new(v)),
            Ok(Found::Version(v)) if v < 1 => Err(self.unknown(v)),
            Ok(_) => Ok(found),
            // A step's own failure names the step, as SQLite's do.
            Err(Fail::Step { to, error }) if error.as_db_error().is_some() => {
                Err(StoreError::Upgrade {
                    path: self.shown.clone().into(),
                    from: to - 1,
                    to,
                    source: one_line(&error),
                })
            }
            // A role that may not change the schema (a container's) says so
            // here, as any other failure of the upgrade.
            Err(Fail::Pg(e)) if e.as_db_error().is_some() => Err(StoreError::Upgrade {
                path: self.shown.clone().into(),
                from: version,
                to: SCHEMA_VERSION,
                source: one_line(&e),
            }),
            Err(f) => Err(self.fail("upgrading the schema", f)),
        }
    }

    fn foreign(&self) -> StoreError {
        StoreError::NotKvmroll {
            path: self.shown.clone().into(),
        }
    }

    /// A stamped database whose schema version no kvmroll writes.
    fn unknown(&self, found: i64) -> StoreError {
        StoreError::UnknownSchema {
            path: self.shown.clone().into(),
            found,
        }
    }

    fn too_new(&self, found: i64) -> StoreError {
        StoreError::NewerSchema {
            path: self.shown.clone().into(),
            found,
            supported: SCHEMA_VERSION,
        }
    }

    /// Creates the role VM containers connect as, if it does not exist,
    /// sets its password if one is given, and grants it only what
    /// containers need: read the cluster, record events, and the writes of
    /// allocate and shutdown plugins (a VM's placement, resources, disks,
    /// NICs and attributes; see `schema::grants`). Run by `kvmroll db init`
    /// as the database's owner; running it again is harmless.
    pub fn grant_container_role(
        &mut self,
        role: &str,
        password: Option<&str>,
    ) -> Result<(), StoreError> {
        if self.mode == OpenMode::ReadOnly {
            return Err(StoreError::ReadOnly);
        }
        schema::grant_container_role(self.client.get_mut(), role, password)
            .map_err(|f| self.fail("granting the containers' role", f))
    }

    /// The default name of the containers' role.
    pub const CONTAINER_ROLE: &'static str = "kvmroll_container";

    /// The failure `f` of `what`, as users are told it.
    fn fail(&self, what: &'static str, f: Fail) -> StoreError {
        let e = match f {
            Fail::Pg(e) | Fail::Step { error: e, .. } => e,
            Fail::Refused(e) => return StoreError::Refused(e),
            Fail::Corrupt(what) => {
                return StoreError::Corrupt {
                    path: self.shown.clone().into(),
                    what,
                }
            }
        };
        // The server went away after the connection was made.
        if e.as_db_error().is_none() && (e.is_closed() || io_failed(&e)) {
            return StoreError::Unreachable {
                host: self.host.clone(),
                port: self.port,
                source: one_line(&e),
            };
        }
        if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) {
            return StoreError::Busy {
                path: self.shown.clone().into(),
                waited: self.wait,
                what,
            };
        }
        backend(&self.shown, what, &e)
    }

    /// Runs `work` in a transaction of its making, again while it fails
    /// with a serialization failure or a deadlock, at most [`TRIES`] times.
    fn retrying<T>(
        &self,
        what: &'static str,
        mut work: impl FnMut(&mut Client) -> Result<T, Fail>,
    ) -> Result<T, StoreError> {
        let mut client = self.client.borrow_mut();
        for attempt in 1..=TRIES {
            match work(&mut client) {
                Err(Fail::Pg(e)) if retryable(&e) => {
                    log::debug!("{}: {what}: {} (try {attempt})", self.shown, one_line(&e));
                    std::thread::sleep(backoff(attempt));
                }
                other => return other.map_err(|f| self.fail(what, f)),
            }
        }
        Err(StoreError::Contention {
            location: self.shown.clone(),
            what,
            tries: TRIES,
        })
    }

    /// A read in one consistent snapshot.
    fn reading<T>(
        &self,
        what: &'static str,
        mut work: impl FnMut(&mut postgres::Transaction<'_>) -> Result<T, Fail>,
    ) -> Result<T, StoreError> {
        self.retrying(what, |client| {
            let mut tx = client
                .build_transaction()
                .isolation_level(IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()?;
            let out = work(&mut tx)?;
            tx.commit()?;
            Ok(out)
        })
    }

    /// A write in one transaction, refused on a read-only open.
    fn writing<T>(
        &self,
        what: &'static str,
        mut work: impl FnMut(&mut postgres::Transaction<'_>) -> Result<T, Fail>,
    ) -> Result<T, StoreError> {
        if self.mode == OpenMode::ReadOnly {
            return Err(StoreError::ReadOnly);
        }
        self.retrying(what, |client| {
            let mut tx = client
                .build_transaction()
                .isolation_level(IsolationLevel::ReadCommitted)
                .start()?;
            let out = work(&mut tx)?;
            tx.commit()?;
            Ok(out)
        })
    }
}

fn retryable(e: &postgres::Error) -> bool {
    matches!(
        e.code(),
        Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED
    )
}

fn io_failed(e: &postgres::Error) -> bool {
    std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>())
}

/// A pause that grows with each try, spread so that two writers that
/// collided do not collide again in step.
fn backoff(attempt: u32) -> Duration {
    let base = 5u64 << attempt.min(6);
    let spread = u64::from(std::process::id() ^ crate::sys::now_ms() as u32) % base;
    Duration::from_millis(base + spread)
}

/// A u32 column (BIGINT) read back; out of range is a corrupt row.
fn u32_of(v: i64, what: &str) -> Result<u32, Fail> {
    u32::try_from(v).map_err(|_| Fail::Corrupt(format!("{what} {v}")))
}

fn load(tx: &mut impl GenericClient) -> Result<Cluster, Fail> {
    let corrupt = Fail::Corrupt;
    let mut c = Cluster::default();
    for row in tx.query("SELECT name FROM appliances", &[])? {
        c.appliances.insert(row.try_get(0)?);
    }
    for row in tx.query(
        "SELECT h.name, a.name, h.rack, h.rank, h.cpus, h.os, h.boot_action,
                h.install_action, h.run_action
         FROM hosts h JOIN appliances a ON a.id = h.appliance_id",
        &[],
    )? {
        let name: String = row.try_get(0)?;
        let boot: String = row.try_get(6)?;
        let boot_action = BootAction::parse(&boot).map_err(|e| corrupt(e.to_string()))?;
        let host = Host {
            name: name.clone(),
            appliance: row.try_get(1)?,
            rack: u32_of(row.try_get(2)?, "rack")?,
            rank: u32_of(row.try_get(3)?, "rank")?,
            cpus: u32_of(row.try_get(4)?, "cpus")?,
            os: row.try_get(5)?,
            boot_action,
            install_action: row.try_get(7)?,
            run_action: row.try_get(8)?,
        };
        c.hosts.insert(name, host);
    }
    for row in tx.query("SELECT scope, target, name, value FROM attributes", &[])? {
        let (kind, target): (String, String) = (row.try_get(0)?, row.try_get(1)?);
        let scope = Scope::from_parts(&kind, &target)
            .ok_or_else(|| corrupt(format!("attribute scope {kind}:{target}")))?;
        c.attrs
            .entry(scope)
            .or_default()
            .insert(row.try_get(2)?, row.try_get(3)?);
    }
    let mut by_id = HashMap::new();
    for row in tx.query(
        "SELECT v.id, h.name, ct.name, v.memory_mib, v.vcpus, v.uuid, v.cdrom,
                v.virt_type, v.stale, v.generation
         FROM vms v JOIN hosts h ON h.id = v.host_id
         LEFT JOIN hosts ct ON ct.id = v.container_id",
        &[],
    )? {
        let vm = Vm {
            id: row.try_get(0)?,
            name: row.try_get(1)?,
            container: row.try_get(2)?,
            memory_mib: u32_of(row.try_get(3)?, "memory")?,
            vcpus: u32_of(row.try_get(4)?, "vcpus")?,
            uuid: row.try_get(5)?,
            cdrom: row.try_get(6)?,
            virt_type: row.try_get(7)?,
            stale: row.try_get(8)?,
            generation: row.try_get::<_, i64>(9)?.max(0) as u64,
            disks: Vec::new(),
            nics: Vec::new(),
        };
        by_id.insert(vm.id, vm.name.clone());
        c.vms.insert(vm.name.clone(), vm);
    }
    for row in tx.query(
        "SELECT vm_id, type, path, dev, bus, size_gib FROM vm_disks ORDER BY vm_id, position",
        &[],
    )? {
        let (vm_id, kind): (i64, String) = (row.try_get(0)?, row.try_get(1)?);
        let kind = DiskKind::parse(&kind).ok_or_else(|| corrupt(format!("disk type {kind}")))?;
        let size_gib = match row.try_get::<_, Option<i64>>(5)? {
            Some(s) => Some(u32_of(s, "disk size")?),
            None => None,
        };
        let disk = Disk {
            kind,
            path: row.try_get(2)?,
            dev: row.try_get(3)?,
            bus: row.try_get(4)?,
            size_gib,
        };
        vm_entry(&mut c, &by_id, vm_id, "disk")?.disks.push(disk);
    }
    for row in tx.query(
        "SELECT vm_id, kind, source, mac, vlan, model FROM vm_nics ORDER BY vm_id, position",
        &[],
    )? {
        let (vm_id, kind): (i64, String) = (row.try_get(0)?, row.try_get(1)?);
        let kind = match kind.as_str() {
            "bridge" => NicKind::Bridge,
            "direct" => NicKind::Direct,
            other => return Err(corrupt(format!("NIC kind {other}"))),
        };
        let mac: String = row.try_get(3)?;
        let vlan = match row.try_get::<_, Option<i32>>(4)? {
            Some(v) => Some(u16::try_from(v).map_err(|_| corrupt(format!("VLAN {v}")))?),
            None => None,
        };
        let nic = Nic {
            kind,
            source: row.try_get(2)?,
            mac: Mac::parse(&mac).map_err(|e| corrupt(e.to_string()))?,
            vlan,
            model: row.try_get(5)?,
        };
        vm_entry(&mut c, &by_id, vm_id, "NIC")?.nics.push(nic);
    }
    Ok(c)
}

/// The row id of a VM, by its name.
fn vm_id(tx: &mut impl GenericClient, vm: &str) -> Result<Option<i64>, postgres::Error> {
    tx.query_opt(
        "SELECT v.id FROM vms v JOIN hosts h ON h.id = v.host_id WHERE h.name = $1",
        &[&vm],
    )?
    .map(|r| r.try_get(0))
    .transpose()
}

fn vm_entry<'c>(
    c: &'c mut Cluster,
    by_id: &HashMap<i64, String>,
    id: i64,
    what: &str,
) -> Result<&'c mut Vm, Fail> {
    by_id
        .get(&id)
        .and_then(|n| c.vms.get_mut(n))
        .ok_or_else(|| Fail::Corrupt(format!("{what} of unknown VM {id}")))
}

fn put_attr(
    tx: &mut impl GenericClient,
    scope: &Scope,
    name: &str,
    value: &str,
) -> Result<(), postgres::Error> {
    tx.execute(
        "INSERT INTO attributes (scope, target, name, value) VALUES ($1, $2, $3, $4)
         ON CONFLICT (scope, target, name) DO UPDATE SET value = excluded.value",
        &[&scope.kind(), &scope.target(), &name, &value],
    )
    .map(|_| ())
}

fn put_host(tx: &mut impl GenericClient, h: &Host, insert: bool) -> Result<(), postgres::Error> {
    let sql = if insert {
        "INSERT INTO hosts (name, appliance_id, rack, rank, cpus, os, boot_action, install_action, run_action)
         VALUES ($1, (SELECT id FROM appliances WHERE name = $2), $3, $4, $5, $6, $7, $8, $9)"
    } else {
        "UPDATE hosts SET appliance_id = (SELECT id FROM appliances WHERE name = $2), rack = $3,
             rank = $4, cpus = $5, os = $6, boot_action = $7, install_action = $8, run_action = $9
         WHERE name = $1"
    };
    tx.execute(
        sql,
        &[
            &h.name,
            &h.appliance,
            &i64::from(h.rack),
            &i64::from(h.rank),
            &i64::from(h.cpus),
            &h.os,
            &h.boot_action.as_str(),
            &h.install_action,
            &h.run_action,
        ],
    )
    .map(|_| ())
}

/// A generation as PostgreSQL keeps it (BIGINT).
fn generation(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Appends events, each with its origin (`None` for events recorded at once,
/// which have none); an origin the table already has is skipped (NULLs never
/// conflict). Returns how many rows were added.
fn insert_events<'a>(
    tx: &mut impl GenericClient,
    events: impl Iterator<Item = (&'a Event, Option<&'a str>)>,
) -> Result<usize, Fail> {
    let insert = tx.prepare(
        "INSERT INTO events (time_ms, vm, stage, op, subop, plugin, outcome, status,
                             duration_ms, message, container, origin)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
         ON CONFLICT (origin) DO NOTHING",
    )?;
    let mut added = 0;
    for (e, origin) in events {
        added += tx.execute(
            &insert,
            &[
                &e.time_ms,
                &e.vm,
                &e.stage,
                &e.op,
                &e.subop,
                &e.plugin,
                &e.outcome.as_str(),
                &e.status,
                &i64::try_from(e.duration_ms).unwrap_or(i64::MAX),
                &e.message,
                &e.container,
                &origin,
            ],
        )?;
    }
    Ok(added as usize)
}

fn put_vm(tx: &mut impl GenericClient, vm: &Vm, insert: bool) -> Result<(), postgres::Error> {
    let host_id = "(SELECT id FROM hosts WHERE name = $2)";
    let cdrom = vm.cdrom.as_deref();
    let (memory, vcpus) = (i64::from(vm.memory_mib), i64::from(vm.vcpus));
    let container = vm.container.as_deref();
    if insert {
        tx.execute(
            &format!(
                "INSERT INTO vms (id, host_id, container_id, memory_mib, vcpus, uuid, cdrom,
                                  virt_type, stale, generation)
                 VALUES ($1, {host_id}, (SELECT id FROM hosts WHERE name = $3), $4, $5, $6, $7,
                         $8, $9, $10)"
            ),
            &[
                &vm.id,
                &vm.name,
                &container,
                &memory,
                &vcpus,
                &vm.uuid,
                &cdrom,
                &vm.virt_type,
                &vm.stale,
                &generation(vm.generation),
            ],
        )?;
    } else {
        tx.execute(
            "UPDATE vms SET container_id = (SELECT id FROM hosts WHERE name = $2),
                 memory_mib = $3, vcpus = $4, cdrom = $5, virt_type = $6, stale = $7
             WHERE id = $1",
            &[
                &vm.id,
                &container,
                &memory,
                &vcpus,
                &cdrom,
                &vm.virt_type,
                &vm.stale,
            ],
        )?;
        tx.execute("DELETE FROM vm_disks WHERE vm_id = $1", &[&vm.id])?;
        tx.execute("DELETE FROM vm_nics WHERE vm_id = $1", &[&vm.id])?;
    }
    for (i, d) in vm.disks.iter().enumerate() {
        tx.execute(
            "INSERT INTO vm_disks (vm_id, position, type, path, dev, bus, size_gib)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &vm.id,
                &(i as i32),
                &d.kind.as_str(),
                &d.path,
                &d.dev,
                &d.bus,
                &d.size_gib.map(i64::from),
            ],
        )?;
    }
    for (i, n) in vm.nics.iter().enumerate() {
        tx.execute(
            "INSERT INTO vm_nics (vm_id, position, kind, source, mac, vlan, model)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &vm.id,
                &(i as i32),
                &n.kind.as_str(),
                &n.source,
                &n.mac.as_str(),
                &n.vlan.map(i32::from),
                &n.model,
            ],
        )?;
    }
    Ok(())
}

/// Writes one planned change; values come from the planned cluster, where
/// they were normalised (as SQLite's `write`).
fn write(
    tx: &mut impl GenericClient,
    change: &Change,
    after: &Cluster,
) -> Result<(), postgres::Error> {
    match change {
        Change::AddAppliance(name) => {
            tx.execute("INSERT INTO appliances (name) VALUES ($1)", &[name])?;
        }
        Change::AddHost(h) => put_host(tx, h, true)?,
        Change::SetHost(h) => put_host(tx, h, false)?,
        Change::RemoveHost(name) => {
            tx.execute(
                "DELETE FROM attributes WHERE scope = 'host' AND target = $1",
                &[name],
            )?;
            tx.execute("DELETE FROM hosts WHERE name = $1", &[name])?;
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
                "DELETE FROM attributes WHERE scope = $1 AND target = $2 AND name = $3",
                &[&scope.kind(), &scope.target(), name],
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
                    "UPDATE hosts SET cpus = $2 WHERE name = $1",
                    &[&vm.name, &i64::from(planned.vcpus)],
                )?;
            }
            put_vm(tx, planned, insert)?;
        }
        Change::RemoveVm(name) => {
            tx.execute(
                "DELETE FROM attributes WHERE scope = 'host' AND target = $1",
                &[name],
            )?;
            tx.execute(
                "DELETE FROM vms WHERE host_id = (SELECT id FROM hosts WHERE name = $1)",
                &[name],
            )?;
            tx.execute("DELETE FROM hosts WHERE name = $1", &[name])?;
        }
    }
    Ok(())
}

/// A column's PostgreSQL type, as far as kvmroll's schema uses them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ColumnType {
    BigInt,
    Int,
    Bool,
    Text,
}

/// Each (table, column)'s type.
type ColumnTypes = HashMap<(String, String), ColumnType>;

/// Every row of every kvmroll table, read in `tx`, with each table's
/// column types (in the order of the engine's columns, before
/// [`Rows::push`] sorts them by name).
fn read_rows(tx: &mut impl GenericClient) -> Result<(Rows, ColumnTypes), Fail> {
    let mut rows = Rows::default();
    let mut types = HashMap::new();
    for table in TABLES {
        let mut columns = Vec::new();
        let mut kinds = Vec::new();
        for r in tx.query(
            "SELECT column_name::text, data_type::text FROM information_schema.columns
             WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
            &[table],
        )? {
            let (name, data_type): (String, String) = (r.try_get(0)?, r.try_get(1)?);
            let kind = match data_type.as_str() {
                "bigint" => ColumnType::BigInt,
                "integer" => ColumnType::Int,
                "boolean" => ColumnType::Bool,
                "text" => ColumnType::Text,
                other => {
                    return Err(Fail::Corrupt(format!(
                        "column {table}.{name} is of type {other}, which kvmroll never makes"
                    )))
                }
            };
            types.insert((table.to_string(), name.clone()), kind);
            columns.push(name);
            kinds.push(kind);
        }
        let list: Vec<String> = columns.iter().map(|c| format!("\"{c}\"")).collect();
        let mut cells = Vec::new();
        for r in tx.query(&format!("SELECT {} FROM \"{table}\"", list.join(", ")), &[])? {
            let row = kinds
                .iter()
                .enumerate()
                .map(|(i, kind)| {
                    Ok(match kind {
                        ColumnType::BigInt => r.try_get::<_, Option<i64>>(i)?.map(Cell::Int),
                        ColumnType::Int => r
                            .try_get::<_, Option<i32>>(i)?
                            .map(|n| Cell::Int(i64::from(n))),
                        ColumnType::Bool => r
                            .try_get::<_, Option<bool>>(i)?
                            .map(|b| Cell::Int(i64::from(b))),
                        ColumnType::Text => r.try_get::<_, Option<String>>(i)?.map(Cell::Text),
                    }
                    .unwrap_or(Cell::Null))
                })
                .collect::<Result<Vec<_>, Fail>>()?;
            cells.push(row);
        }
        rows.push(table, columns, cells);
    }
    Ok((rows, types))
}

/// A cell as a parameter of a column of type `kind`.
fn param(cell: &Cell, kind: ColumnType) -> Result<Box<dyn postgres::types::ToSql + Sync>, Fail> {
    let bad = || Fail::Corrupt(format!("the value {cell} does not fit a {kind:?} column"));
    Ok(match (cell, kind) {
        (Cell::Null, ColumnType::BigInt) => Box::new(None::<i64>),
        (Cell::Null, ColumnType::Int) => Box::new(None::<i32>),
        (Cell::Null, ColumnType::Bool) => Box::new(None::<bool>),
        (Cell::Null, ColumnType::Text) => Box::new(None::<String>),
        (Cell::Int(n), ColumnType::BigInt) => Box::new(*n),
        (Cell::Int(n), ColumnType::Int) => Box::new(i32::try_from(*n).map_err(|_| bad())?),
        (Cell::Int(0), ColumnType::Bool) => Box::new(false),
        (Cell::Int(1), ColumnType::Bool) => Box::new(true),
        (Cell::Text(t), ColumnType::Text) => Box::new(t.clone()),
        _ => return Err(bad()),
    })
}

impl Store for PgStore {
    fn snapshot(&self) -> Result<Cluster, StoreError> {
        self.reading("reading the cluster", |tx| load(tx))
    }

    fn update(
        &mut self,
        changes: &mut dyn FnMut(&Cluster) -> Result<Vec<Change>, ClusterError>,
    ) -> Result<Plan, StoreError> {
        self.writing("writing a change", |tx| {
            tx.execute(
                "SELECT pg_advisory_xact_lock($1, $2)",
                &[&LOCK_CLASS, &LOCK_WRITERS],
            )?;
            let before = load(tx)?;
            let list = changes(&before).map_err(Fail::Refused)?;
            let plan = before.plan(&list).map_err(Fail::Refused)?;
            for change in &list {
                write(tx, change, &plan.after)?;
            }
            for (vm, n) in plan.generations() {
                tx.execute(
                    "UPDATE vms SET generation = $2
                     WHERE host_id = (SELECT id FROM hosts WHERE name = $1)",
                    &[&vm, &generation(n)],
                )?;
            }
            Ok(plan)
        })
    }

    fn vm_brief(&self, name: &str) -> Result<Option<VmBrief>, StoreError> {
        self.reading("looking up a VM", |tx| {
            let Some(row) = tx.query_opt(
                "SELECT h.os, a.name, h.rack, v.uuid, ct.name, v.generation
                 FROM vms v JOIN hosts h ON h.id = v.host_id
                 JOIN appliances a ON a.id = h.appliance_id
                 LEFT JOIN hosts ct ON ct.id = v.container_id
                 WHERE h.name = $1",
                &[&name],
            )?
            else {
                return Ok(None);
            };
            let (os, appliance, rack): (String, String, i64) =
                (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
            // Lowest precedence first, so that later ones win in the map.
            let rows = tx.query(
                "SELECT name, value FROM attributes
                 WHERE scope = 'global' OR (scope = 'os' AND target = $1)
                    OR (scope = 'appliance' AND target = $2)
                    OR (scope = 'rack' AND target = $3) OR (scope = 'host' AND target = $4)
                 ORDER BY CASE scope WHEN 'global' THEN 0 WHEN 'os' THEN 1
                                     WHEN 'appliance' THEN 2 WHEN 'rack' THEN 3 ELSE 4 END",
                &[&os, &appliance, &rack.to_string(), &name],
            )?;
            let mut attrs = std::collections::BTreeMap::new();
            for r in rows {
                attrs.insert(r.try_get(0)?, r.try_get(1)?);
            }
            Ok(Some(VmBrief {
                name: name.to_string(),
                uuid: row.try_get(3)?,
                container: row.try_get(4)?,
                generation: row.try_get::<_, i64>(5)?.max(0) as u64,
                attrs,
            }))
        })
    }

    fn vm_disks(&self, vm: &str) -> Result<Vec<VmDisk>, StoreError> {
        self.reading("reading a VM's disks", |tx| {
            let rows = tx.query(
                "SELECT d.type, d.path, d.dev, d.bus, d.size_gib, g.path IS NOT NULL
                 FROM vm_disks d JOIN vms v ON v.id = d.vm_id JOIN hosts h ON h.id = v.host_id
                 LEFT JOIN disk_grows g ON g.vm_id = d.vm_id AND g.path = d.path
                 WHERE h.name = $1 ORDER BY d.position",
                &[&vm],
            )?;
            rows.iter()
                .map(|r| {
                    let kind: String = r.try_get(0)?;
                    let size_gib = match r.try_get::<_, Option<i64>>(4)? {
                        Some(s) => Some(u32_of(s, "disk size")?),
                        None => None,
                    };
                    Ok(VmDisk {
                        disk: Disk {
                            kind: DiskKind::parse(&kind)
                                .ok_or_else(|| Fail::Corrupt(format!("disk type {kind}")))?,
                            path: r.try_get(1)?,
                            dev: r.try_get(2)?,
                            bus: r.try_get(3)?,
                            size_gib,
                        },
                        grow: r.try_get(5)?,
                    })
                })
                .collect()
        })
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
        let now = crate::now_ms();
        self.writing("recording disk work", |tx| {
            let Some(id) = vm_id(tx, vm)? else {
                return Ok(());
            };
            for path in made {
                tx.execute(
                    "INSERT INTO made_images (vm_id, container, path, time_ms)
                     VALUES ($1, $2, $3, $4)
                     ON CONFLICT (container, path)
                     DO UPDATE SET vm_id = excluded.vm_id, time_ms = excluded.time_ms",
                    &[&id, &container, path, &now],
                )?;
            }
            for path in grown {
                tx.execute(
                    "DELETE FROM disk_grows WHERE vm_id = $1 AND path = $2",
                    &[&id, path],
                )?;
            }
            Ok(())
        })
    }

    fn made_images(&self, vm: &str) -> Result<Vec<MadeImage>, StoreError> {
        self.reading("reading the images made for a VM", |tx| {
            let rows = tx.query(
                "SELECT m.container, m.path, m.time_ms FROM made_images m
                 JOIN vms v ON v.id = m.vm_id JOIN hosts h ON h.id = v.host_id
                 WHERE h.name = $1 ORDER BY m.time_ms, m.path",
                &[&vm],
            )?;
            rows.iter()
                .map(|r| {
                    Ok(MadeImage {
                        container: r.try_get(0)?,
                        path: r.try_get(1)?,
                        time_ms: r.try_get(2)?,
                    })
                })
                .collect()
        })
    }

    fn grow_disk(&mut self, vm: &str, dev: &str, size_gib: u32) -> Result<Disk, StoreError> {
        self.writing("growing a disk", |tx| {
            // A read, a check and a write of vm_disks, which `update`
            // rewrites: writers take turns.
            tx.execute(
                "SELECT pg_advisory_xact_lock($1, $2)",
                &[&LOCK_CLASS, &LOCK_WRITERS],
            )?;
            let id = vm_id(tx, vm)?
                .ok_or_else(|| Fail::Refused(ClusterError::UnknownVm(vm.to_string())))?;
            let Some(row) = tx.query_opt(
                "SELECT type, path, bus, size_gib FROM vm_disks WHERE vm_id = $1 AND dev = $2",
                &[&id, &dev],
            )?
            else {
                return Err(Fail::Refused(ClusterError::UnknownDisk {
                    vm: vm.to_string(),
                    dev: dev.to_string(),
                }));
            };
            let kind: String = row.try_get(0)?;
            let kind =
                DiskKind::parse(&kind).ok_or_else(|| Fail::Corrupt(format!("disk type {kind}")))?;
            let size = match row.try_get::<_, Option<i64>>(3)? {
                Some(s) => Some(u32_of(s, "disk size")?),
                None => None,
            };
            if let Some(from) = size.filter(|from| *from > size_gib) {
                return Err(Fail::Refused(ClusterError::DiskShrink {
                    vm: vm.to_string(),
                    dev: dev.to_string(),
                    from,
                    to: size_gib,
                }));
            }
            let path: String = row.try_get(1)?;
            tx.execute(
                "UPDATE vm_disks SET size_gib = $3 WHERE vm_id = $1 AND dev = $2",
                &[&id, &dev, &i64::from(size_gib)],
            )?;
            // The size is in the VM's definition (its kvmroll metadata).
            if size != Some(size_gib) {
                tx.execute(
                    "UPDATE vms SET generation = generation + 1 WHERE id = $1",
                    &[&id],
                )?;
            }
            tx.execute(
                "INSERT INTO disk_grows (vm_id, path) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[&id, &path],
            )?;
            Ok(Disk {
                kind,
                path,
                dev: dev.to_string(),
                bus: row.try_get(2)?,
                size_gib: size,
            })
        })
    }

    fn record_events(&mut self, events: &[Event]) -> Result<(), StoreError> {
        self.writing("recording events", |tx| {
            insert_events(tx, events.iter().map(|e| (e, None)))?;
            Ok(())
        })
    }

    fn record_spooled(&mut self, events: &[Spooled]) -> Result<usize, StoreError> {
        self.writing("recording spooled events", |tx| {
            insert_events(
                tx,
                events.iter().map(|s| (&s.event, Some(s.origin.as_str()))),
            )
        })
    }

    fn events(&self, filter: &EventFilter) -> Result<Vec<Event>, StoreError> {
        let limit = filter.limit.map(i64::from);
        self.reading("reading events", |tx| {
            let rows = tx.query(
                "SELECT * FROM (SELECT id, time_ms, vm, stage, op, subop, plugin, outcome,
                                       status, duration_ms, message, container
                                FROM events WHERE ($1::text IS NULL OR vm = $1::text)
                                    AND ($3::text IS NULL OR container = $3::text)
                                ORDER BY id DESC LIMIT $2) newest
                 ORDER BY id",
                &[&filter.vm, &limit, &filter.container],
            )?;
            rows.iter()
                .map(|r| {
                    let outcome: String = r.try_get(7)?;
                    Ok(Event {
                        id: r.try_get(0)?,
                        time_ms: r.try_get(1)?,
                        vm: r.try_get(2)?,
                        stage: r.try_get(3)?,
                        op: r.try_get(4)?,
                        subop: r.try_get(5)?,
                        plugin: r.try_get(6)?,
                        outcome: Outcome::parse(&outcome)
                            .ok_or_else(|| Fail::Corrupt(format!("event outcome {outcome}")))?,
                        status: r.try_get(8)?,
                        duration_ms: r.try_get::<_, i64>(9)?.max(0) as u64,
                        message: r.try_get(10)?,
                        container: r.try_get(11)?,
                    })
                })
                .collect()
        })
    }

    fn status(&self) -> Result<StoreStatus, StoreError> {
        self.reading("counting its rows", |tx| {
            let row = tx.query_one(
                "SELECT (SELECT value FROM kvmroll_meta WHERE key = 'schema_version'),
                        (SELECT count(*) FROM hosts WHERE id NOT IN (SELECT host_id FROM vms)),
                        (SELECT count(*) FROM vms), (SELECT count(*) FROM events)",
                &[],
            )?;
            let version: String = row.try_get(0)?;
            let count =
                |i: usize| -> Result<u64, Fail> { Ok(row.try_get::<_, i64>(i)?.max(0) as u64) };
            Ok(StoreStatus {
                engine: "postgresql",
                location: self.shown.clone(),
                schema_version: version
                    .parse()
                    .map_err(|_| Fail::Corrupt(format!("schema version {version}")))?,
                hosts: count(1)?,
                vms: count(2)?,
                events: count(3)?,
            })
        })
    }

    fn rows(&self) -> Result<Rows, StoreError> {
        self.reading("reading every row", |tx| Ok(read_rows(tx)?.0))
    }

    fn fill(&mut self, rows: &Rows) -> Result<(), StoreError> {
        let location = self.shown.clone();
        let mut refusal = None;
        let filled = self.writing("copying rows in", |tx| {
            tx.execute(
                "SELECT pg_advisory_xact_lock($1, $2)",
                &[&LOCK_CLASS, &LOCK_WRITERS],
            )?;
            let (here, types) = read_rows(tx)?;
            if let Some(holds) = here.occupied() {
                refusal = Some(StoreError::NotEmpty {
                    location: location.clone(),
                    holds,
                });
                return Ok(false);
            }
            if let Err(e) = rows.check_columns(&here, &location) {
                refusal = Some(e);
                return Ok(false);
            }
            // The seed goes: the source's appliances and attributes replace it.
            tx.batch_execute("DELETE FROM attributes; DELETE FROM appliances;")?;
            for table in &rows.tables {
                let kinds: Vec<ColumnType> = table
                    .columns
                    .iter()
                    .map(|c| types[&(table.name.clone(), c.clone())])
                    .collect();
                let list: Vec<String> = table.columns.iter().map(|c| format!("\"{c}\"")).collect();
                let marks: Vec<String> = (1..=list.len()).map(|i| format!("${i}")).collect();
                let insert = tx.prepare(&format!(
                    "INSERT INTO \"{}\" ({}) VALUES ({})",
                    table.name,
                    list.join(", "),
                    marks.join(", ")
                ))?;
                for row in &table.rows {
                    let params = row
                        .iter()
                        .zip(&kinds)
                        .map(|(cell, kind)| param(cell, *kind))
                        .collect::<Result<Vec<_>, Fail>>()?;
                    let refs: Vec<&(dyn postgres::types::ToSql + Sync)> =
                        params.iter().map(|p| p.as_ref()).collect();
                    tx.execute(&insert, &refs)?;
                }
                // Ids were copied as they were: a table's sequence goes on
                // after its highest.
                if table.column("id").is_some() {
                    tx.execute(
                        &format!(
                            "SELECT setval(seq::regclass, COALESCE((SELECT max(id) FROM \"{0}\"), 0) + 1, false)
                             FROM pg_get_serial_sequence($1, 'id') AS seq WHERE seq IS NOT NULL",
                            table.name
                        ),
                        &[&table.name],
                    )?;
                }
            }
            Ok(true)
        })?;
        match (filled, refusal) {
            (false, Some(e)) => Err(e),
            _ => Ok(()),
        }
    }

    fn prune_events(
        &mut self,
        before_ms: Option<i64>,
        keep: Option<u64>,
    ) -> Result<u64, StoreError> {
        self.writing("pruning events", |tx| {
            let mut gone = 0;
            if let Some(before) = before_ms {
                gone += tx.execute("DELETE FROM events WHERE time_ms < $1", &[&before])?;
            }
            if let Some(keep) = keep {
                let keep = i64::try_from(keep).unwrap_or(i64::MAX);
                gone += tx.execute(
                    "DELETE FROM events WHERE id <= (SELECT id FROM events ORDER BY id DESC
                                                     LIMIT 1 OFFSET $1)",
                    &[&keep],
                )?;
            }
            Ok(gone)
        })
    }
}
