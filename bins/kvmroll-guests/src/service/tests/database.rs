//! Where what is known comes from: the database when it answers (which
//! also defines at boot what libvirt lacks or has stale), libvirt's own
//! definitions and their kvmroll metadata when it does not.

use super::*;
use kvmroll_core::{Change, Cluster, Host, Scope};

/// A cluster with container `c0` holding `a` (kvm_autostart) and `b`
/// (not), limits of 2 s for a save, and each VM's rendered definition.
fn two_vms() -> (Cluster, BTreeMap<String, String>) {
    let mut c = Cluster::seeded();
    c.apply(&Change::AddHost(Host::new("c0", "vm-container")))
        .unwrap();
    let mut changes = vec![Change::SetAttr {
        scope: Scope::Host("c0".into()),
        name: "kvm_guests_save_timeout".into(),
        value: "2".into(),
    }];
    for (i, name) in [(0, "a"), (1, "b")] {
        changes.push(Change::AddVm(vm_on_c0(name, i)));
    }
    changes.push(Change::SetAttr {
        scope: Scope::Host("a".into()),
        name: "kvm_autostart".into(),
        value: "true".into(),
    });
    let plan = c.plan(&changes).unwrap();
    let xml = plan
        .changed
        .into_iter()
        .map(|(n, x)| (n, x.expect("rendered")))
        .collect();
    (plan.after, xml)
}

use std::collections::BTreeMap;

/// The database down: `kvm_autostart` and the limits come from the
/// metadata of libvirt's definitions, and the stop and start act on them.
#[test]
fn with_the_database_down_the_definitions_decide() {
    let (_, xml) = two_vms();
    let fake = FakeLibvirt::new();
    fake.add_xml("a", &xml["a"], RUNNING)
        .add_xml("b", &xml["b"], RUNNING)
        .add("hand-made", RUNNING);
    let hv = kvmroll_virt::Connector::connect(&fake, URI).unwrap();
    let known = Known::from_definitions(hv.as_ref(), "c0", "down".into()).unwrap();
    assert_eq!(known.limits("a").save_timeout, Duration::from_secs(2));
    let mut rig = Rig::with_known(known);
    rig.settings(|s| s.shutdown_timeout = Duration::from_millis(300));
    rig.fake
        .add_xml("a", &xml["a"], RUNNING)
        .add_xml("b", &xml["b"], RUNNING)
        .add("hand-made", RUNNING);

    assert_eq!(rig.stop(), Placement::AllInPlace);
    assert_eq!(rig.calls_on("a"), ["save a"]);
    assert_eq!(rig.calls_on("b"), ["shutdown b"]);
    assert_eq!(rig.calls_on("hand-made"), ["shutdown hand-made"]);

    assert_eq!(rig.start(), Placement::AllInPlace);
    assert_eq!(rig.state_of("a"), VmState::Restored);
    assert!(rig.fake.said().iter().all(|c| !c.starts_with("define")));
    assert_eq!(rig.fake.state("b"), Some(OFF));
}

/// The database answering: at boot, a VM libvirt lacks (a reinstalled
/// container) or has stale is defined from it before it starts.
#[test]
fn with_the_database_up_missing_and_stale_definitions_are_defined_first() {
    let (cluster, xml) = two_vms();
    let mut rig = Rig::with_known(Known::from_cluster(cluster, "c0"));
    rig.settings(|s| s.shutdown_timeout = Duration::from_millis(300));
    assert_eq!(rig.svc.known.autostart().len(), 1);
    // `b` has a definition without kvmroll's metadata; `a` has none.
    rig.fake.add("b", OFF);
    assert_eq!(rig.start(), Placement::AllInPlace);
    assert_eq!(rig.calls_on("a"), ["define a", "start a"]);
    assert_eq!(rig.calls_on("b"), ["define b"]);
    assert_eq!(rig.fake.xml_of("a").as_deref(), Some(xml["a"].as_str()));
    assert_eq!(rig.fake.xml_of("b").as_deref(), Some(xml["b"].as_str()));
    assert_eq!(rig.state_of("a"), VmState::Booted);

    // Current definitions are left alone; a definition that fails is said
    // and the VM started with what libvirt has.
    let (cluster, _) = two_vms();
    let rig = Rig::with_known(Known::from_cluster(cluster, "c0"));
    rig.fake
        .add_xml("a", &xml["a"], OFF)
        .add_xml("b", &xml["b"], OFF);
    assert_eq!(rig.start(), Placement::AllInPlace);
    assert!(rig.fake.said().iter().all(|c| !c.starts_with("define")));
}

#[test]
fn a_vm_libvirt_lacks_and_cannot_define_is_reported() {
    let (cluster, _) = two_vms();
    let rig = Rig::with_known(Known::from_cluster(cluster, "c0"));
    rig.fake
        .add("a", OFF)
        .fault("a", kvmroll_virt::fake::Fault::DefineFails);
    // Stale and not redefinable: started with what libvirt has.
    assert_eq!(rig.start(), Placement::AllInPlace);
    assert_eq!(rig.calls_on("a"), ["define a", "start a"]);
}

/// The unit's drop-in lists the folders of this container's VMs' disks and
/// cdroms, not those of other containers, nor block devices.
#[test]
fn the_storage_drop_in_names_the_folders_of_this_containers_disks_and_cdroms() {
    let mut c = Cluster::seeded();
    for host in ["c0", "c1"] {
        c.apply(&Change::AddHost(Host::new(host, "vm-container")))
            .unwrap();
    }
    let mut a = vm_on_c0("a", 0);
    a.disks = vec![
        kvmroll_core::model::Disk::parse("qcow2:/state/kvm/disks/a.qcow2,vda,virtio,4").unwrap(),
        kvmroll_core::model::Disk::parse("block:/dev/sdb,vdb,virtio").unwrap(),
    ];
    a.cdrom = Some("/isos/rescue.iso".into());
    let mut b = vm_on_c0("b", 1);
    b.container = Some("c1".into());
    b.disks = vec![kvmroll_core::model::Disk::parse("raw:/elsewhere/b.img,vda,virtio,1").unwrap()];
    c.apply(&Change::AddVm(a)).unwrap();
    c.apply(&Change::AddVm(b)).unwrap();
    let folders = crate::mounts::storage_folders(&c, "c0");
    assert_eq!(
        folders.into_iter().collect::<Vec<_>>(),
        ["/isos", "/state/kvm/disks"]
    );

    let rig = Rig::new(&[]);
    crate::mounts::refresh(&rig.svc.root, &c, "c0");
    let written = std::fs::read_to_string(crate::mounts::drop_in_path(&rig.svc.root)).unwrap();
    assert!(written.contains("\nRequiresMountsFor=/isos\nRequiresMountsFor=/state/kvm/disks\n"));
}
