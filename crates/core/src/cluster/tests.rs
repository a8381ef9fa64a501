//! Unit tests of the cluster model, and the small clusters other modules'
//! tests start from.

use super::*;
use crate::model::{Disk, Nic};

pub(crate) fn vm(name: &str, container: &str, vcpus: u32) -> Vm {
    Vm {
        id: 0,
        name: name.into(),
        container: Some(container.into()),
        memory_mib: 1024,
        vcpus,
        uuid: format!(
            "00000000-0000-4000-8000-{:012x}",
            name.bytes()
                .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)))
                & 0xffff_ffff_ffff
        ),
        cdrom: None,
        virt_type: "kvm".into(),
        disks: vec![],
        nics: vec![],
        stale: false,
        generation: 0,
    }
}

pub(crate) fn small_cluster() -> Cluster {
    let mut c = Cluster::seeded();
    let mut h = Host::new("vm-container-0-0", "vm-container");
    h.cpus = 8;
    c.apply(&Change::AddHost(h)).unwrap();
    c.apply(&Change::AddHost(Host::new("compute-0-0", "compute")))
        .unwrap();
    c
}

pub(crate) fn set(scope: Scope, name: &str, value: &str) -> Change {
    Change::SetAttr {
        scope,
        name: name.into(),
        value: value.into(),
    }
}

#[test]
fn resolution_runs_global_os_appliance_rack_host() {
    let mut c = small_cluster();
    let mut h = c.host("compute-0-0").unwrap().clone();
    h.rack = 2;
    c.apply(&Change::SetHost(h)).unwrap();
    let steps = [
        Scope::Global,
        Scope::Os("linux".into()),
        Scope::Appliance("compute".into()),
        Scope::Rack(2),
        Scope::Host("compute-0-0".into()),
    ];
    for (i, scope) in steps.iter().enumerate() {
        c.apply(&set(scope.clone(), "x", &format!("v{i}"))).unwrap();
        let host = c.host("compute-0-0").unwrap();
        let r = &c.resolve(host)["x"];
        assert_eq!(
            (r.value.as_str(), &r.scope),
            (format!("v{i}").as_str(), scope)
        );
    }
    // Removing the host value falls back to the rack's.
    c.apply(&Change::RemoveAttr {
        scope: Scope::Host("compute-0-0".into()),
        name: "x".into(),
    })
    .unwrap();
    assert_eq!(c.attr_of("compute-0-0", "x"), Some("v3"));
    // Other racks, appliances and hosts do not see it.
    assert_eq!(c.attr_of("vm-container-0-0", "x"), Some("v1"));
}

/// The model calls no system: the host name is the caller's, and a
/// container is local by its full or short name.
#[test]
fn the_libvirt_uri_is_local_only_for_the_host_name_given() {
    let mut c = small_cluster();
    let here = "vm-container-0-0.cluster.example";
    assert_eq!(c.libvirt_uri("vm-container-0-0", here), "qemu:///system");
    assert_eq!(c.libvirt_uri("localhost", "elsewhere"), "qemu:///system");
    assert_eq!(
        c.libvirt_uri("vm-container-0-0", "vm-container-0-1"),
        "qemu+ssh://root@vm-container-0-0/system"
    );
    assert_eq!(
        c.libvirt_uri("compute-0-0", "compute-0-0"),
        "qemu:///system"
    );
    c.apply(&set(
        Scope::Host("vm-container-0-0".into()),
        "libvirt_uri",
        "qemu+tls://{host}/system",
    ))
    .unwrap();
    assert_eq!(
        c.libvirt_uri("vm-container-0-0", here),
        "qemu+tls://vm-container-0-0/system"
    );
}

#[test]
fn vm_container_appliance_is_kvm() {
    let c = small_cluster();
    assert!(c.is_container(c.host("vm-container-0-0").unwrap()));
    assert!(!c.is_container(c.host("compute-0-0").unwrap()));
}

#[test]
fn a_vm_needs_a_container() {
    let mut c = small_cluster();
    assert_eq!(
        c.apply(&Change::AddVm(vm("v", "compute-0-0", 1))),
        Err(ClusterError::NotContainer("compute-0-0".into()))
    );
    assert_eq!(
        c.apply(&Change::AddVm(vm("v", "nowhere", 1))),
        Err(ClusterError::UnknownHost("nowhere".into()))
    );
    c.apply(&Change::AddVm(vm("v", "vm-container-0-0", 1)))
        .unwrap();
    assert_eq!(c.host("v").unwrap().appliance, "hosted-vm");
}

#[test]
fn a_container_with_vms_stays_one() {
    let mut c = small_cluster();
    c.apply(&Change::AddVm(vm("v", "vm-container-0-0", 1)))
        .unwrap();
    let err = c
        .apply(&set(Scope::Host("vm-container-0-0".into()), "kvm", "false"))
        .unwrap_err();
    assert!(matches!(err, ClusterError::HoldsVms { .. }));
    assert!(matches!(
        c.apply(&Change::RemoveHost("vm-container-0-0".into())),
        Err(ClusterError::HoldsVms { .. })
    ));
    assert!(matches!(
        c.apply(&Change::RemoveHost("v".into())),
        Err(ClusterError::IsVm(_))
    ));
}

#[test]
fn duplicate_macs_are_refused() {
    let mut c = small_cluster();
    let mac = Mac::parse("52:54:00:00:00:01").unwrap();
    let nic = Nic {
        kind: crate::model::NicKind::Bridge,
        source: "br0".into(),
        mac: mac.clone(),
        vlan: None,
        model: "virtio".into(),
    };
    let mut a = vm("a", "vm-container-0-0", 1);
    a.nics.push(nic.clone());
    c.apply(&Change::AddVm(a.clone())).unwrap();
    // Setting the VM with its own MAC is fine.
    c.apply(&Change::SetVm(a)).unwrap();
    let mut b = vm("b", "vm-container-0-0", 1);
    b.nics.push(nic);
    assert_eq!(
        c.apply(&Change::AddVm(b)),
        Err(ClusterError::DuplicateMac(mac.to_string()))
    );
}

#[test]
fn duplicate_disks_are_refused() {
    let mut c = small_cluster();
    let mut a = vm("a", "vm-container-0-0", 1);
    let d = Disk::parse("file:/a.img,vda,virtio").unwrap();
    a.disks = vec![d.clone(), d];
    assert!(matches!(
        c.apply(&Change::AddVm(a)),
        Err(ClusterError::DuplicateDisk { .. })
    ));
}
