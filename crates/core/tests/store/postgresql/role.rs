//! The containers' role: what a container's hook and plugins may read and
//! write, and what they are refused.

use super::*;

/// What containers may not do, each refused in one line, nothing written.
fn refuses_what_containers_may_not_do(ct: &mut PgStore) {
    let refused: Vec<(&str, Change)> = vec![
        (
            "a global attribute",
            Change::SetAttr {
                scope: Scope::Global,
                name: "kvm_reinstall_command".into(),
                value: "rm -rf /".into(),
            },
        ),
        (
            "a container's attribute",
            Change::SetAttr {
                scope: Scope::Host("a".into()),
                name: "x".into(),
                value: "y".into(),
            },
        ),
        ("a new host", Change::AddHost(Host::new("h", "compute"))),
        ("a new VM", Change::AddVm(vm("w", "a"))),
        ("a removed VM", Change::RemoveVm("v".into())),
    ];
    for (what, change) in refused {
        let err = ct.update(&mut |_| Ok(vec![change.clone()])).unwrap_err();
        let line = one_line(&err);
        assert!(matches!(err, StoreError::Sql { .. }), "{what}: {line}");
        assert!(
            line.contains("permission denied") || line.contains("row-level security"),
            "{what}: {line}"
        );
        assert!(
            !line.contains("INSERT") && !line.contains("UPDATE"),
            "SQL in {line}"
        );
    }
}

#[test]
fn the_containers_role_reads_records_and_moves_vms_only() {
    let Some(db) = TestDb::create("role") else {
        return;
    };
    let mut admin_store = open(&db.location, OpenMode::Create).unwrap();
    admin_store
        .update(&mut |_| {
            Ok(vec![
                Change::AddHost(Host::new("a", "vm-container")),
                Change::AddHost(Host::new("b", "vm-container")),
                Change::AddVm(vm("v", "a")),
            ])
        })
        .unwrap();
    let role = format!("kvmroll_ct_{}", std::process::id());
    admin_store
        .grant_container_role(&role, Some("ct-secret"))
        .unwrap();
    // Again: harmless.
    admin_store.grant_container_role(&role, None).unwrap();
    let loc = db.as_user(&role, Some("ct-secret"));
    let mut ct = open(&loc, OpenMode::ReadWriteFast).unwrap_or_else(|e| panic!("{}", one_line(&e)));
    assert_eq!(
        ct.vm_brief("v").unwrap().unwrap().container.as_deref(),
        Some("a")
    );
    ct.record_events(&[event("v", 1)]).unwrap();
    // The hook records the images it made; a plugin asks a disk to grow.
    ct.record_disk_work("v", "a", &["/d/v.img".into()], &[])
        .unwrap_or_else(|e| panic!("{}", one_line(&e)));
    // An allocate plugin relocates the VM and sets one of its attributes.
    ct.update(&mut |c| {
        let mut v = c.vm("v").unwrap().clone();
        v.container = Some("b".into());
        v.disks
            .push(kvmroll_core::Disk::parse("raw:/d/x,vdb,virtio").unwrap());
        Ok(vec![
            Change::SetVm(v),
            Change::SetAttr {
                scope: Scope::Host("v".into()),
                name: "kvm_autostart".into(),
                value: "true".into(),
            },
        ])
    })
    .unwrap_or_else(|e| panic!("{}", one_line(&e)));
    ct.grow_disk("v", "vdb", 3)
        .unwrap_or_else(|e| panic!("{}", one_line(&e)));
    ct.record_disk_work("v", "b", &[], &["/d/x".into()])
        .unwrap_or_else(|e| panic!("{}", one_line(&e)));
    ct.update(&mut |_| {
        Ok(vec![Change::RemoveAttr {
            scope: Scope::Host("v".into()),
            name: "kvm_autostart".into(),
        }])
    })
    .unwrap_or_else(|e| panic!("{}", one_line(&e)));
    let after = admin_store.snapshot().unwrap();
    assert_eq!(after.vm("v").unwrap().container.as_deref(), Some("b"));
    refuses_what_containers_may_not_do(&mut ct);
    assert!(ct.prune_events(None, Some(0)).is_err());
    assert_eq!(admin_store.snapshot().unwrap(), after);
    assert_eq!(
        admin_store.events(&EventFilter::default()).unwrap().len(),
        1
    );
    // The role is the server's, not the database's: drop it here.
    drop(ct);
    let mut server = client(db.server());
    drop(admin_store);
    drop(db);
    server
        .batch_execute(&format!("DROP ROLE \"{role}\""))
        .unwrap();
}

/// Step 4 adds the VMs' generations, which every change to a VM moves on:
/// a containers' role granted before it may still move a VM (an allocate
/// plugin's write) once the administrator's upgrade ran, and records
/// spooled events once.
#[test]
fn a_containers_role_of_schema_3_moves_vms_after_step_4() {
    let Some(db) = TestDb::create("step4") else {
        return;
    };
    let mut admin_store = open(&db.location, OpenMode::Create).unwrap();
    admin_store
        .update(&mut |_| {
            Ok(vec![
                Change::AddHost(Host::new("a", "vm-container")),
                Change::AddHost(Host::new("b", "vm-container")),
                Change::AddVm(vm("v", "a")),
            ])
        })
        .unwrap();
    let role = format!("kvmroll_s4_{}", std::process::id());
    admin_store
        .grant_container_role(&role, Some("ct-secret"))
        .unwrap();
    drop(admin_store);
    // Back to schema 3, as the role was granted before step 4.
    db.admin()
        .batch_execute(
            "DROP INDEX events_origin;
             ALTER TABLE events DROP COLUMN origin, DROP COLUMN container;
             ALTER TABLE vms DROP COLUMN generation;
             UPDATE kvmroll_meta SET value = '3' WHERE key = 'schema_version'",
        )
        .unwrap();
    open(&db.location, OpenMode::ReadWrite).unwrap();
    let loc = db.as_user(&role, Some("ct-secret"));
    let mut ct = open(&loc, OpenMode::ReadWriteFast).unwrap_or_else(|e| panic!("{}", one_line(&e)));
    let before = ct.vm_brief("v").unwrap().unwrap().generation;
    ct.update(&mut |c| {
        let mut v = c.vm("v").unwrap().clone();
        v.container = Some("b".into());
        Ok(vec![Change::SetVm(v)])
    })
    .unwrap_or_else(|e| panic!("{}", one_line(&e)));
    assert_eq!(ct.vm_brief("v").unwrap().unwrap().generation, before + 1);
    let spooled = [kvmroll_core::spool::Spooled {
        origin: "a/1.events#0".into(),
        event: event("v", 1),
    }];
    assert_eq!(ct.record_spooled(&spooled).unwrap(), 1);
    assert_eq!(ct.record_spooled(&spooled).unwrap(), 0);
}
