//! Unit tests of [`super`] (drift), kept beside it so the module reads
//! on its own.

use super::*;

const RENDERED: &str = "<domain type='kvm'><name>v</name><memory unit='KiB'>131072</memory>\
    <vcpu placement='static'>2</vcpu><cputune><vcpupin vcpu='0' cpuset='0'/><vcpupin vcpu='1' cpuset='1'/></cputune>\
    <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='network'/><boot dev='hd'/></os>\
    <cpu mode='host-passthrough'><feature policy='disable' name='x'/></cpu>\
    <devices><disk type='file' device='disk'><source file='/a.img'/><target dev='vda' bus='virtio'/></disk>\
    <interface type='bridge'><mac address='52:54:00:00:00:01'/><source bridge='br0'/></interface>\
    <watchdog model='i6300esb'/><serial type='pty'/></devices></domain>";

/// What libvirt makes of it: more attributes, more elements.
fn libvirt(r: &str) -> String {
    r.replace("<memory unit='KiB'>", "<uuid>x</uuid><memory unit='KiB'>")
        .replace(
            "<cpu mode='host-passthrough'>",
            "<cpu mode='host-passthrough' check='none' migratable='on'>",
        )
        .replace(
            "<source file='/a.img'/>",
            "<source file='/a.img' index='1'/><alias name='virtio-disk0'/>",
        )
        .replace(
            "</devices>",
            "<controller type='usb'/><memballoon model='virtio'/></devices>",
        )
        .replace(
            "<watchdog model='i6300esb'/>",
            "<watchdog model='i6300esb' action='reset'><address type='pci'/></watchdog>",
        )
}

#[test]
fn replacement_xml_must_be_the_same_vm() {
    let x = "<domain type='kvm'><name>a</name><uuid>U</uuid></domain>";
    assert!(check_domain(x, "a", Some("u")).is_ok());
    let e = check_domain(x, "b", None).unwrap_err().to_string();
    assert!(e.contains("named \"a\""), "{e}");
    let e = check_domain(x, "a", Some("V")).unwrap_err().to_string();
    assert!(e.contains("UUID"), "{e}");
    assert!(check_domain("<network/>", "a", None).is_err());
    let e = check_domain("<domain><name>a", "a", None).unwrap_err();
    assert!(
        e.to_string().starts_with("not well-formed domain XML: "),
        "{e}"
    );
}

#[test]
fn what_libvirt_adds_is_no_drift() {
    assert_eq!(
        compare(RENDERED, &libvirt(RENDERED)).unwrap(),
        Vec::<String>::new()
    );
}

#[test]
fn decided_parts_are_compared() {
    let cases = [
        ("131072", "262144", "memory"),
        ("cpuset='1'", "cpuset='3'", "cputune"),
        (
            "<boot dev='network'/><boot dev='hd'/>",
            "<boot dev='hd'/>",
            "boot order",
        ),
        ("name='x'", "name='y'", "cpu"),
        ("/a.img", "/b.img", "disk vda"),
        ("52:54:00:00:00:01", "52:54:00:00:00:02", "interface"),
        (
            "<watchdog model='i6300esb' action='reset'><address type='pci'/></watchdog>",
            "",
            "watchdog",
        ),
        (
            "</devices>",
            "<disk type='file' device='cdrom'><target dev='hdc' bus='ide'/></disk></devices>",
            "disk hdc is not in the database",
        ),
    ];
    for (from, to, what) in cases {
        let actual = libvirt(RENDERED).replace(from, to);
        let d = compare(RENDERED, &actual).unwrap();
        assert!(d.iter().any(|l| l.contains(what)), "{from} -> {to}: {d:?}");
    }
}

#[test]
fn pinning_removed_or_added_is_drift() {
    let unpinned = RENDERED.replace(
        "<cputune><vcpupin vcpu='0' cpuset='0'/><vcpupin vcpu='1' cpuset='1'/></cputune>",
        "",
    );
    assert!(!compare(RENDERED, &unpinned).unwrap().is_empty());
    assert!(!compare(&unpinned, RENDERED).unwrap().is_empty());
    let extra_pin = RENDERED.replace("</cputune>", "<vcpupin vcpu='2' cpuset='2'/></cputune>");
    assert!(!compare(RENDERED, &extra_pin).unwrap().is_empty());
}
