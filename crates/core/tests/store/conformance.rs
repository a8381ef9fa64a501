//! What every engine must do, written once over `&dyn Engine` and
//! `dyn Store`, and run on SQLite and on PostgreSQL: the binaries see the
//! store only through the trait, so both engines must behave alike there.

use crate::common::{event, one_line, vm, Engine};
use kvmroll_core::events::{EventFilter, Outcome};
use kvmroll_core::model::{Disk, Mac, Nic, NicKind};
use kvmroll_core::{Change, ClusterError, Host, Init, OpenMode, Scope, Store, StoreError};

/// Each check becomes one test per engine. The PostgreSQL ones skip when no
/// test server is given (and fail under KVMROLL_E2E=1).
macro_rules! on_both_engines {
    ($($check:ident),* $(,)?) => {
        mod on_sqlite {
            $(#[test] fn $check() { super::$check(&crate::common::sqlite()) })*
        }
        mod on_postgresql {
            $(#[test] fn $check() {
                if let Some(e) = crate::common::postgres(stringify!($check)) {
                    super::$check(&e)
                }
            })*
        }
    };
}

on_both_engines!(
    a_new_database_is_seeded,
    round_trips_the_cluster,
    a_refused_change_writes_nothing,
    the_change_is_planned_over_the_cluster_as_it_stands,
    vm_brief_resolves_attributes,
    events_round_trip_filter_and_prune,
    read_only_refuses_every_write,
    only_create_makes_a_database,
    init_makes_upgrades_or_finds_current,
    status_counts_hosts_vms_and_events,
    two_writers_of_one_vm_lose_nothing,
    sixty_four_hook_events_at_once_are_all_recorded,
    disk_grows_and_made_images_round_trip_and_go_with_their_vm,
);

fn a_new_database_is_seeded(e: &dyn Engine) {
    let c = e.init().snapshot().unwrap();
    assert!(c.appliances.contains("vm-container"));
    assert!(c.appliances.contains("hosted-vm"));
    assert_eq!(
        c.attrs[&Scope::Appliance("vm-container".into())]["kvm"],
        "true"
    );
    assert!(c.hosts.is_empty() && c.vms.is_empty());
}

fn round_trips_the_cluster(e: &dyn Engine) {
    let mut s = e.init();
    let mut h = Host::new("vm-container-0-0", "vm-container");
    h.cpus = 8;
    h.rack = 3;
    h.rank = 4_000_000_000; // beyond i32: u32 columns must hold all of u32
    let mut v = vm("hosted-vm-0-0-0", "vm-container-0-0");
    v.memory_mib = 3_000_000_000;
    v.vcpus = 2;
    v.disks
        .push(Disk::parse("qcow2:/state/kvm/a.qcow2,vda,virtio,36").unwrap());
    v.disks
        .push(Disk::parse("block:/dev/sdb,vdb,virtio").unwrap());
    v.nics.push(Nic {
        kind: NicKind::Bridge,
        source: "br0".into(),
        mac: Mac::parse("52:54:00:00:00:07").unwrap(),
        vlan: Some(4094),
        model: "virtio".into(),
    });
    v.nics.push(Nic {
        kind: NicKind::Direct,
        source: "eth1".into(),
        mac: Mac::parse("52:54:00:00:00:08").unwrap(),
        vlan: None,
        model: "e1000".into(),
    });
    v.cdrom = Some("/isos/x y.iso".into());
    let plan = s
        .update(&mut |_| {
            Ok(vec![
                Change::AddHost(h.clone()),
                Change::AddVm(v.clone()),
                Change::SetAttr {
                    scope: Scope::Host("hosted-vm-0-0-0".into()),
                    name: "kvm_cpu_pinning".into(),
                    value: "&lt;cputune/&gt;".into(),
                },
                Change::SetAttr {
                    scope: Scope::Rack(3),
                    name: "note".into(),
                    value: "ünïcode ' \" \\ ;".into(),
                },
            ])
        })
        .unwrap();
    // Another connection, read-only, sees exactly what was planned.
    let c = e.open(OpenMode::ReadOnly).unwrap().snapshot().unwrap();
    assert_eq!(c, plan.after);
    assert_eq!(c, s.snapshot().unwrap());
    let got = c.vm("hosted-vm-0-0-0").unwrap();
    assert_eq!((got.memory_mib, got.vcpus), (3_000_000_000, 2));
    assert_eq!(got.disks, v.disks);
    assert_eq!(got.nics, v.nics);
    assert_eq!(got.cdrom, v.cdrom);
    assert_eq!(got.uuid, v.uuid);
    assert_eq!(c.host("vm-container-0-0").unwrap(), &h);
    assert_eq!(
        c.attr_of("hosted-vm-0-0-0", "kvm_cpu_pinning"),
        Some("<cputune/>")
    );
    assert_eq!(c.attrs[&Scope::Rack(3)]["note"], "ünïcode ' \" \\ ;");
    // And a removal round-trips too.
    s.update(&mut |_| Ok(vec![Change::RemoveVm("hosted-vm-0-0-0".into())]))
        .unwrap();
    let c = e.open(OpenMode::ReadOnly).unwrap().snapshot().unwrap();
    assert!(c.vms.is_empty());
    assert!(!c.hosts.contains_key("hosted-vm-0-0-0"));
    assert!(!c.attrs.contains_key(&Scope::Host("hosted-vm-0-0-0".into())));
}

