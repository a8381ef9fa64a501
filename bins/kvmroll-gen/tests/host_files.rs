//! Golden files for `kvmroll-gen kickstart`, `udev` and `dracut`, each
//! made from one small cluster; the faults of host files and of the
//! database are one line each.
//!
//! `KVMROLL_UPDATE_GOLDEN=1 cargo test -p kvmroll-gen` rewrites the files.

use kvmroll_core::{Change, Host};
use std::path::{Path, PathBuf};

// The domain schema check is golden.rs's.
#[allow(dead_code)]
mod common;
use common::cluster::{attr, build_db, gen, vm, CONTAINER};

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
