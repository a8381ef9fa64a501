//! `kvmroll-guests` as a user runs it, without libvirt: bad input, and the
//! systemd unit as systemd itself reads it.

use std::path::{Path, PathBuf};
use std::process::Command;

fn guests(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kvmroll-guests"))
        .args(args)
        .env_remove("KVMROLL_DB")
        .output()
        .unwrap()
}

/// libvirt's test driver: never the machine's libvirtd.
const TEST_URI: &str = "test:///default";

/// A database that does not answer (missing here) is a warning: the
/// service decides from libvirt's definitions. A host the database does not
/// know is an error: it answered.
#[test]
fn a_missing_database_is_a_warning_and_an_unknown_host_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("none.db");
    let out = guests(&[
        "--db",
        db.to_str().unwrap(),
        "--libvirt-uri",
        TEST_URI,
        "status",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("the kvmroll database is unreachable") && err.contains("does not exist"),
        "{err}"
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["known_from"], "definitions");
    assert!(!db.exists());

    // A real database without this host.
    kvmroll_core::init_store(&db).unwrap();
    let out = guests(&["--db", db.to_str().unwrap(), "--host", "nosuch", "stop"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("host \"nosuch\" is not in the kvmroll database"),
        "{err}"
    );
    let out = guests(&["--db", db.to_str().unwrap(), "restart"]);
    assert_eq!(out.status.code(), Some(2));
}

/// Regression: an empty (0-byte) database file was read as a database
/// needing an upgrade from schema 0, not as what it is. It is said, and
/// left empty; the VMs are not held back for it.
#[test]
fn an_empty_database_file_is_said_and_left_empty() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("k.db");
    std::fs::write(&db, b"").unwrap();
    let state = dir.path().join("state");
    let out = guests(&[
        "--db",
        db.to_str().unwrap(),
        "--libvirt-uri",
        TEST_URI,
        "--state-dir",
        state.to_str().unwrap(),
        "status",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("is empty, not a kvmroll database"), "{err}");
    assert_eq!(std::fs::metadata(&db).unwrap().len(), 0);
}

/// The database of a container `c0` with VMs `a` (autostart, and the
/// container saves for 600 s) and `b`, and libvirt's test driver holding
/// their definitions (as kvmroll rendered them) and one defined by hand.
fn cluster_and_definitions(dir: &Path) -> (PathBuf, String) {
    use kvmroll_core::{Change, Host, Scope, Vm};
    let db = dir.join("k.db");
    let mut store = kvmroll_core::open_store(&db, kvmroll_core::OpenMode::Create).unwrap();
    let vm = |name: &str, n: u8| Vm {
        id: 0,
        name: name.into(),
        container: Some("c0".into()),
        memory_mib: 64,
        vcpus: 1,
        uuid: format!("6f1c2a4e-0d4b-4f57-9a53-0000000000{n:02}"),
        cdrom: None,
        virt_type: "kvm".into(),
        disks: vec![],
        nics: vec![],
        stale: false,
        generation: 0,
    };
    let plan = store
        .update(&mut |_| {
            Ok(vec![
                Change::AddHost(Host::new("c0", "vm-container")),
                Change::AddVm(vm("a", 1)),
                Change::AddVm(vm("b", 2)),
                Change::SetAttr {
                    scope: Scope::Host("a".into()),
                    name: "kvm_autostart".into(),
                    value: "true".into(),
                },
                Change::SetAttr {
                    scope: Scope::Host("c0".into()),
                    name: "kvm_guests_save_timeout".into(),
                    value: "600".into(),
                },
            ])
        })
        .unwrap();
    let mut node = String::from("<node>\n");
    for name in ["a", "b"] {
        let xml = plan.changed[name].clone().unwrap();
        assert!(xml.contains("kvm_guests_save_timeout"), "{xml}");
        node.push_str(&xml.replace("type='kvm'", "type='test'"));
    }
    node.push_str("<domain type='test'><name>hand</name><memory>65536</memory><os><type>hvm</type></os></domain>\n</node>\n");
    let file = dir.join("node.xml");
    std::fs::write(&file, node).unwrap();
    (db, format!("test://{}", file.display()))
}

fn status(db: &Path, uri: &str) -> serde_json::Value {
    let out = guests(&[
        "--db",
        db.to_str().unwrap(),
        "--host",
        "c0",
        "--libvirt-uri",
        uri,
        "status",
        "--json",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Which VMs come back at boot: the database says, or, when it does not
/// answer, the kvmroll metadata of libvirt's definitions says the same.
#[test]
fn without_the_database_the_definitions_say_which_vms_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let (db, uri) = cluster_and_definitions(dir.path());
    let autostart = |json: &serde_json::Value| -> Vec<(String, bool)> {
        json["vms"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| {
                (
                    v["name"].as_str().unwrap().to_string(),
                    v["autostart"].as_bool().unwrap(),
                )
            })
            .collect()
    };
    let from_db = status(&db, &uri);
    assert_eq!(from_db["known_from"], "database");
    let gone = dir.path().join("gone.db");
    let from_libvirt = status(&gone, &uri);
    assert_eq!(from_libvirt["known_from"], "definitions");
    let want = vec![("a".to_string(), true), ("b".to_string(), false)];
    assert_eq!(autostart(&from_db), want);
    assert_eq!(autostart(&from_libvirt), want);
}

#[test]
fn the_unit_orders_and_bounds_the_service() {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../systemd/kvmroll-guests.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    for want in [
        "Type=oneshot",
        "RemainAfterExit=yes",
        "After=network-online.target libvirtd.service",
        "RequiresMountsFor=/var/lib/libvirt/qemu/save",
        "ExecStart=/usr/bin/kvmroll-guests start",
        "ExecStop=/usr/bin/kvmroll-guests stop",
        "TimeoutStopSec=900",
        "NotifyAccess=all",
    ] {
        assert!(text.contains(want), "the unit lacks {want:?}");
    }
    // systemd-analyze verify runs on every unit in tests/e2e/host.rs.
}