fn a_refused_change_writes_nothing(e: &dyn Engine) {
    let mut s = e.init();
    let before = s.snapshot().unwrap();
    let err = s
        .update(&mut |_| {
            Ok(vec![
                Change::AddHost(Host::new("ok", "compute")),
                Change::AddHost(Host::new("ok", "compute")),
            ])
        })
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Refused(ClusterError::Duplicate { .. })),
        "{err:?}"
    );
    // Refused by the closure itself: nothing either.
    let err = s
        .update(&mut |_| Err(ClusterError::UnknownVm("nope".into())))
        .unwrap_err();
    assert!(matches!(
        err,
        StoreError::Refused(ClusterError::UnknownVm(_))
    ));
    assert_eq!(
        e.open(OpenMode::ReadOnly).unwrap().snapshot().unwrap(),
        before
    );
}

fn the_change_is_planned_over_the_cluster_as_it_stands(e: &dyn Engine) {
    let mut first = e.init();
    let mut second = e.open(OpenMode::ReadWrite).unwrap();
    first
        .update(&mut |_| Ok(vec![Change::AddHost(Host::new("c", "vm-container"))]))
        .unwrap();
    // The second connection's closure sees the first one's host.
    let mut seen = false;
    second
        .update(&mut |c| {
            seen = c.hosts.contains_key("c");
            Ok(vec![])
        })
        .unwrap();
    assert!(seen);
}

fn vm_brief_resolves_attributes(e: &dyn Engine) {
    let mut s = e.init();
    let mut own = Host::new("c", "vm-container");
    own.rack = 2;
    s.update(&mut |_| {
        let set = |scope: Scope, name: &str, value: &str| Change::SetAttr {
            scope,
            name: name.into(),
            value: value.into(),
        };
        Ok(vec![
            Change::AddHost(own.clone()),
            Change::AddVm(vm("v", "c")),
            Change::AddVm(vm("unplaced", "c")),
            set(Scope::Global, "x", "global"),
            set(Scope::Global, "only_global", "g"),
            set(Scope::Os("linux".into()), "x", "os"),
            set(Scope::Appliance("hosted-vm".into()), "x", "appliance"),
            set(Scope::Rack(0), "rack", "zero"),
            set(Scope::Rack(2), "rack", "two"),
            set(Scope::Host("v".into()), "y", "host"),
            set(Scope::Appliance("hosted-vm".into()), "y", "appliance"),
        ])
    })
    .unwrap();
    s.update(&mut |c| {
        let mut u = c.vm("unplaced").unwrap().clone();
        u.container = None;
        Ok(vec![Change::SetVm(u)])
    })
    .unwrap();
    let ro = e.open(OpenMode::ReadOnly).unwrap();
    let b = ro.vm_brief("v").unwrap().unwrap();
    assert_eq!(b.name, "v");
    assert_eq!(b.uuid, vm("v", "c").uuid);
    assert_eq!(b.container.as_deref(), Some("c"));
    assert_eq!(b.attrs["x"], "appliance");
    assert_eq!(b.attrs["y"], "host");
    assert_eq!(b.attrs["only_global"], "g");
    // The VM's own rack (0), not its container's.
    assert_eq!(b.attrs["rack"], "zero");
    assert_eq!(ro.vm_brief("unplaced").unwrap().unwrap().container, None);
    // A host that is not a VM, and a name nobody knows.
    assert_eq!(ro.vm_brief("c").unwrap(), None);
    assert_eq!(ro.vm_brief("nobody").unwrap(), None);
}

