//! Reading a SQLite database: the whole cluster in one transaction, and
//! every row of every table for `kvmroll db copy`.

use super::fault::sql;
use super::*;
use std::collections::HashMap;

impl SqliteStore {
    /// The whole cluster, read in `tx`: one query per table.
    pub(super) fn load(&self, tx: &Transaction<'_>) -> Result<Cluster, StoreError> {
        let p = &self.path;
        let q = |e| sql(p, "reading the cluster", e);
        let mut c = Cluster::default();
        let mut st = tx.prepare("SELECT name FROM appliances").map_err(q)?;
        for name in st.query_map([], |r| r.get::<_, String>(0)).map_err(q)? {
            c.appliances.insert(name.map_err(q)?);
        }
        load_hosts(tx, p, &mut c)?;
        load_attrs(tx, p, &mut c)?;
        let by_id = load_vms(tx, p, &mut c)?;
        load_disks(tx, p, &mut c, &by_id)?;
        load_nics(tx, p, &mut c, &by_id)?;
        Ok(c)
    }
}

/// The hosts, each with its appliance.
fn load_hosts(tx: &Transaction<'_>, path: &Path, c: &mut Cluster) -> Result<(), StoreError> {
    let q = |e| sql(path, "reading the cluster", e);
    let corrupt = |what: String| StoreError::Corrupt {
        path: path.to_path_buf(),
        what,
    };
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
    Ok(())
}

/// The attributes, by scope.
fn load_attrs(tx: &Transaction<'_>, path: &Path, c: &mut Cluster) -> Result<(), StoreError> {
    let q = |e| sql(path, "reading the cluster", e);
    let corrupt = |what: String| StoreError::Corrupt {
        path: path.to_path_buf(),
        what,
    };
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
    Ok(())
}

/// The VMs, without their disks and NICs; returns their names by row id.
fn load_vms(
    tx: &Transaction<'_>,
    path: &Path,
    c: &mut Cluster,
) -> Result<HashMap<i64, String>, StoreError> {
    let q = |e| sql(path, "reading the cluster", e);
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
    let mut by_id = HashMap::new();
    for vm in rows {
        let vm = vm.map_err(q)?;
        by_id.insert(vm.id, vm.name.clone());
        c.vms.insert(vm.name.clone(), vm);
    }
    Ok(by_id)
}

/// Each VM's disks, in order.
fn load_disks(
    tx: &Transaction<'_>,
    path: &Path,
    c: &mut Cluster,
    by_id: &HashMap<i64, String>,
) -> Result<(), StoreError> {
    let q = |e| sql(path, "reading the cluster", e);
    let corrupt = |what: String| StoreError::Corrupt {
        path: path.to_path_buf(),
        what,
    };
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
        let kind = DiskKind::parse(&kind).ok_or_else(|| corrupt(format!("disk type {kind}")))?;
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
    Ok(())
}

/// Each VM's NICs, in order.
fn load_nics(
    tx: &Transaction<'_>,
    path: &Path,
    c: &mut Cluster,
    by_id: &HashMap<i64, String>,
) -> Result<(), StoreError> {
    let q = |e| sql(path, "reading the cluster", e);
    let corrupt = |what: String| StoreError::Corrupt {
        path: path.to_path_buf(),
        what,
    };
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
    Ok(())
}

/// Column names, double-quoted and joined for SQL.
pub(super) fn quoted(columns: &[String]) -> String {
    columns
        .iter()
        .map(|c| format!("\"{}\"", c.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Every row of every kvmroll table, read in `tx`.
pub(super) fn read_rows(tx: &Transaction<'_>, path: &Path) -> Result<Rows, StoreError> {
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
