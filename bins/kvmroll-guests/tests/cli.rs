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
    kvmroll_core::open_store(&db, kvmroll_core::OpenMode::ReadWrite).unwrap();
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

#[test]
fn the_unit_orders_and_bounds_the_service() {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../systemd/kvmroll-guests.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    for want in [
        "Type=oneshot",
        "RemainAfterExit=yes",
        "After=network-online.target libvirtd.service",
        "RequiresMountsFor=/var/lib/libvirt/qemu/save",
        "ExecStart=/usr/local/bin/kvmroll-guests start",
        "ExecStop=/usr/local/bin/kvmroll-guests stop",
        "TimeoutStopSec=900",
    ] {
        assert!(text.contains(want), "the unit lacks {want:?}");
    }
    // systemd-analyze verify runs on every unit in tests/e2e/host.rs.
}