fn events_round_trip_filter_and_prune(e: &dyn Engine) {
    let mut s = e.init();
    let mut hook = e.open(OpenMode::ReadWriteFast).unwrap();
    let mut odd = event("w", 2);
    odd.plugin = None;
    odd.outcome = Outcome::PassThrough;
    odd.status = None;
    odd.message = String::new();
    hook.record_events(&[event("v", 1), odd.clone(), event("v", 3)])
        .unwrap();
    s.record_events(&(4..=10).map(|t| event("v", t)).collect::<Vec<_>>())
        .unwrap();
    let all = s.events(&EventFilter::default()).unwrap();
    assert_eq!(
        all.iter().map(|e| e.time_ms).collect::<Vec<_>>(),
        (1..=10).collect::<Vec<_>>()
    );
    assert!(all.windows(2).all(|w| w[0].id < w[1].id));
    let mut want = odd;
    want.id = all[1].id;
    assert_eq!(all[1], want);
    let mut first = event("v", 1);
    first.id = all[0].id;
    assert_eq!(all[0], first);
    // The newest N of one VM, oldest first.
    let newest = s
        .events(&EventFilter {
            vm: Some("v".into()),
            limit: Some(2),
        })
        .unwrap();
    assert_eq!(
        newest.iter().map(|e| e.time_ms).collect::<Vec<_>>(),
        vec![9, 10]
    );
    let w = s
        .events(&EventFilter {
            vm: Some("w".into()),
            limit: None,
        })
        .unwrap();
    assert_eq!(w.len(), 1);
    // Pruning: older than a time, then all but the newest N.
    let times = |s: &dyn kvmroll_core::Store| -> Vec<i64> {
        s.events(&EventFilter::default())
            .unwrap()
            .iter()
            .map(|e| e.time_ms)
            .collect()
    };
    assert_eq!(s.prune_events(Some(4), None).unwrap(), 3);
    assert_eq!(times(&*s), (4..=10).collect::<Vec<_>>());
    assert_eq!(s.prune_events(None, Some(2)).unwrap(), 5);
    assert_eq!(times(&*s), vec![9, 10]);
    assert_eq!(s.prune_events(Some(0), Some(100)).unwrap(), 0);
    assert_eq!(times(&*e.open(OpenMode::ReadOnly).unwrap()), vec![9, 10]);
}

fn read_only_refuses_every_write(e: &dyn Engine) {
    let mut rw = e.init();
    rw.record_events(&[event("v", 1)]).unwrap();
    let before = rw.snapshot().unwrap();
    let mut ro = e.open(OpenMode::ReadOnly).unwrap();
    let refused = |r: Result<(), StoreError>| {
        let err = r.unwrap_err();
        assert!(matches!(err, StoreError::ReadOnly), "{err:?}");
        assert!(one_line(&err).contains("read-only"));
    };
    refused(
        ro.update(&mut |_| Ok(vec![Change::AddHost(Host::new("h", "compute"))]))
            .map(drop),
    );
    refused(ro.record_events(&[event("v", 2)]));
    refused(ro.prune_events(None, Some(0)).map(drop));
    assert_eq!(rw.snapshot().unwrap(), before);
    assert_eq!(rw.events(&EventFilter::default()).unwrap().len(), 1);
}

fn only_create_makes_a_database(e: &dyn Engine) {
    for mode in [
        OpenMode::ReadOnly,
        OpenMode::ReadWriteFast,
        OpenMode::ReadWrite,
    ] {
        let Err(err) = e.open(mode) else {
            panic!("{mode:?} opened a database nobody made")
        };
        one_line(&err);
        assert!(!e.made(), "{mode:?} made a database");
    }
    // SQLite makes its file at the first write, PostgreSQL its tables at
    // once: either way, a database from then on.
    e.open(OpenMode::Create)
        .unwrap()
        .record_events(&[event("v", 1)])
        .unwrap();
    assert!(e.made());
    e.open(OpenMode::ReadWriteFast).unwrap();
    e.open(OpenMode::ReadOnly).unwrap();
}

