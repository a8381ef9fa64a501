//! Golden files for VMs carried over from Rocks: the small cluster of
//! `bins/kvmroll/tests/fixtures/rocks/` (a `rocks dump` and a `rocks list
//! host vm showdisks=1`, written for the tests in the format the Rocks code
//! writes) is imported into a fresh database, with fixed UUIDs, and each
//! VM's `kvmroll-gen domain VM` is diffed with `tests/golden/rocks/VM.xml`
//! and checked by libvirt's schema.
//!
//! `KVMROLL_UPDATE_GOLDEN=1 cargo test -p kvmroll-gen` rewrites the files.

use kvmroll_core::rocksdump;
use kvmroll_core::rocksimport::{self, Options};
use kvmroll_core::sqlite::SqliteStore;
use kvmroll_core::OpenMode;
use std::path::{Path, PathBuf};
use std::process::Command;

mod common;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../kvmroll/tests/fixtures/rocks")
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/rocks")
}

#[test]
fn imported_rocks_vms_render_as_the_golden_files() {
    let read = |name: &str| std::fs::read(fixtures().join(name)).unwrap();
    let dump = rocksdump::parse(&read("cluster.dump"));
    assert!(dump.unreadable.is_empty(), "{:?}", dump.unreadable);
    let rows = rocksdump::parse_vm_list(&read("vm-list.txt")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kvmroll.db");
    let mut store = SqliteStore::open(&db, OpenMode::Create).unwrap();
    let mut n = 0;
    let mut uuid = || {
        n += 1;
        format!("7d3c0f52-1b8e-4a6d-9c21-{n:012}")
    };
    let report = rocksimport::import(
        &mut store,
        &dump,
        Some(&rows),
        Options::default(),
        &mut uuid,
    )
    .unwrap();
    let names: Vec<&str> = report.vms.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "compute-vm-0-0-0",
            "hosted-vm-0-0-0",
            "hosted-vm-0-0-1",
            "hosted-vm-0-1-0"
        ]
    );
    let mut failures = Vec::new();
    for vm in &names {
        let out = Command::new(env!("CARGO_BIN_EXE_kvmroll-gen"))
            .arg("--db")
            .arg(&db)
            .args(["domain", vm])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{vm}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let got = String::from_utf8(out.stdout).unwrap();
        if let Some(d) = common::check(&golden_dir().join(format!("{vm}.xml")), &got) {
            failures.push(format!("{vm}: {d}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // No golden file outlives its VM.
    let mut files: Vec<String> = std::fs::read_dir(golden_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    let wanted: Vec<String> = names.iter().map(|n| format!("{n}.xml")).collect();
    assert_eq!(files, wanted);
    if common::have_validator() {
        for f in &wanted {
            common::validate(&golden_dir().join(f));
        }
    }
}
