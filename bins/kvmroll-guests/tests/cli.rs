//! `kvmroll-guests` as a user runs it, without libvirt: bad input, and the
//! systemd unit as systemd itself reads it.

use std::path::Path;
use std::process::Command;

fn guests(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kvmroll-guests"))
        .args(args)
        .env_remove("KVMROLL_DB")
        .output()
        .unwrap()
}

#[test]
fn an_unknown_host_or_a_missing_database_is_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("none.db");
    let out = guests(&["--db", db.to_str().unwrap(), "status"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("does not exist"), "{err}");
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
/// needing an upgrade from schema 0, not as what it is.
#[test]
fn an_empty_database_file_is_one_line_and_left_empty() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("k.db");
    std::fs::write(&db, b"").unwrap();
    for args in [&["status"][..], &["--host", "h", "start"]] {
        let mut all = vec!["--db", db.to_str().unwrap()];
        all.extend_from_slice(args);
        let out = guests(&all);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("is empty, not a kvmroll database"), "{err}");
    }
    assert_eq!(std::fs::metadata(&db).unwrap().len(), 0);
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
    ] {
        assert!(text.contains(want), "the unit lacks {want:?}");
    }
    // systemd-analyze verify runs on every unit in tests/e2e/host.rs.
}
