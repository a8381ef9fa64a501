//! `kvmroll db copy`'s core: a whole cluster from one engine to the other
//! and back, row for row (ids included), into an empty database only, in
//! one transaction; and the list of tables it copies held to the schema.

use crate::common::{event, postgres, sqlite, vm, Engine};
use kvmroll_core::copy::{copy, Cell, TABLES};
use kvmroll_core::model::{Disk, Mac, Nic, NicKind};
use kvmroll_core::{Change, Host, OpenMode, Scope, StoreError};

/// A cluster with a row in every table: an appliance of its own,
/// attributes at every scope, hosts, VMs with disks and NICs, events, a
/// made image and a waiting grow, and a removed host (a gap in the ids).
fn fill_cluster(e: &dyn Engine) {
    let mut s = e.init();
    let set = |scope: Scope, name: &str, value: &str| Change::SetAttr {
        scope,
        name: name.into(),
        value: value.into(),
    };
    let mut v = vm("hosted-vm-0-0-0", "vm-container-0-0");
    v.disks = vec![
        Disk::parse("qcow2:/state/kvm/a.qcow2,vda,virtio,36").unwrap(),
        Disk::parse("raw:/state/kvm/b.img,vdb,virtio").unwrap(),
    ];
    v.nics.push(Nic {
        kind: NicKind::Bridge,
        source: "br0".into(),
        mac: Mac::parse("52:54:00:00:00:07").unwrap(),
        vlan: Some(4094),
        model: "virtio".into(),
    });
    v.cdrom = Some("/isos/rescue.iso".into());
    v.stale = true;
    let mut w = vm("hosted-vm-0-0-1", "vm-container-0-0");
    w.memory_mib = 3_000_000_000;
    let mut ct = Host::new("vm-container-0-0", "vm-container");
    ct.cpus = 16;
    ct.rank = 4_000_000_000;
    s.update(&mut |_| {
        Ok(vec![
            Change::AddAppliance("login".into()),
            Change::AddHost(Host::new("gone-0-0", "compute")),
            Change::AddHost(ct.clone()),
            Change::AddHost(Host::new("login-0-0", "login")),
            Change::AddVm(v.clone()),
            Change::AddVm(w.clone()),
            set(Scope::Global, "kvm_graphics", "none"),
            set(Scope::Os("linux".into()), "x", "os"),
            set(
                Scope::Appliance("hosted-vm".into()),
                "cpu_mode",
                "host-model",
            ),
            set(Scope::Rack(0), "x", "rack"),
            set(
                Scope::Host("hosted-vm-0-0-0".into()),
                "note",
                "line one\nline \"two\"",
            ),
        ])
    })
    .unwrap();
    s.update(&mut |_| Ok(vec![Change::RemoveHost("gone-0-0".into())]))
        .unwrap();
    s.record_events(&[event("hosted-vm-0-0-0", 1), event("hosted-vm-0-0-1", 2)])
        .unwrap();
    s.grow_disk("hosted-vm-0-0-0", "vdb", 4).unwrap();
    s.record_disk_work(
        "hosted-vm-0-0-0",
        "vm-container-0-0",
        &["/state/kvm/a.qcow2".into()],
        &[],
    )
    .unwrap();
}

/// Copies `from` into `to` as `kvmroll db copy` does; `to` is made first.
fn copied(from: &dyn Engine, to: &dyn Engine) -> Result<(), StoreError> {
    let source = from.open(OpenMode::ReadOnly)?;
    let mut target = to.init();
    copy(source.as_ref(), target.as_mut(), &to.location().to_string()).map(drop)
}

/// Both hold the same rows, the same cluster and the same events.
fn assert_same(a: &dyn Engine, b: &dyn Engine) {
    let (sa, sb) = (
        a.open(OpenMode::ReadOnly).unwrap(),
        b.open(OpenMode::ReadOnly).unwrap(),
    );
    let (ra, rb) = (sa.rows().unwrap(), sb.rows().unwrap());
    assert_eq!(ra.difference(&rb), None);
    assert_eq!(ra, rb);
    assert_eq!(sa.snapshot().unwrap(), sb.snapshot().unwrap());
    let all = kvmroll_core::EventFilter::default();
    assert_eq!(sa.events(&all).unwrap(), sb.events(&all).unwrap());
    let vm = "hosted-vm-0-0-0";
    assert_eq!(sa.made_images(vm).unwrap(), sb.made_images(vm).unwrap());
    assert_eq!(sa.vm_disks(vm).unwrap(), sb.vm_disks(vm).unwrap());
}

