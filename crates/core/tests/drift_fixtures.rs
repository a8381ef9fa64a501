//! The drift projection ([`kvmroll_core::drift`]) against real domain
//! definitions: kvmroll's renderings (`*-rendered.xml`, from `kvmroll-gen
//! domain`) and what libvirt made of them, kept as fixtures. The facts a
//! rendering's metadata carries ([`kvmroll_core::metadata`]) must be the
//! projection of the rendering, and of what libvirt gives back.

use kvmroll_core::drift::{compare_facts, device_kinds, project};
use kvmroll_core::metadata::Metadata;
use kvmroll_core::xml::{parse_document, Element};

/// Fixtures: kvmroll's renderings (`*-rendered.xml`, from `kvmroll-gen
/// domain`), what libvirt's test driver gave back for one
/// (`virsh -c test:///default define; dumpxml --inactive`), and what a
/// real libvirtd 9.0 with QEMU handed its hook, and kept, for the others
/// (`fxlive`: a custom CPU, pins, disks, a cdrom, a bridge and a macvtap
/// NIC, a watchdog; `fxhm`: a host-model CPU).
fn fixture(name: &str) -> Element {
    let path = format!(
        "{}/tests/fixtures/domain/{name}.xml",
        env!("CARGO_MANIFEST_DIR")
    );
    parse_document(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn facts_of(rendered: &str) -> Vec<String> {
    let doc = fixture(rendered);
    let meta = Metadata::find(&doc).unwrap().unwrap();
    assert!(meta.intact(), "{rendered}");
    // What the renderer wrote is the projection of what it rendered.
    assert_eq!(project(&doc, None), meta.facts, "{rendered}");
    meta.facts
}

fn libvirts(name: &str, facts: &[String]) -> Vec<String> {
    project(&fixture(name), Some(&device_kinds(facts)))
}

#[test]
fn facts_are_the_same_from_kvmroll_and_from_libvirts_definition() {
    for (rendered, defined) in [
        ("fx-rendered", "fx-test-driver-inactive"),
        ("fxlive-rendered", "fxlive-qemu-inactive"),
    ] {
        let facts = facts_of(rendered);
        assert_eq!(libvirts(defined, &facts), facts, "{defined}");
    }
    // libvirt wrote the sets its own way, added a controller for each
    // bus and a video device, an address and a target to each NIC.
    let fx = facts_of("fx-rendered");
    assert!(fx.contains(&"cputune vcpupin 2: 4-6".to_string()), "{fx:?}");
    assert!(fx.contains(&"device watchdog: model=i6300esb".to_string()));
}

/// What a hook sees of a running domain: libvirt adds aliases, PCI
/// addresses, default devices, and starts a custom CPU with features
/// and a host-model one as the custom CPU it chose. No drift.
#[test]
fn a_started_or_restored_domain_is_no_drift() {
    let live = facts_of("fxlive-rendered");
    let started = libvirts("fxlive-qemu-start-begin", &live);
    assert_ne!(started, live, "the CPU should have been expanded");
    assert_eq!(compare_facts(&live, &started), Vec::<String>::new());
    // A restore hands the saved definition, as it was defined.
    assert_eq!(libvirts("fxlive-qemu-restore-begin", &live), live);
    let hm = facts_of("fxhm-rendered");
    assert!(hm.contains(&"cpu: mode=host-model".to_string()));
    let got = libvirts("fxhm-qemu-start-begin", &hm);
    assert!(
        got.contains(&"cpu: mode=custom match=exact".to_string()),
        "{got:?}"
    );
    assert_eq!(compare_facts(&hm, &got), Vec::<String>::new());
}

/// Each decided part that `virsh edit` changes is named, with what it
/// was and what it is now.
#[test]
fn edits_of_decided_parts_are_named_line_by_line() {
    let facts = facts_of("fxlive-rendered");
    let live = std::fs::read_to_string(format!(
        "{}/tests/fixtures/domain/fxlive-qemu-start-begin.xml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let cases = [
        (
            "<vcpu placement='static'>2</vcpu>",
            "<vcpu placement='static'>3</vcpu>",
            "vcpus: 2 is now 3",
        ),
        (
            "<memory unit='KiB'>131072</memory>",
            "<memory unit='MiB'>256</memory>",
            "memory KiB: 131072 is now 262144",
        ),
        (
            "<vcpupin vcpu='0' cpuset='1'/>",
            "<vcpupin vcpu='0' cpuset='0'/>",
            "cputune vcpupin 0: 1 is now 0",
        ),
        (
            "<feature policy='disable' name='svm'/>",
            "<feature policy='require' name='svm'/>",
            "cpu feature svm: disable is now require",
        ),
        (
            "<model fallback='forbid'>qemu64</model>",
            "<model fallback='forbid'>kvm64</model>",
            "cpu model: qemu64 is now kvm64",
        ),
        (
            "<boot dev='cdrom'/>",
            "",
            "boot: cdrom network hd is now network hd",
        ),
        (
            "<source bridge='br0'/>",
            "<source bridge='br9'/>",
            "source=br0 model=e1000 is now type=bridge source=br9",
        ),
        (
            "<watchdog model='i6300esb' action='reset'>",
            "<watchdog model='ib700' action='reset'>",
            "device watchdog: model=i6300esb is now model=ib700",
        ),
        (
            "</devices>",
            "<disk type='file' device='disk'><source file='/x.img'/><target dev='vdz'/></disk></devices>",
            "disk vdz: device=disk type=file bus=virtio source=/x.img format=raw was added",
        ),
        (
            "<source file='/var/lib/kvmroll/fxlive-b.img' index='2'/>",
            "<source file='/var/lib/kvmroll/other.img' index='2'/>",
            "source=/var/lib/kvmroll/fxlive-b.img format=raw is now",
        ),
        (
            "<cpu mode='custom' match='exact' check='full'>",
            "<cpu mode='host-passthrough' check='none'>",
            "cpu: mode=custom match=exact is now mode=host-passthrough",
        ),
    ];
    for (from, to, said) in cases {
        assert!(live.contains(from), "the fixture lacks {from}");
        let edited = parse_document(&live.replacen(from, to, 1)).unwrap();
        let drift = compare_facts(&facts, &project(&edited, Some(&device_kinds(&facts))));
        assert!(
            drift.iter().any(|d| d.contains(said)),
            "{from} -> {to}: {drift:?}"
        );
    }
}