/// Two writers, each adding to the same VM from what its closure is given:
/// one adds disks, the other NICs. A writer that wrote over a cluster read
/// before the other's commit would drop the other's additions.
fn two_writers_of_one_vm_lose_nothing(e: &dyn Engine) {
    const ROUNDS: usize = 12;
    e.init()
        .update(&mut |_| {
            Ok(vec![
                Change::AddHost(Host::new("c", "vm-container")),
                Change::AddVm(vm("v", "c")),
            ])
        })
        .unwrap();
    let barrier = std::sync::Barrier::new(2);
    std::thread::scope(|t| {
        for writer in 0..2 {
            let barrier = &barrier;
            t.spawn(move || {
                let opened = e.open(OpenMode::ReadWrite);
                barrier.wait();
                let mut s = opened.unwrap_or_else(|err| panic!("{}", one_line(&err)));
                for i in 0..ROUNDS {
                    s.update(&mut |c| {
                        let mut v = c.vm("v").unwrap().clone();
                        if writer == 0 {
                            let dev = format!("vd{}", (b'b' + i as u8) as char);
                            v.disks
                                .push(Disk::parse(&format!("raw:/d/{dev},{dev},virtio")).unwrap());
                        } else {
                            v.nics.push(Nic {
                                kind: NicKind::Bridge,
                                source: "br0".into(),
                                mac: Mac::parse(&format!("52:54:00:00:01:{i:02x}")).unwrap(),
                                vlan: None,
                                model: "virtio".into(),
                            });
                        }
                        Ok(vec![Change::SetVm(v)])
                    })
                    .unwrap();
                }
            });
        }
    });
    let c = e.open(OpenMode::ReadOnly).unwrap().snapshot().unwrap();
    let v = c.vm("v").unwrap();
    assert_eq!(v.disks.len(), ROUNDS, "disks lost: {:?}", v.disks);
    assert_eq!(v.nics.len(), ROUNDS, "NICs lost: {:?}", v.nics);
}

fn sixty_four_hook_events_at_once_are_all_recorded(e: &dyn Engine) {
    const HOOKS: usize = 64;
    e.init();
    let barrier = std::sync::Barrier::new(HOOKS);
    std::thread::scope(|t| {
        for i in 0..HOOKS {
            let barrier = &barrier;
            t.spawn(move || {
                // Each its own connection, as each hook is its own process;
                // every thread reaches the barrier, even one that failed.
                let opened = e.open(OpenMode::ReadWriteFast);
                barrier.wait();
                let mut s = opened.unwrap_or_else(|err| panic!("hook {i}: {}", one_line(&err)));
                s.record_events(&[event(&format!("vm-{i}"), i as i64)])
                    .unwrap_or_else(|err| panic!("hook {i}: {}", one_line(&err)));
            });
        }
    });
    let all = e
        .open(OpenMode::ReadOnly)
        .unwrap()
        .events(&EventFilter::default())
        .unwrap();
    let mut vms: Vec<String> = all.into_iter().map(|e| e.vm).collect();
    vms.sort();
    let mut want: Vec<String> = (0..HOOKS).map(|i| format!("vm-{i}")).collect();
    want.sort();
    assert_eq!(vms, want);
}

fn init_makes_upgrades_or_finds_current(e: &dyn Engine) {
    let (_, made) = kvmroll_core::location::init(&e.location()).unwrap();
    assert_eq!(made, Init::Created);
    let (_, again) = kvmroll_core::location::init(&e.location()).unwrap();
    assert_eq!(again, Init::Current);
}

