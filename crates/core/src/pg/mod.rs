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
mod fail;
mod load;
mod open;
mod retry;
mod schema;
mod write;

pub use connect::{PgEnv, DEFAULT_CONNECT_TIMEOUT, DEFAULT_SOCKET_DIR};
pub use schema::SCHEMA_VERSION;

use fail::{backend, one_line, Fail, Fault};
use load::{load, param, read_rows, u32_of, ColumnType};
use write::{generation, insert_events, put_attr, vm_entry, vm_id, write};

use crate::cluster::{Change, Cluster, ClusterError};
use crate::dburl::PgLocation;
use crate::events::{Event, EventFilter, EventOutcome, Spooled};
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
                        outcome: EventOutcome::parse(&outcome)
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
