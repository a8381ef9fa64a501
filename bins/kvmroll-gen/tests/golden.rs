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

mod common;

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
        generation: 0,
    }
}

fn attr(host: &str, name: &str, value: &str) -> Change {
    Change::SetAttr {
        scope: Scope::Host(host.into()),
        name: name.into(),
        value: value.into(),
    }
}

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

fn build_db(dir: &Path, changes: &[Change]) -> PathBuf {
    let path = dir.join("kvmroll.db");
    let mut store = SqliteStore::open(&path, OpenMode::Create).unwrap();
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

/// The cluster the host-file golden files are made from: a container whose
/// two VMs pass PCI devices through, a plain compute host, and an attribute
/// full of what XML and shells must escape.
fn host_files_db(dir: &Path) -> PathBuf {
    let hostdev = |bus: &str, function: &str| {
        format!(
            "<hostdev mode='subsystem' type='pci' managed='yes'>\n  <source>\n    <address domain='0x0000' bus='{bus}' slot='0x00' function='{function}'/>\n  </source>\n</hostdev>"
        )
    };
    let changes = vec![
        Change::AddHost(Host::new("compute-0-0", "compute")),
        Change::AddHost(Host {
            name: "frontend-0".into(),
            ..Host::new("frontend-0", "frontend")
        }),
        Change::AddVm(vm("gpu-vm-0", 1)),
        Change::AddVm(vm("gpu-vm-1", 2)),
        attr("gpu-vm-0", "kvm_device_0", &hostdev("0x03", "0x0")),
        attr("gpu-vm-0", "kvm_device_1", &hostdev("0x03", "0x1")),
        attr("gpu-vm-1", "kvm_device_0", &hostdev("0x81", "0x0")),
        attr(CONTAINER, "site_note", NASTY),
    ];
    build_db(dir, &changes)
}

const NASTY: &str = "a <b> & \"c\" 'd'\n</post><package>evil</package> $HOME `id`";

fn gen(db: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kvmroll-gen"))
        .arg("--db")
        .arg(db)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn host_files_match_the_golden_files() {
    let dir = tempfile::tempdir().unwrap();
    let db = host_files_db(dir.path());
    let gold = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/host");
    let cases: [(&str, Vec<&str>); 5] = [
        ("kickstart-kvm.xml", vec!["kickstart", CONTAINER]),
        (
            "kickstart-kvm-tarball.xml",
            vec![
                "kickstart",
                CONTAINER,
                "--dist-url",
                "http://frontend-0/install/kvmroll/kvmroll.tar.gz",
            ],
        ),
        ("kickstart-no-kvm.xml", vec!["kickstart", "compute-0-0"]),
        ("udev.rules", vec!["udev", CONTAINER]),
        ("dracut.conf", vec!["dracut", CONTAINER]),
    ];
    let mut failures = Vec::new();
    for (file, args) in cases {
        let out = gen(&db, &args);
        assert!(
            out.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let got = String::from_utf8(out.stdout).unwrap();
        if let Some(d) = common::check(&gold.join(file), &got) {
            failures.push(format!("{file}: {d}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn kickstart_text_comes_back_unchanged_when_parsed() {
    let dir = tempfile::tempdir().unwrap();
    let db = host_files_db(dir.path());
    let out = gen(&db, &["kickstart", CONTAINER]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let doc = kvmroll_core::xml::parse_document(&text).unwrap();
    assert_eq!(doc.name, "kickstart");
    let post = &doc.child("post").unwrap().text;
    // The attribute, written to its file by a quoted here-document.
    let marker = kvmroll_core::hostfiles::HEREDOC_END;
    let want =
        format!("cat > '/etc/kvmroll/attributes/site_note' <<'{marker}'\n{NASTY}\n{marker}\n");
    assert!(post.contains(&want), "{post}");
    // Exactly the packages, none smuggled in by the attribute.
    let packages: Vec<&str> = doc
        .children
        .iter()
        .filter(|c| c.name == "package")
        .map(|c| c.text.as_str())
        .collect();
    assert_eq!(
        packages,
        [
            "qemu-kvm",
            "libvirt",
            "libvirt-client",
            "bridge-utils",
            "dracut",
            "kvmroll"
        ]
    );
    // Each VM's rendered domain, whole.
    for vm in ["gpu-vm-0", "gpu-vm-1"] {
        let xml = gen(&db, &["domain", vm]).stdout;
        let xml = String::from_utf8(xml).unwrap();
        assert!(
            post.contains(&format!("<<'{marker}'\n{xml}{marker}\n")),
            "{vm}"
        );
    }
    let none = gen(&db, &["kickstart", "compute-0-0"]);
    let doc = kvmroll_core::xml::parse_document(&String::from_utf8(none.stdout).unwrap()).unwrap();
    assert!(doc.child("post").is_none() && doc.child("package").is_none());
}

#[test]
fn host_file_faults_are_one_line_each() {
    let dir = tempfile::tempdir().unwrap();
    let db = host_files_db(dir.path());
    for (args, want) in [
        (vec!["udev", "nosuch"], "unknown host \"nosuch\""),
        (vec!["kickstart", "gpu-vm-0"], "is a VM"),
    ] {
        let out = gen(&db, &args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    // The same PCI address twice, and a hostdev without an address, stored
    // behind kvmroll's back.
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute(
        "INSERT INTO attributes (scope, target, name, value) VALUES ('host', 'gpu-vm-1', 'kvm_device_1',
         '<hostdev mode=''subsystem'' type=''pci''><source><address bus=''0x03'' slot=''0x00'' function=''0x1''/></source></hostdev>')",
        [],
    )
    .unwrap();
    for sub in ["udev", "dracut", "kickstart"] {
        let out = gen(&db, &[sub, CONTAINER]);
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("PCI device 0000:03:00.1 is passed through twice"),
            "{err}"
        );
        assert!(out.stdout.is_empty());
    }
    conn.execute(
        "UPDATE attributes SET value = '<hostdev mode=''subsystem'' type=''pci''/>' WHERE target = 'gpu-vm-1' AND name = 'kvm_device_1'",
        [],
    )
    .unwrap();
    let out = gen(&db, &["udev", CONTAINER]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("PCI hostdev without"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Sets global attributes straight in the database, as `kvmroll attr set
/// --global` would.
fn set_global(db: &Path, attrs: &[(&str, &str)]) {
    let conn = rusqlite::Connection::open(db).unwrap();
    for (name, value) in attrs {
        conn.execute(
            "INSERT OR REPLACE INTO attributes (scope, target, name, value) VALUES ('global', '', ?1, ?2)",
            [name, value],
        )
        .unwrap();
    }
}

#[test]
fn a_cluster_kickstart_carries_the_credential_only_from_a_private_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let db = host_files_db(dir.path());
    let pass = dir.path().join("container.pgpass");
    std::fs::write(&pass, "frontend-0:5432:kvmroll:kvmroll_container:s3cret\n").unwrap();
    std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o644)).unwrap();
    let url = "postgresql://kvmroll_container@frontend-0/kvmroll?sslmode=require";
    set_global(&db, &[("kvmroll_db_url", url)]);
    // Not allowed: the URL and the passfile's place, never the password.
    let out = gen(&db, &["kickstart", CONTAINER]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains(&format!("db = {}", url.replace('&', "&amp;"))),
        "{text}"
    );
    assert!(!text.contains("s3cret"));

    // Allowed, but the file is readable by others: one line, no kickstart.
    let pass_text = pass.display().to_string();
    set_global(
        &db,
        &[
            ("kvmroll_db_credential_in_kickstart", "true"),
            ("kvmroll_db_passfile", &pass_text),
        ],
    );
    let out = gen(&db, &["kickstart", CONTAINER]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("can be read by group or others"), "{err}");
    assert!(out.stdout.is_empty());

    std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = gen(&db, &["kickstart", CONTAINER]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let doc = kvmroll_core::xml::parse_document(&text).unwrap();
    let post = &doc.child("post").unwrap().text;
    assert!(
        post.contains("(umask 077\ncat > '/etc/kvmroll/db.pgpass'"),
        "{post}"
    );
    assert!(post.contains(":s3cret\n"), "{post}");

    // A password inside the URL is refused outright.
    set_global(
        &db,
        &[(
            "kvmroll_db_url",
            "postgresql://kvmroll_container:s3cret@frontend-0/kvmroll",
        )],
    );
    let out = gen(&db, &["kickstart", CONTAINER]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("holds a password"));
}

/// Regression: an empty (0-byte) database file was read as a database
/// needing an upgrade from schema 0; a missing one must not be made.
#[test]
fn an_empty_or_missing_database_is_one_line_and_left_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.db");
    std::fs::write(&empty, b"").unwrap();
    let missing = dir.path().join("typo/k.db");
    for (db, want) in [
        (&empty, "is empty, not a kvmroll database"),
        (&missing, "does not exist; `kvmroll db init` creates it"),
    ] {
        let out = gen(db, &["domain", "--all"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(want), "{err}");
    }
    assert_eq!(std::fs::metadata(&empty).unwrap().len(), 0);
    assert!(!dir.path().join("typo").exists());
}