/// The copy is a cluster of its own: new rows get ids after the copied
/// ones (PostgreSQL's sequences were moved on), and the source is unchanged.
fn assert_usable(copy: &dyn Engine) {
    let mut s = copy.open(OpenMode::ReadWrite).unwrap();
    s.update(&mut |_| {
        Ok(vec![
            Change::AddHost(Host::new("compute-0-1", "compute")),
            Change::AddVm(vm("hosted-vm-0-0-2", "vm-container-0-0")),
        ])
    })
    .unwrap();
    s.record_events(&[event("hosted-vm-0-0-2", 3)]).unwrap();
    let events = s.events(&Default::default()).unwrap();
    let ids: Vec<i64> = events.iter().map(|e| e.id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    assert_eq!(events.len(), 3);
}

#[test]
fn a_cluster_copies_from_sqlite_to_sqlite_row_for_row() {
    let (a, b) = (sqlite(), sqlite());
    fill_cluster(&a);
    copied(&a, &b).unwrap();
    assert_same(&a, &b);
    let rows = b.open(OpenMode::ReadOnly).unwrap().rows().unwrap();
    for table in TABLES {
        assert!(rows.count(table) > 0, "table {table} was not exercised");
    }
    assert_usable(&b);
}

#[test]
fn a_cluster_copies_from_sqlite_to_postgresql_and_back_row_for_row() {
    let Some(pg) = postgres("copy_there") else {
        return;
    };
    let (a, back) = (sqlite(), sqlite());
    fill_cluster(&a);
    copied(&a, &pg).unwrap();
    assert_same(&a, &pg);
    copied(&pg, &back).unwrap();
    assert_same(&a, &back);
    // The copied ids are the source's: a gap where a host was removed.
    let rows = pg.open(OpenMode::ReadOnly).unwrap().rows().unwrap();
    let hosts = rows.table("hosts").unwrap();
    let id = hosts.column("id").unwrap();
    let mut ids: Vec<&Cell> = hosts.rows.iter().map(|r| &r[id]).collect();
    ids.sort();
    assert_eq!(ids.first(), Some(&&Cell::Int(2)), "{ids:?}");
    assert_usable(&pg);
    assert_usable(&back);
}

/// A target holding a cluster, or only a global attribute set by hand, is
/// refused in one line, and nothing of it changes.
fn a_target_that_is_not_empty_is_refused_untouched(from: &dyn Engine, to: &dyn Engine) {
    fill_cluster(from);
    let mut t = to.init();
    t.update(&mut |_| Ok(vec![Change::AddHost(Host::new("c", "vm-container"))]))
        .unwrap();
    let before = t.rows().unwrap();
    let err = copied(from, to).unwrap_err();
    let line = crate::common::one_line(&err);
    assert!(matches!(err, StoreError::NotEmpty { .. }), "{line}");
    assert!(line.contains("it holds 1 host"), "{line}");
    assert_eq!(t.rows().unwrap(), before);
    t.update(&mut |_| Ok(vec![Change::RemoveHost("c".into())]))
        .unwrap();
    t.update(&mut |_| {
        Ok(vec![Change::SetAttr {
            scope: Scope::Global,
            name: "x".into(),
            value: "1".into(),
        }])
    })
    .unwrap();
    let line = crate::common::one_line(&copied(from, to).unwrap_err());
    assert!(line.contains("it holds 2 attributes"), "{line}");
}

#[test]
fn a_sqlite_target_that_is_not_empty_is_refused_untouched() {
    a_target_that_is_not_empty_is_refused_untouched(&sqlite(), &sqlite());
}

#[test]
fn a_postgresql_target_that_is_not_empty_is_refused_untouched() {
    if let Some(pg) = postgres("copy_full") {
        a_target_that_is_not_empty_is_refused_untouched(&sqlite(), &pg);
    }
}

/// A row the target refuses half-way (here: a NIC's MAC the target already
/// holds is impossible, so a duplicate is forged in the source's rows)
/// rolls the whole copy back: the target stays as it was.
fn a_failed_copy_writes_nothing(to: &dyn Engine) {
    let from = sqlite();
    fill_cluster(&from);
    let mut rows = from.open(OpenMode::ReadOnly).unwrap().rows().unwrap();
    let events = rows.tables.iter_mut().find(|t| t.name == "events").unwrap();
    let dup = events.rows[0].clone();
    events.rows.push(dup);
    let mut t = to.init();
    let before = t.rows().unwrap();
    let err = t.fill(&rows).unwrap_err();
    let line = crate::common::one_line(&err);
    assert!(line.contains("copying rows in"), "{line}");
    assert_eq!(t.rows().unwrap(), before);
}

#[test]
fn a_failed_copy_into_sqlite_writes_nothing() {
    a_failed_copy_writes_nothing(&sqlite());
}

#[test]
fn a_failed_copy_into_postgresql_writes_nothing() {
    if let Some(pg) = postgres("copy_fail") {
        a_failed_copy_writes_nothing(&pg);
    }
}

/// The tables copied are every table of the schema (but PostgreSQL's
/// kvmroll_meta, which holds the schema version): a migration that adds a
/// table must add it to `TABLES`.
#[test]
fn every_table_of_the_schema_is_copied() {
    let e = sqlite();
    e.init();
    let conn = rusqlite::Connection::open(e.path()).unwrap();
    let mut st = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .unwrap();
    let mut tables: Vec<String> = st
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut listed: Vec<String> = TABLES.iter().map(|t| t.to_string()).collect();
    tables.sort();
    listed.sort();
    assert_eq!(tables, listed);
    if let Some(pg) = postgres("copy_tables") {
        pg.init();
        let mut tables: Vec<String> =
            pg.0.admin()
                .query(
                    "SELECT tablename::text FROM pg_tables WHERE schemaname = current_schema()
                 AND tablename <> 'kvmroll_meta' ORDER BY 1",
                    &[],
                )
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
        tables.sort();
        assert_eq!(tables, listed);
    }
}
