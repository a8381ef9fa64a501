//! VM disks: their sizes grown, and what the hook made and grew recorded, with
//! the VM.

use crate::common::{vm, Engine};
use kvmroll_core::model::Disk;
use kvmroll_core::Vm;
use kvmroll_core::{Change, ClusterError, Host, OpenMode, Store, StoreError};

on_both_engines!(
    disks_round_trip_and_grow_never_smaller,
    made_images_and_grows_are_recorded_and_go_with_their_vm,
);

/// A store holding VM `v` on container `c`, with a qcow2 disk of 2 GiB
/// (vda) and a raw one without a size (vdb).
fn vm_with_two_disks(e: &dyn Engine) -> (Box<dyn Store>, Vm) {
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
    (s, v)
}

/// Whether a grow waits for each of `v`'s disks.
fn grows(s: &dyn Store) -> Vec<bool> {
    s.vm_disks("v").unwrap().iter().map(|d| d.grow).collect()
}

fn disks_round_trip_and_grow_never_smaller(e: &dyn Engine) {
    let (mut s, v) = vm_with_two_disks(e);
    let disks = s.vm_disks("v").unwrap();
    assert_eq!(
        disks.iter().map(|d| &d.disk).collect::<Vec<_>>(),
        v.disks.iter().collect::<Vec<_>>()
    );
    assert_eq!(grows(&*s), [false, false]);
    assert!(s.vm_disks("nobody").unwrap().is_empty());

    // Grows: never smaller; a disk without a size gets one. A new size is
    // a new generation of the VM's definition, which holds it.
    let gen = |s: &dyn Store| s.vm_brief("v").unwrap().unwrap().generation;
    let before = gen(&*s);
    let was = s.grow_disk("v", "vda", 5).unwrap();
    assert_eq!(was.size_gib, Some(2));
    assert_eq!(gen(&*s), before + 1);
    s.grow_disk("v", "vda", 5).unwrap();
    assert_eq!(gen(&*s), before + 1);
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
}

fn made_images_and_grows_are_recorded_and_go_with_their_vm(e: &dyn Engine) {
    let (mut s, _) = vm_with_two_disks(e);
    s.grow_disk("v", "vda", 5).unwrap();
    s.grow_disk("v", "vdb", 1).unwrap();
    assert_eq!(grows(&*s), [true, true]);

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
