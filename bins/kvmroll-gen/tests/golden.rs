//! Golden files for `kvmroll-gen domain`: each case builds a small cluster in
//! a fresh database, runs the real binary, and diffs its output with
//! `tests/golden/domain/CASE.xml`. Every golden file must also pass libvirt's
//! own schema check, `virt-xml-validate`.
//!
//! `KVMROLL_UPDATE_GOLDEN=1 cargo test -p kvmroll-gen` rewrites the files.

use kvmroll_core::model::NicKind;
use kvmroll_core::{Change, Disk, Mac, Nic, Scope, Vm};
use std::path::PathBuf;
use std::process::Command;

mod common;
use common::cluster::{attr, build_db, vm, CONTAINER};

/// A VM as [`vm`] makes it.
fn base(name: &str, n: u32) -> Change {
    Change::AddVm(vm(name, n))
}

/// A VM as [`vm`] makes it, then changed by `f`.
fn with(name: &str, n: u32, f: &dyn Fn(&mut Vm)) -> Change {
    let mut v = vm(name, n);
    f(&mut v);
    Change::AddVm(v)
}

/// Each case: its name, the VM rendered, and the changes that make it.
fn cases() -> Vec<(&'static str, Vec<Change>)> {
    [cpu_cases(), device_cases(), machine_cases()].concat()
}

/// CPU models and pinning.
fn cpu_cases() -> Vec<(&'static str, Vec<Change>)> {
    vec![
        ("plain", vec![base("plain", 1)]),
        ("cpu-host-model", vec![base("cpu-host-model", 2), attr("cpu-host-model", "cpu_mode", "host-model")]),
        (
            "cpu-exact",
            vec![
                base("cpu-exact", 3),
                attr("cpu-exact", "cpu_mode", "exact: <model fallback='allow'>Haswell</model><feature policy='disable' name='hle'/>"),
            ],
        ),
        (
            "cpu-passthrough-inner",
            vec![
                base("cpu-passthrough-inner", 4),
                attr("cpu-passthrough-inner", "cpu_mode", "host-passthrough: <feature policy='disable' name='arch-capabilities'/>"),
            ],
        ),
        ("pin-all", vec![base("pin-all", 5), attr("pin-all", "kvm_cpu_pinning", "pin_all")]),
        (
            "pin-auto-numa",
            vec![
                attr(CONTAINER, "numa_cells", "0-3;4-7"),
                base("pin-auto-first", 6),
                attr("pin-auto-first", "kvm_cpu_pinning", "pin_auto"),
                with("pin-auto-numa", 7, &|v| v.vcpus = 3),
                attr("pin-auto-numa", "kvm_cpu_pinning", "pin_auto"),
            ],
        ),
        (
            "pin-fragment",
            vec![
                base("pin-fragment", 8),
                // Stored as Rocks once did: escaped. It is unescaped once.
                attr(
                    "pin-fragment",
                    "kvm_cpu_pinning",
                    "&lt;cputune&gt;&lt;vcpupin vcpu='0' cpuset='6'/&gt;&lt;vcpupin vcpu='1' cpuset='7'/&gt;&lt;emulatorpin cpuset='5'/&gt;&lt;/cputune&gt;",
                ),
            ],
        ),
    ]
}

/// Devices, cdroms, disks and NICs.
fn device_cases() -> Vec<(&'static str, Vec<Change>)> {
    vec![
        (
            "devices",
            vec![
                base("devices", 9),
                attr(
                    "devices",
                    "kvm_device_0",
                    "<hostdev mode='subsystem' type='pci' managed='yes'>\n  <source>\n    <address domain='0x0000' bus='0x03' slot='0x00' function='0x0'/>\n  </source>\n</hostdev>",
                ),
                attr("devices", "kvm_device_1", "<rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>"),
            ],
        ),
        ("cdrom-file", vec![with("cdrom-file", 10, &|v| v.cdrom = Some("/isos/rescue.iso".into()))]),
        ("cdrom-block", vec![with("cdrom-block", 11, &|v| v.cdrom = Some("/dev/sr0".into()))]),
        (
            "disks-and-nics",
            vec![with("disks-and-nics", 12, &|v| {
                v.disks = vec![
                    Disk::parse("file:/state/kvm/a.img,vda,virtio,10").unwrap(),
                    Disk::parse("raw:/state/kvm/b.raw,vdb,virtio").unwrap(),
                    Disk::parse("block:/dev/vg0/data,sda,scsi").unwrap(),
                    Disk::parse("qcow2:/state/kvm/c.qcow2,hda,ide,4").unwrap(),
                ];
                v.nics.push(Nic {
                    kind: NicKind::Bridge,
                    source: "ovsbr0".into(),
                    mac: Mac::parse("52:54:00:00:01:0c").unwrap(),
                    vlan: Some(42),
                    model: "e1000".into(),
                });
                v.nics.push(Nic {
                    kind: NicKind::Direct,
                    source: "eth1".into(),
                    mac: Mac::parse("52:54:00:00:02:0c").unwrap(),
                    vlan: Some(7),
                    model: "virtio".into(),
                });
                v.nics.push(Nic {
                    kind: NicKind::Direct,
                    source: "eth2".into(),
                    mac: Mac::parse("52:54:00:00:03:0c").unwrap(),
                    vlan: None,
                    model: "virtio".into(),
                });
                v.cdrom = Some("/isos/install.iso".into());
            })],
        ),
    ]
}

