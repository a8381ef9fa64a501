//! Unit tests of [`super`] (model), kept beside it so the module reads
//! on its own.

use super::*;

#[test]
fn names() {
    for good in ["hosted-vm-0-0-0", "compute-0-3", "a", "vm.example", "x_1"] {
        check_name("VM", good).unwrap();
    }
    for bad in [
        "", "a/b", "..", "a..b", "a b", "a\tb", "-x", ".x", "a\u{7}", "é", "a;b",
    ] {
        assert!(check_name("VM", bad).is_err(), "accepted {bad:?}");
    }
    assert!(check_name("VM", &"a".repeat(64)).is_err());
}

/// Regression: U+FFFE in a disk path, a cdrom or `kvm_emulator` was
/// accepted and rendered, and libvirt refused the whole definition
/// ("Char 0xFFFE out of allowed range"). `kvm_emulator`'s half is in
/// attrs' tests.
#[test]
fn a_path_with_a_character_xml_cannot_carry_is_refused() {
    for bad in ["/a\u{FFFE}b", "/a\u{FFFF}"] {
        let e = check_abs_path(bad).unwrap_err().to_string();
        assert!(e.contains("a character XML cannot carry"), "{e}");
        assert!(Disk::parse(&format!("file:{bad},vda,virtio")).is_err());
    }
    // What XML carries is fine, however unusual.
    check_abs_path("/a\u{200B}b/\u{e9}t\u{e9}/\u{10348}.img").unwrap();
}

/// Regression: `--disk file:/a.img,vda,fdc` was accepted and rendered
/// as a disk on the floppy bus, which libvirt refuses.
#[test]
fn a_disk_on_the_floppy_bus_is_refused() {
    let e = Disk::parse("file:/a.img,vda,fdc").unwrap_err().to_string();
    assert!(e.contains("unknown bus \"fdc\""), "{e}");
}

/// Regression: `--disk file:/a.img,ab,virtio` (or `vd1`, `fda`) was
/// accepted, and libvirt refused the domain ("Unknown disk name 'ab'").
#[test]
fn a_disk_target_libvirt_cannot_place_is_refused() {
    for (dev, idx) in [
        ("vda", 0),
        ("hdc", 2),
        ("sdz", 25),
        ("sdaa", 26),
        ("xvdb", 1),
    ] {
        assert_eq!(disk_index(dev), Some(idx), "{dev}");
    }
    assert_eq!(disk_index("ubda1"), Some(0));
    for dev in ["ab", "vd1", "fda", "vd", "hd-a", "vdA"] {
        assert_eq!(disk_index(dev), None, "{dev}");
        let e = Disk::parse(&format!("file:/a.img,{dev},virtio")).unwrap_err();
        assert!(e.to_string().contains("is not a device name"), "{e}");
    }
}

#[test]
fn disk_specs() {
    let d = Disk::parse("file:/state/kvm/a.qcow2,vda,virtio,36").unwrap();
    assert_eq!(d.kind, DiskKind::File);
    assert_eq!(d.size_gib, Some(36));
    assert_eq!(d.spec(), "file:/state/kvm/a.qcow2,vda,virtio,36");
    let b = Disk::parse("block:/dev/sdb,sdb,scsi").unwrap();
    assert_eq!(b.size_gib, None);
    for bad in [
        "file:rel/a.img,vda,virtio",
        "nfs:/a,vda,virtio",
        "/a,vda,virtio",
        "file:/a,vda",
        "file:/a,vda,virtio,0",
        "file:/a,vda,virtio,x",
        "file:/a,VDA,virtio",
        "file:/a,vda,pci",
        "file:/a/../etc/shadow,vda,virtio",
        "file:/a,vda,virtio,1,2",
    ] {
        assert!(Disk::parse(bad).is_err(), "accepted {bad:?}");
    }
}

#[test]
fn nic_specs() {
    let n = NicSpec::parse("bridge:br0,mac=52:54:00:AA:bb:01,vlan=12,model=e1000").unwrap();
    assert_eq!(n.kind, NicKind::Bridge);
    assert_eq!(n.mac.unwrap().as_str(), "52:54:00:aa:bb:01");
    assert_eq!(n.vlan, Some(12));
    assert_eq!(n.model, "e1000");
    let d = NicSpec::parse("direct:eth1").unwrap();
    assert_eq!((d.kind, d.model.as_str()), (NicKind::Direct, "virtio"));
    for bad in [
        "br0",
        "tap:br0",
        "bridge:",
        "bridge:a/b",
        "bridge:br0,mac=01:00:00:00:00:01",
        "bridge:br0,mac=zz",
        "bridge:br0,vlan=0",
        "bridge:br0,vlan=5000",
        "bridge:br0,speed=1",
        "bridge:br0,model=a b",
        "bridge:averyveryverylongname",
    ] {
        assert!(NicSpec::parse(bad).is_err(), "accepted {bad:?}");
    }
}

#[test]
fn scopes_round_trip() {
    for s in [
        Scope::Global,
        Scope::Os("linux".into()),
        Scope::Appliance("compute".into()),
        Scope::Rack(3),
        Scope::Host("c-0-0".into()),
    ] {
        assert_eq!(Scope::from_parts(s.kind(), &s.target()), Some(s));
    }
}

#[test]
fn bools() {
    assert_eq!(parse_bool("TRUE"), Some(true));
    assert_eq!(parse_bool("no"), Some(false));
    assert_eq!(parse_bool("maybe"), None);
}
