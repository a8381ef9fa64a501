//! Unit tests of [`super`] (render), kept beside it so the module reads
//! on its own.

use super::*;
use crate::cluster::tests::{small_cluster, vm};
use crate::cluster::Change;
use crate::model::Scope;

fn set(c: &mut Cluster, host: &str, name: &str, value: &str) {
    c.apply(&Change::SetAttr {
        scope: Scope::Host(host.into()),
        name: name.into(),
        value: value.into(),
    })
    .unwrap();
}

fn with_vms(specs: &[(&str, u32)]) -> Cluster {
    let mut c = small_cluster();
    for (name, vcpus) in specs {
        c.apply(&Change::AddVm(vm(name, "vm-container-0-0", *vcpus)))
            .unwrap();
    }
    c
}

#[test]
fn pin_all_pins_vcpu_i_to_cpu_i() {
    let mut c = with_vms(&[("a", 3)]);
    set(&mut c, "a", "kvm_cpu_pinning", "pin_all");
    let x = render_domain(&c, "a").unwrap();
    assert!(x.contains("<vcpupin vcpu='0' cpuset='0'/>"));
    assert!(x.contains("<vcpupin vcpu='2' cpuset='2'/>"));
    assert!(!x.contains("vcpu='3'"));
}

#[test]
fn pin_auto_avoids_cpus_others_hold() {
    let mut c = with_vms(&[("a", 2), ("b", 3), ("d", 2)]);
    set(&mut c, "a", "kvm_cpu_pinning", "pin_all");
    set(&mut c, "b", "kvm_cpu_pinning", "pin_auto");
    set(
        &mut c,
        "d",
        "kvm_cpu_pinning",
        "<cputune><vcpupin vcpu='0' cpuset='2'/><vcpupin vcpu='1' cpuset='3'/></cputune>",
    );
    let x = render_domain(&c, "b").unwrap();
    assert!(x.contains("<vcpupin vcpu='0' cpuset='4'/>"), "{x}");
    assert!(x.contains("<vcpupin vcpu='2' cpuset='6'/>"), "{x}");
}

#[test]
fn pin_auto_stays_in_one_numa_cell_and_fails_when_full() {
    let mut c = with_vms(&[("a", 3), ("b", 3), ("d", 3)]);
    set(&mut c, "vm-container-0-0", "numa_cells", "0-3;4-7");
    for v in ["a", "b", "d"] {
        set(&mut c, v, "kvm_cpu_pinning", "pin_auto");
    }
    let mut r = Renderer::new(&c);
    assert!(r
        .render("a")
        .unwrap()
        .contains("cpuset='2'/>\n  </cputune>"));
    let b = r.render("b").unwrap();
    assert!(b.contains("<vcpupin vcpu='0' cpuset='4'/>"), "{b}");
    let err = r.render("d").unwrap_err();
    assert_eq!(
        err.to_string(),
        "VM \"d\": pin_auto needs 3 free CPUs in one NUMA cell on container \
         \"vm-container-0-0\" but at most 1 are free"
    );
}

#[test]
fn impossible_fragment_pins_are_errors() {
    let mut c = with_vms(&[("a", 2)]);
    set(
        &mut c,
        "a",
        "kvm_cpu_pinning",
        "<cputune><vcpupin vcpu='0' cpuset='9'/></cputune>",
    );
    assert!(matches!(
        render_domain(&c, "a"),
        Err(RenderError::NoSuchCpu { cpu: 9, .. })
    ));
    set(
        &mut c,
        "a",
        "kvm_cpu_pinning",
        "<cputune><vcpupin vcpu='5' cpuset='1'/></cputune>",
    );
    assert!(matches!(
        render_domain(&c, "a"),
        Err(RenderError::NoSuchVcpu { vcpu: 5, .. })
    ));
}