/// Machine types, emulators, graphics, the settings kept in the
/// definition, and escaping.
fn machine_cases() -> Vec<(&'static str, Vec<Change>)> {
    vec![
        (
            "q35-emulator-spice",
            vec![
                with("q35-emulator-spice", 13, &|v| {
                    v.cdrom = Some("/isos/a.iso".into())
                }),
                attr("q35-emulator-spice", "kvm_machine", "q35"),
                attr(
                    "q35-emulator-spice",
                    "kvm_emulator",
                    "/usr/libexec/qemu-kvm",
                ),
                attr("q35-emulator-spice", "kvm_graphics", "spice"),
            ],
        ),
        (
            "qemu-no-graphics",
            vec![
                with("qemu-no-graphics", 14, &|v| {
                    v.virt_type = "qemu".into();
                    v.disks.clear();
                    v.nics.clear();
                    v.memory_mib = 256;
                    v.vcpus = 1;
                }),
                attr("qemu-no-graphics", "kvm_graphics", "none"),
            ],
        ),
        (
            // What the container uses without the database, in the
            // definition: the VM's settings, the container's save limits,
            // each disk's size; resolved, wherever they were set.
            "settings",
            vec![
                with("settings", 16, &|v| {
                    v.disks
                        .push(Disk::parse("raw:/state/kvm/settings-b.img,vdb,virtio,100").unwrap());
                }),
                attr("settings", "kvm_autostart", "yes"),
                attr("settings", "kvm_strict_definition", "true"),
                attr("settings", "kvm_require_database", "false"),
                attr("settings", "kvm_db_connect_timeout", "3"),
                attr("settings", "kvm_plugin_timeout_preboot", "20"),
                attr("settings", "kvm_disk_roots", "/state/kvm"),
                attr(CONTAINER, "kvm_guests_save_timeout", "600"),
                attr(CONTAINER, "kvm_guests_on_timeout", "destroy"),
                // The VM's own has no say: the service reads the container's.
                attr("settings", "kvm_guests_parallel", "9"),
                Change::SetAttr {
                    scope: Scope::Appliance("vm-container".into()),
                    name: "kvm_guests_parallel".into(),
                    value: "2".into(),
                },
            ],
        ),
        (
            "escaped-text",
            vec![with("escaped-text", 15, &|v| {
                v.cdrom = Some("/isos/a&b's <new>.iso".into());
                v.disks = vec![Disk::parse("file:/state/kvm/it's&<x>.img,vda,virtio").unwrap()];
            })],
        ),
    ]
}

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/domain")
}

#[test]
fn domain_xml_matches_the_golden_files() {
    let mut failures = Vec::new();
    for (case, changes) in cases() {
        let dir = tempfile::tempdir().unwrap();
        let db = build_db(dir.path(), &changes);
        let out = Command::new(env!("CARGO_BIN_EXE_kvmroll-gen"))
            .args([
                "--db".as_ref(),
                db.as_os_str(),
                "domain".as_ref(),
                case.as_ref(),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{case}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let got = String::from_utf8(out.stdout).unwrap();
        if let Some(d) = common::check(&golden_dir().join(format!("{case}.xml")), &got) {
            failures.push(format!("{case}: {d}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_golden_file_passes_virt_xml_validate() {
    if !common::have_validator() {
        return;
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(golden_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "xml"))
        .collect();
    files.sort();
    assert_eq!(files.len(), cases().len(), "one golden file per case");
    for f in files {
        common::validate(&f);
    }
}

#[test]
fn all_prints_every_vm_and_reports_a_broken_one() {
    let dir = tempfile::tempdir().unwrap();
    let db = build_db(
        dir.path(),
        &[Change::AddVm(vm("a", 1)), Change::AddVm(vm("b", 2))],
    );
    let out = Command::new(env!("CARGO_BIN_EXE_kvmroll-gen"))
        .args([
            "--db".as_ref(),
            db.as_os_str(),
            "domain".as_ref(),
            "--all".as_ref(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.matches("<domain type='kvm'>").count(), 2);
    assert!(text.contains("<name>a</name>") && text.contains("<name>b</name>"));

    // A device gap cannot be stored through kvmroll (the change is refused);
    // write one behind its back, as an old import might have.
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute(
            "INSERT INTO attributes (scope, target, name, value)
             VALUES ('host', 'b', 'kvm_device_1', '<watchdog model=''i6300esb''/>')",
            [],
        )
        .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kvmroll-gen"))
        .args([
            "--db".as_ref(),
            db.as_os_str(),
            "domain".as_ref(),
            "--all".as_ref(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("kvm_device_1 is set but kvm_device_0 is not"),
        "{err}"
    );
    assert_eq!(
        String::from_utf8(out.stdout)
            .unwrap()
            .matches("<domain ")
            .count(),
        1
    );
}
