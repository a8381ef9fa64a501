//! Golden files for `kvmroll-gen domain`: each case builds a small cluster in
//! a fresh database, runs the real binary, and diffs its output with
//! `tests/golden/domain/CASE.xml`. Every golden file must also pass libvirt's
//! own schema check, `virt-xml-validate`.
//!
//! `KVMROLL_UPDATE_GOLDEN=1 cargo test -p kvmroll-gen` rewrites the files.

use kvmroll_core::model::NicKind;
use kvmroll_core::sqlite::SqliteStore;
use kvmroll_core::{Change, Disk, Host, Mac, Nic, OpenMode, Scope, Store, Vm};
use std::path::{Path, PathBuf};
use std::process::Command;

const CONTAINER: &str = "vm-container-0-0";

fn vm(name: &str, n: u32) -> Vm {
    Vm {
        id: 0,
        name: name.into(),
        container: Some(CONTAINER.into()),
        memory_mib: 2048,
        vcpus: 2,
        uuid: format!("6f1c2a4e-0d4b-4f57-9a53-{n:012}"),
        cdrom: None,
        virt_type: "kvm".into(),
        disks: vec![Disk::parse(&format!("qcow2:/state/kvm/{name}.qcow2,vda,virtio,36")).unwrap()],
        nics: vec![Nic {
            kind: NicKind::Bridge,
            source: "br0".into(),
            mac: Mac::parse(&format!("52:54:00:00:00:{n:02x}")).unwrap(),
            vlan: None,
            model: "virtio".into(),
        }],
        stale: false,
    }
}

fn attr(host: &str, name: &str, value: &str) -> Change {
    Change::SetAttr {
        scope: Scope::Host(host.into()),
        name: name.into(),
        value: value.into(),
    }
}

/// Each case: its name, the VM rendered, and the changes that make it.
fn cases() -> Vec<(&'static str, Vec<Change>)> {
    let base = |name: &str, n: u32| Change::AddVm(vm(name, n));
    let with = |name: &str, n: u32, f: &dyn Fn(&mut Vm)| {
        let mut v = vm(name, n);
        f(&mut v);
        Change::AddVm(v)
    };
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
        (
            "q35-emulator-spice",
            vec![
                with("q35-emulator-spice", 13, &|v| v.cdrom = Some("/isos/a.iso".into())),
                attr("q35-emulator-spice", "kvm_machine", "q35"),
                attr("q35-emulator-spice", "kvm_emulator", "/usr/libexec/qemu-kvm"),
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
            "escaped-text",
            vec![with("escaped-text", 15, &|v| {
                v.cdrom = Some("/isos/a&b's <new>.iso".into());
                v.disks = vec![Disk::parse("file:/state/kvm/it's&<x>.img,vda,virtio").unwrap()];
            })],
        ),
    ]
}

fn build_db(dir: &Path, changes: &[Change]) -> PathBuf {
    let path = dir.join("kvmroll.db");
    let mut store = SqliteStore::open(&path, OpenMode::ReadWrite).unwrap();
    let mut host = Host::new(CONTAINER, "vm-container");
    host.cpus = 8;
    let mut all = vec![Change::AddHost(host)];
    all.extend(changes.iter().cloned());
    store.update(&mut |_| Ok(all.clone())).unwrap();
    path
}

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/domain")
}

/// A readable diff: the first differing line with context.
fn diff(expected: &str, got: &str) -> String {
    let (e, g): (Vec<&str>, Vec<&str>) = (expected.lines().collect(), got.lines().collect());
    let at = e
        .iter()
        .zip(&g)
        .position(|(a, b)| a != b)
        .unwrap_or(e.len().min(g.len()));
    let mut s = format!("first difference at line {}:\n", at + 1);
    for i in at.saturating_sub(2)..(at + 3) {
        s.push_str(&format!(
            "  expected {:>3}: {}\n",
            i + 1,
            e.get(i).unwrap_or(&"<end>")
        ));
        s.push_str(&format!(
            "  got      {:>3}: {}\n",
            i + 1,
            g.get(i).unwrap_or(&"<end>")
        ));
    }
    s
}

#[test]
fn domain_xml_matches_the_golden_files() {
    let update = std::env::var_os("KVMROLL_UPDATE_GOLDEN").is_some();
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
        let file = golden_dir().join(format!("{case}.xml"));
        if update {
            std::fs::create_dir_all(golden_dir()).unwrap();
            std::fs::write(&file, &got).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&file).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (KVMROLL_UPDATE_GOLDEN=1 writes it)",
                file.display()
            )
        });
        if expected != got {
            failures.push(format!("{case}: {}", diff(&expected, &got)));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_golden_file_passes_virt_xml_validate() {
    let have = Command::new("virt-xml-validate")
        .arg("--help")
        .output()
        .is_ok()
        && Command::new("xmllint").arg("--version").output().is_ok();
    if !have {
        assert!(
            std::env::var_os("KVMROLL_E2E").is_none(),
            "virt-xml-validate (libvirt-clients) and xmllint (libxml2-utils) are required here"
        );
        eprintln!("skipped: virt-xml-validate or xmllint is not installed (scripts/deps.sh installs them)");
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
        let out = Command::new("virt-xml-validate")
            .arg(&f)
            .arg("domain")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}{}",
            f.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
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
