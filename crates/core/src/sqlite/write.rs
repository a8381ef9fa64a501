//! Writing to a SQLite database: a planned change's rows, and events.

use super::*;

/// A generation as SQLite keeps it (a signed 64-bit integer).
pub(super) fn generation(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

pub(super) fn put_attr(
    tx: &Transaction<'_>,
    scope: &Scope,
    name: &str,
    value: &str,
) -> rusqlite::Result<()> {
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
pub(super) fn write(
    tx: &Transaction<'_>,
    change: &Change,
    after: &Cluster,
) -> rusqlite::Result<()> {
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
pub(super) fn vm_id(tx: &Transaction<'_>, vm: &str) -> rusqlite::Result<Option<i64>> {
    tx.query_row(
        "SELECT v.id FROM vms v JOIN hosts h ON h.id = v.host_id WHERE h.name = ?1",
        [vm],
        |r| r.get(0),
    )
    .optional()
}

pub(super) const EVENT_COLUMNS: &str =
    "id, time_ms, vm, stage, op, subop, plugin, outcome, status, duration_ms, message, container";

/// Appends events, each with its origin (`None` for events recorded at once,
/// which have none); an origin the table already has is skipped. Returns
/// how many rows were added.
pub(super) fn insert_events<'a>(
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
