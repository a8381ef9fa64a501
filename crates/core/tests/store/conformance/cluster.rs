//! The cluster written and read back: changes planned, refused or kept whole,
//! VM briefs, generations.

use crate::common::{one_line, vm, Engine};
use kvmroll_core::model::{Disk, Mac, Nic, NicKind};
use kvmroll_core::{Change, ClusterError, Host, OpenMode, Scope, Store, StoreError};

on_both_engines!(
    round_trips_the_cluster,
    a_refused_change_writes_nothing,
    the_change_is_planned_over_the_cluster_as_it_stands,
    vm_brief_resolves_attributes,
    two_writers_of_one_vm_lose_nothing,
    generations_follow_the_rendered_definition,
);

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

/// Each write that changes a VM's rendering moves its generation on, in the
/// write's transaction; one that changes nothing rendered does not; the
/// definition carries the generation written.
fn generations_follow_the_rendered_definition(e: &dyn Engine) {
    let mut s = e.init();
    let gen = |s: &dyn Store, vm: &str| s.vm_brief(vm).unwrap().unwrap().generation;
    s.update(&mut |_| {
        Ok(vec![
            Change::AddHost(Host::new("c", "vm-container")),
            Change::AddVm(vm("v", "c")),
            Change::AddVm(vm("w", "c")),
        ])
    })
    .unwrap();
    assert_eq!((gen(&*s, "v"), gen(&*s, "w")), (1, 1));
    let plan = s
        .update(&mut |c| {
            let mut v = c.vm("v").unwrap().clone();
            v.vcpus = 2;
            Ok(vec![Change::SetVm(v)])
        })
        .unwrap();
    assert_eq!((gen(&*s, "v"), gen(&*s, "w")), (2, 1));
    assert!(plan.changed["v"]
        .as_deref()
        .unwrap()
        .contains("generation='2'"));
    let c = e.open(OpenMode::ReadOnly).unwrap().snapshot().unwrap();
    assert_eq!(c.vm("v").unwrap().generation, 2);
    // Marking stale renders nothing new.
    s.update(&mut |c| {
        let mut v = c.vm("v").unwrap().clone();
        v.stale = true;
        Ok(vec![Change::SetVm(v)])
    })
    .unwrap();
    assert_eq!(gen(&*s, "v"), 2);
    // A global setting the container uses is in every definition.
    s.update(&mut |_| {
        Ok(vec![Change::SetAttr {
            scope: Scope::Global,
            name: "kvm_autostart".into(),
            value: "true".into(),
        }])
    })
    .unwrap();
    assert_eq!((gen(&*s, "v"), gen(&*s, "w")), (3, 2));
}