/// Regression: an emulatorpin or iothreadpin beyond the container's
/// CPUs was rendered, and libvirt refused the definition.
#[test]
fn every_set_of_a_fragment_is_checked_against_vm_and_container() {
    let mut c = with_vms(&[("a", 2)]);
    let cases = [
        (
            "<cputune><emulatorpin cpuset='8'/></cputune>",
            "<emulatorpin> pins to CPU 8 but container \"vm-container-0-0\" has only CPUs 0-7",
        ),
        (
            "<iothreads>1</iothreads><cputune><iothreadpin iothread='1' cpuset='0,9'/></cputune>",
            "<iothreadpin> pins to CPU 9",
        ),
        (
            "<cputune><vcpupin vcpu='0' cpuset='8'/></cputune>",
            "<vcpupin> pins to CPU 8",
        ),
        (
            "<cputune><vcpusched vcpus='0-2' scheduler='fifo' priority='1'/></cputune>",
            "<vcpusched> names vCPU 2 but the VM has only 2 vCPUs",
        ),
        (
            "<cputune><cachetune vcpus='0'><monitor level='3' vcpus='3'/></cachetune></cputune>",
            "<monitor> names vCPU 3",
        ),
    ];
    for (fragment, why) in cases {
        set(&mut c, "a", "kvm_cpu_pinning", fragment);
        let e = render_domain(&c, "a").unwrap_err();
        assert!(e.to_string().contains(why), "{fragment}: {e}");
    }
    // NUMA nodes are checked where numa_cells says how many there are.
    set(
        &mut c,
        "a",
        "kvm_cpu_pinning",
        "<numatune><memory mode='strict' nodeset='1'/></numatune>",
    );
    render_domain(&c, "a").unwrap();
    set(&mut c, "vm-container-0-0", "numa_cells", "0-7");
    let e = render_domain(&c, "a").unwrap_err();
    assert!(
        e.to_string()
            .contains("<memory> names NUMA node 1 but container \"vm-container-0-0\" has 1"),
        "{e}"
    );
    set(&mut c, "vm-container-0-0", "numa_cells", "0-3;4-7");
    let ok = "<cputune><vcpupin vcpu='1' cpuset='7'/><emulatorpin cpuset='0-1'/></cputune>\n<numatune><memory mode='strict' nodeset='1'/></numatune>";
    set(&mut c, "a", "kvm_cpu_pinning", ok);
    let x = render_domain(&c, "a").unwrap();
    assert!(
        x.contains("<emulatorpin cpuset='0-1'/></cputune>\n  <numatune>"),
        "{x}"
    );
}

#[test]
fn device_gap_is_an_error() {
    let mut c = with_vms(&[("a", 1)]);
    set(&mut c, "a", "kvm_device_0", "<watchdog model='i6300esb'/>");
    set(
        &mut c,
        "a",
        "kvm_device_2",
        "<rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>",
    );
    assert_eq!(
        render_domain(&c, "a"),
        Err(RenderError::DeviceGap {
            vm: "a".into(),
            missing: 1,
            next: 2
        })
    );
}

/// Regression: a `kvm_device_N` disk on a target the VM's own disk (or
/// another fragment's, or the cdrom) had was rendered, and libvirt
/// refused the definition ("target 'vda' duplicated").
#[test]
fn a_device_disk_on_a_taken_target_is_refused_and_the_cdrom_moves_aside() {
    let mut c = with_vms(&[("a", 1)]);
    let mut v = c.vm("a").unwrap().clone();
    v.disks = vec![crate::model::Disk::parse("file:/s/a.img,vda,virtio").unwrap()];
    v.cdrom = Some("/isos/a.iso".into());
    c.apply(&Change::SetVm(v)).unwrap();
    let disk = |dev: &str| {
        format!("<disk type='file' device='disk'><source file='/s/{dev}.img'/><target dev='{dev}' bus='virtio'/></disk>")
    };
    let plan = c.plan(&[Change::SetAttr {
        scope: Scope::Host("a".into()),
        name: "kvm_device_0".into(),
        value: disk("vda"),
    }]);
    let e = crate::sys::error_chain(&plan.unwrap_err());
    assert!(
        e.contains("kvm_device_0's <disk> takes target vda, which another disk of the VM has"),
        "{e}"
    );
    set(&mut c, "a", "kvm_device_0", &disk("vdb"));
    set(&mut c, "a", "kvm_device_1", &disk("vdb"));
    assert_eq!(
        render_domain(&c, "a"),
        Err(RenderError::DuplicateTarget {
            vm: "a".into(),
            index: 1,
            dev: "vdb".into()
        })
    );
    // A fragment's cdrom on hdc: kvmroll's cdrom takes the next slot.
    set(
        &mut c,
        "a",
        "kvm_device_1",
        "<disk type='file' device='cdrom'><source file='/i.iso'/><target dev='hdc' bus='ide'/><readonly/></disk>",
    );
    let x = render_domain(&c, "a").unwrap();
    assert!(x.contains("<target dev='hdd' bus='ide'/>"), "{x}");
}

