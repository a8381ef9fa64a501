//! The SQLite store: one file on the host, WAL mode so readers never wait for
//! the writer, a busy timeout and `BEGIN IMMEDIATE` writes so that many hooks
//! running at once wait their turn instead of failing with "database is
//! locked", and a schema upgraded by numbered migrations.

mod fault;
mod load;
mod open;
mod schema;
mod write;

pub use schema::SCHEMA_VERSION;

use fault::sql;
use load::{quoted, read_rows};
use write::{generation, insert_events, vm_id, write, EVENT_COLUMNS};

use crate::cluster::{Change, Cluster, ClusterError};
use crate::events::{Event, EventFilter, EventOutcome, Spooled};
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
                        outcome: EventOutcome::Ok,
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
            event.outcome = EventOutcome::parse(&outcome).ok_or_else(|| StoreError::Corrupt {
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
