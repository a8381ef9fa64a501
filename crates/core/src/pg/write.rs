//! Writing to a PostgreSQL database: a planned change's rows, and events.

use super::*;

/// The row id of a VM, by its name.
pub(super) fn vm_id(tx: &mut impl GenericClient, vm: &str) -> Result<Option<i64>, postgres::Error> {
    tx.query_opt(
        "SELECT v.id FROM vms v JOIN hosts h ON h.id = v.host_id WHERE h.name = $1",
        &[&vm],
    )?
    .map(|r| r.try_get(0))
    .transpose()
}

pub(super) fn vm_entry<'c>(
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

pub(super) fn put_attr(
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
pub(super) fn generation(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Appends events, each with its origin (`None` for events recorded at once,
/// which have none); an origin the table already has is skipped (NULLs never
/// conflict). Returns how many rows were added.
pub(super) fn insert_events<'a>(
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
pub(super) fn write(
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