/// Regression: disks sda and hda on one SATA (IDE, SCSI) bus were
/// rendered, and libvirt refused the domain ("Found duplicate drive
/// address"): it places such a disk by the letters of its name.
#[test]
fn disks_whose_names_take_one_slot_are_refused_and_the_cdrom_avoids_them() {
    let mut c = with_vms(&[("a", 1)]);
    let disks = |specs: &[&str]| -> Vec<crate::model::Disk> {
        specs
            .iter()
            .map(|d| crate::model::Disk::parse(d).unwrap())
            .collect()
    };
    let mut v = c.vm("a").unwrap().clone();
    v.disks = disks(&["file:/s/a.img,sda,sata", "file:/s/b.img,hda,sata"]);
    let e = crate::sys::error_chain(&c.plan(&[Change::SetVm(v.clone())]).unwrap_err());
    assert!(
        e.contains("disks sda and hda take the same sata slot"),
        "{e}"
    );
    // On other buses, or on another index, they are fine.
    v.disks = disks(&[
        "file:/s/a.img,sda,sata",
        "file:/s/b.img,hda,virtio",
        "file:/s/c.img,sdb,scsi",
    ]);
    c.apply(&Change::SetVm(v.clone())).unwrap();
    render_domain(&c, "a").unwrap();
    // A fragment's disk is placed by its name too, unless it has an address.
    let fragment = |dev: &str, address: &str| {
        format!("<disk type='file' device='disk'><source file='/s/f.img'/><target dev='{dev}' bus='scsi'/>{address}</disk>")
    };
    set(&mut c, "a", "kvm_device_0", &fragment("hdb", ""));
    assert!(matches!(
        render_domain(&c, "a"),
        Err(RenderError::SameSlot { ref dev, ref other, .. }) if dev == "hdb" && other == "sdb"
    ));
    set(
        &mut c,
        "a",
        "kvm_device_0",
        &fragment(
            "hdb",
            "<address type='drive' controller='0' bus='0' target='0' unit='5'/>",
        ),
    );
    render_domain(&c, "a").unwrap();
    // The cdrom skips hdc, whose slot a disk named sdc has on IDE.
    v.disks = disks(&["file:/s/a.img,sdc,ide"]);
    v.cdrom = Some("/isos/a.iso".into());
    c.apply(&Change::SetVm(v)).unwrap();
    let x = render_domain(&c, "a").unwrap();
    assert!(x.contains("<target dev='hdd' bus='ide'/>"), "{x}");
}

#[test]
fn boot_order_follows_the_cdrom() {
    let mut c = with_vms(&[("a", 1)]);
    let x = render_domain(&c, "a").unwrap();
    assert!(x.contains("<boot dev='network'/>\n    <boot dev='hd'/>"));
    assert!(!x.contains("cdrom"));
    let mut v = c.vm("a").unwrap().clone();
    v.cdrom = Some("/dev/sr0".into());
    c.apply(&Change::SetVm(v)).unwrap();
    let x = render_domain(&c, "a").unwrap();
    assert!(x.contains("<boot dev='cdrom'/>\n    <boot dev='network'/>\n    <boot dev='hd'/>"));
    assert!(x.contains("<disk type='block' device='cdrom'>"));
    assert!(x.contains("<source dev='/dev/sr0'/>"));
}

#[test]
fn a_cdrom_takes_a_free_slot_or_none() {
    let mut c = with_vms(&[("a", 1)]);
    let mut v = c.vm("a").unwrap().clone();
    v.disks = ["hda", "hdc"]
        .iter()
        .map(|d| crate::model::Disk::parse(&format!("file:/s/{d}.img,{d},ide")).unwrap())
        .collect();
    v.cdrom = Some("/isos/a.iso".into());
    c.apply(&Change::SetVm(v.clone())).unwrap();
    let x = render_domain(&c, "a").unwrap();
    assert!(x.contains("<target dev='hdd' bus='ide'/>"), "{x}");
    // Every IDE slot a disk: refused, rather than two devices on hdd.
    v.disks = ["hda", "hdb", "hdc", "hdd"]
        .iter()
        .map(|d| crate::model::Disk::parse(&format!("file:/s/{d}.img,{d},ide")).unwrap())
        .collect();
    c.apply(&Change::SetVm(v)).unwrap();
    let e = render_domain(&c, "a").unwrap_err().to_string();
    assert!(e.contains("no ide slot is left for the cdrom"), "{e}");
}

#[test]
fn text_is_escaped() {
    let mut c = with_vms(&[("a", 1)]);
    let mut v = c.vm("a").unwrap().clone();
    v.cdrom = Some("/isos/a&b'<c>.iso".into());
    c.apply(&Change::SetVm(v)).unwrap();
    let x = render_domain(&c, "a").unwrap();
    assert!(
        x.contains("<source file='/isos/a&amp;b&apos;&lt;c&gt;.iso'/>"),
        "{x}"
    );
    crate::xml::parse_document(&x).unwrap();
}