fn status_counts_hosts_vms_and_events(e: &dyn Engine) {
    let mut s = e.init();
    s.update(&mut |_| {
        Ok(vec![
            Change::AddHost(Host::new("c", "vm-container")),
            Change::AddHost(Host::new("compute-0-0", "compute")),
            Change::AddVm(vm("v", "c")),
        ])
    })
    .unwrap();
    s.record_events(&[event("v", 1), event("v", 2)]).unwrap();
    let st = e.open(OpenMode::ReadOnly).unwrap().status().unwrap();
    assert_eq!(st.engine, e.location().engine());
    assert_eq!(st.location, e.location().to_string());
    assert!(!st.location.contains(":kvmroll-test@"), "{}", st.location);
    assert_eq!(st.schema_version, kvmroll_core::sqlite::SCHEMA_VERSION);
    assert_eq!((st.hosts, st.vms, st.events), (2, 1, 2));
}

fn disk_grows_and_made_images_round_trip_and_go_with_their_vm(e: &dyn Engine) {
    let mut s = e.init();
    let mut v = vm("v", "c");
    v.disks = vec![
        Disk::parse("qcow2:/d/v.qcow2,vda,virtio,2").unwrap(),
        Disk::parse("raw:/d/v.img,vdb,virtio").unwrap(),
    ];
    s.update(&mut |_| {
        Ok(vec![
            Change::AddHost(Host::new("c", "vm-container")),
            Change::AddVm(v.clone()),
        ])
    })
    .unwrap();
    let grows =
        |s: &dyn Store| -> Vec<bool> { s.vm_disks("v").unwrap().iter().map(|d| d.grow).collect() };
    let disks = s.vm_disks("v").unwrap();
    assert_eq!(
        disks.iter().map(|d| &d.disk).collect::<Vec<_>>(),
        v.disks.iter().collect::<Vec<_>>()
    );
    assert_eq!(grows(&*s), [false, false]);
    assert!(s.vm_disks("nobody").unwrap().is_empty());

    // Grows: never smaller; a disk without a size gets one.
    let was = s.grow_disk("v", "vda", 5).unwrap();
    assert_eq!(was.size_gib, Some(2));
    assert!(matches!(
        s.grow_disk("v", "vda", 4),
        Err(StoreError::Refused(ClusterError::DiskShrink {
            from: 5,
            to: 4,
            ..
        }))
    ));
    assert!(matches!(
        s.grow_disk("v", "vdz", 4),
        Err(StoreError::Refused(ClusterError::UnknownDisk { .. }))
    ));
    assert!(matches!(
        s.grow_disk("nobody", "vda", 4),
        Err(StoreError::Refused(ClusterError::UnknownVm(_)))
    ));
    s.grow_disk("v", "vdb", 1).unwrap();
    assert_eq!(grows(&*s), [true, true]);
    let c = e.open(OpenMode::ReadOnly).unwrap().snapshot().unwrap();
    let sizes: Vec<_> = c
        .vm("v")
        .unwrap()
        .disks
        .iter()
        .map(|d| d.size_gib)
        .collect();
    assert_eq!(sizes, [Some(5), Some(1)]);

    // The hook records what it made and grew.
    let mut hook = e.open(OpenMode::ReadWriteFast).unwrap();
    hook.record_disk_work("v", "c", &["/d/v.qcow2".into()], &["/d/v.img".into()])
        .unwrap();
    assert_eq!(grows(&*s), [true, false]);
    let made = s.made_images("v").unwrap();
    assert_eq!(made.len(), 1);
    assert_eq!(
        (made[0].container.as_str(), made[0].path.as_str()),
        ("c", "/d/v.qcow2")
    );
    // Made again (a later start): one record still.
    hook.record_disk_work("v", "c", &["/d/v.qcow2".into()], &[])
        .unwrap();
    assert_eq!(s.made_images("v").unwrap().len(), 1);
    // A VM gone meanwhile records nothing, and fails nothing.
    hook.record_disk_work("gone", "c", &["/d/x".into()], &[])
        .unwrap();
    let mut ro = e.open(OpenMode::ReadOnly).unwrap();
    assert!(matches!(
        ro.grow_disk("v", "vda", 9),
        Err(StoreError::ReadOnly)
    ));
    assert!(matches!(
        ro.record_disk_work("v", "c", &["/d/y".into()], &[]),
        Err(StoreError::ReadOnly)
    ));

    // The records go with the VM.
    s.update(&mut |_| Ok(vec![Change::RemoveVm("v".into())]))
        .unwrap();
    for table in ["made_images", "disk_grows"] {
        assert_eq!(e.rows(table), 0, "{table} kept rows of a removed VM");
    }
}
