//! Reading a PostgreSQL database: the whole cluster in one transaction,
//! and every row of every table with its column types, for `kvmroll db
//! copy`.

use super::*;

/// A u32 column (BIGINT) read back; out of range is a corrupt row.
pub(super) fn u32_of(v: i64, what: &str) -> Result<u32, Fail> {
    u32::try_from(v).map_err(|_| Fail::Corrupt(format!("{what} {v}")))
}

/// The whole cluster, read in `tx`: one query per table.
pub(super) fn load(tx: &mut impl GenericClient) -> Result<Cluster, Fail> {
    let mut c = Cluster::default();
    for row in tx.query("SELECT name FROM appliances", &[])? {
        c.appliances.insert(row.try_get(0)?);
    }
    load_hosts(tx, &mut c)?;
    load_attrs(tx, &mut c)?;
    let by_id = load_vms(tx, &mut c)?;
    load_disks(tx, &mut c, &by_id)?;
    load_nics(tx, &mut c, &by_id)?;
    Ok(c)
}

/// The hosts, each with its appliance.
fn load_hosts(tx: &mut impl GenericClient, c: &mut Cluster) -> Result<(), Fail> {
    let corrupt = Fail::Corrupt;
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
    Ok(())
}

/// The attributes, by scope.
fn load_attrs(tx: &mut impl GenericClient, c: &mut Cluster) -> Result<(), Fail> {
    let corrupt = Fail::Corrupt;
    for row in tx.query("SELECT scope, target, name, value FROM attributes", &[])? {
        let (kind, target): (String, String) = (row.try_get(0)?, row.try_get(1)?);
        let scope = Scope::from_parts(&kind, &target)
            .ok_or_else(|| corrupt(format!("attribute scope {kind}:{target}")))?;
        c.attrs
            .entry(scope)
            .or_default()
            .insert(row.try_get(2)?, row.try_get(3)?);
    }
    Ok(())
}

/// The VMs, without their disks and NICs; returns their names by row id.
fn load_vms(tx: &mut impl GenericClient, c: &mut Cluster) -> Result<HashMap<i64, String>, Fail> {
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
    Ok(by_id)
}

/// Each VM's disks, in order.
fn load_disks(
    tx: &mut impl GenericClient,
    c: &mut Cluster,
    by_id: &HashMap<i64, String>,
) -> Result<(), Fail> {
    let corrupt = Fail::Corrupt;
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
        vm_entry(c, by_id, vm_id, "disk")?.disks.push(disk);
    }
    Ok(())
}

/// Each VM's NICs, in order.
fn load_nics(
    tx: &mut impl GenericClient,
    c: &mut Cluster,
    by_id: &HashMap<i64, String>,
) -> Result<(), Fail> {
    let corrupt = Fail::Corrupt;
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
        vm_entry(c, by_id, vm_id, "NIC")?.nics.push(nic);
    }
    Ok(())
}

/// A column's PostgreSQL type, as far as kvmroll's schema uses them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ColumnType {
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
pub(super) fn read_rows(tx: &mut impl GenericClient) -> Result<(Rows, ColumnTypes), Fail> {
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
pub(super) fn param(
    cell: &Cell,
    kind: ColumnType,
) -> Result<Box<dyn postgres::types::ToSql + Sync>, Fail> {
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
