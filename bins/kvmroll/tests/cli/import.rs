//! `kvmroll import rocks`, run as a user would: the dump of a small Rocks
//! cluster written for these tests (`fixtures/rocks/cluster.dump`, in the
//! format the Rocks code writes, with `fixtures/rocks/vm-list.txt` from
//! `rocks list host vm showdisks=1`) is imported; malformed lines are
//! refused with their numbers and leave the database byte for byte as it
//! was; values round-trip exactly. The rendered domains of the imported
//! VMs are pinned by kvmroll-gen's golden files (`tests/rocks_import.rs`).

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::common::{assert_refused, kvmroll_at};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/rocks")
        .join(name)
}

/// The fixture dump's text (bytes: Rocks escapes each byte of a UTF-8
/// character on its own, which is not UTF-8 as a whole).
fn dump_bytes() -> Vec<u8> {
    std::fs::read(fixture("cluster.dump")).unwrap()
}

struct Db {
    dir: tempfile::TempDir,
    path: PathBuf,
}

impl Db {
    fn new() -> Db {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kvmroll.db");
        Db { dir, path }
    }

    fn run(&self, args: &[&str]) -> Output {
        kvmroll_at(&self.path, args)
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "kvmroll {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Writes `text` as a dump file in the test's folder.
    fn dump(&self, name: &str, text: &[u8]) -> String {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    }

    fn import(&self, dump: &str, more: &[&str]) -> Output {
        let mut args = vec!["import", "rocks", dump];
        args.extend_from_slice(more);
        self.run(&args)
    }

    /// An import that must succeed; what it printed.
    fn imported(&self, dump: &str, more: &[&str]) -> String {
        let out = self.import(dump, more);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// The database and its write-ahead log, byte for byte.
    fn bytes(&self) -> Vec<u8> {
        let mut b = std::fs::read(&self.path).unwrap();
        if let Ok(w) = std::fs::read(format!("{}-wal", self.path.display())) {
            b.extend(w);
        }
        b
    }
}

/// The fixture with the first line holding `from` changed to hold `to`,
/// and that line's number.
fn with_line_changed(from: &str, to: &str) -> (Vec<u8>, usize) {
    let text = dump_bytes();
    let lines: Vec<&[u8]> = text.split(|&b| b == b'\n').collect();
    let at = lines
        .iter()
        .position(|l| l.windows(from.len()).any(|w| w == from.as_bytes()))
        .unwrap_or_else(|| panic!("{from:?} is not in the fixture"));
    let changed = String::from_utf8(lines[at].to_vec())
        .unwrap()
        .replacen(from, to, 1);
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        if i > 0 {
            out.push(b'\n');
        }
        out.extend_from_slice(if i == at { changed.as_bytes() } else { l });
    }
    (out, at + 1)
}

#[test]
fn the_rocks_fixture_imports_with_its_vms() {
    let db = Db::new();
    let said = db.imported(
        fixture("cluster.dump").to_str().unwrap(),
        &["--vm-list", fixture("vm-list.txt").to_str().unwrap()],
    );
    for line in [
        "1 appliance, 5 hosts (the frontend is hpc-fe), 4 VMs, 20 attributes (7 global, 1 os, 2 appliance, 10 host)",
        "passed over 34 lines of verbs that are not kvmroll's: add firewall 1, add host key 1, add host route 1, add network 3, add route 1, run reconfigure 1, set host interface ip 12, set host interface name 12, set host roll 2",
        "passed over 2 attributes NAME_old beside its NAME",
        "disks outside kvm_disk_roots, taken as vm add --force takes them (used as they are, never made): compute-vm-0-0-0 /export/vm-images/compute-vm-0-0-0.img",
        "libvirt is untouched",
    ] {
        assert!(said.contains(line), "{line:?} not in:\n{said}");
    }
    let hosts: serde_json::Value =
        serde_json::from_str(&db.ok(&["host", "list", "--json"])).unwrap();
    let row = |name: &str| {
        hosts
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["name"] == name)
            .unwrap_or_else(|| panic!("no host {name}"))
            .clone()
    };
    // Memberships name appliances through the dump's `add appliance` lines.
    assert_eq!(row("nas-0-0")["appliance"], "nas");
    assert_eq!(row("hpc-fe")["appliance"], "frontend");
    assert_eq!(row("vm-container-0-1")["rank"], 1);
    assert_eq!(row("vm-container-0-1")["cpus"], 16);
    assert_eq!(row("hosted-vm-0-1-0")["appliance"], "hosted-vm");
    assert_eq!(row("hosted-vm-0-1-0")["rack"], 1);
    assert_eq!(row("hosted-vm-0-1-0")["boot_action"], "install");
    // The compute node with kvm true holds a VM; the frontend's own
    // attributes reached it from `localhost`.
    assert!(db
        .ok(&["host", "show", "compute-0-0"])
        .contains("vms:          compute-vm-0-0-0"));
    assert_eq!(db.ok(&["attr", "get", "hpc-fe", "kvm"]), "true\n");
    let vm = db.ok(&["vm", "show", "hosted-vm-0-0-1"]);
    for line in [
        "container: vm-container-0-0",
        "memory:    4096 MiB",
        "vcpus:     2",
        "disk:      file:/state/partition1/kvm/disks/hosted-vm-0-0-1.vda,vda,virtio,36",
        "nic:       direct:peth0,mac=52:54:00:00:01:03,vlan=7,model=virtio",
        "nic:       bridge:eth0,mac=52:54:00:00:01:02,model=virtio",
    ] {
        assert!(vm.contains(line), "{line:?} not in:\n{vm}");
    }
    assert!(db
        .ok(&["vm", "show", "hosted-vm-0-0-0"])
        .contains("cdrom:     /export/isos/CentOS-7-x86_64-Minimal-2009.iso"));
    assert_eq!(
        db.ok(&["attr", "get", "hosted-vm-0-0-1", "kvm_cpu_pinning"]),
        "<cputune>\n    <vcpupin vcpu=\"0\" cpuset=\"4\"/>\n    <vcpupin vcpu=\"1\" cpuset=\"5\"/>\n  </cputune>\n"
    );
    // Rocks-escaped XML is unescaped once.
    assert_eq!(
        db.ok(&["attr", "get", "compute-vm-0-0-0", "kvm_device_1"]),
        "<watchdog model='i6300esb' action='reset'/>\n"
    );
    assert_eq!(
        db.ok(&["attr", "get", "hosted-vm-0-0-0", "kvm_autostart"]),
        "true\n"
    );
    // NAME_old beside NAME stays behind.
    assert_eq!(
        db.run(&["attr", "get", "hosted-vm-0-1-0", "cpu_mode_old"])
            .status
            .code(),
        Some(1)
    );
}

#[test]
fn a_value_full_of_shell_hostile_characters_and_newlines_round_trips_exactly() {
    let db = Db::new();
    db.imported(fixture("cluster.dump").to_str().unwrap(), &[]);
    let expected = std::fs::read_to_string(fixture("hostile-value.txt")).unwrap();
    assert_eq!(
        db.ok(&["attr", "get", "nas-0-0", "site_note"]),
        format!("{expected}\n")
    );

    // Every byte quote() escapes, in a value of its own.
    let value: String = (1u8..0x80)
        .map(char::from)
        .chain("\n\u{e9}\u{4e2d}\r\n\n".chars())
        .collect();
    let mut line = b"/opt/rocks/bin/rocks add attr site_motd ".to_vec();
    for &b in value.as_bytes() {
        // rocksclusters/core dump/__init__.py quote(), byte by byte.
        if !(b.is_ascii_alphanumeric() || b"@%^-_=+:,./".contains(&b)) {
            line.push(b'\\');
        }
        line.push(b);
    }
    line.push(b'\n');
    let other = Db::new();
    let dump = other.dump("motd.dump", &line);
    other.imported(&dump, &[]);
    // A global attribute, read through a host that resolves it.
    other.ok(&["host", "add", "h"]);
    assert_eq!(
        other.ok(&["attr", "get", "h", "site_motd"]),
        format!("{value}\n")
    );
}

#[test]
fn malformed_lines_are_refused_with_their_numbers_and_change_nothing() {
    let db = Db::new();
    db.ok(&["db", "init"]);
    db.ok(&["attr", "set", "--global", "libvirt_uri", "test:///default"]);
    let before = db.bytes();
    let cases = [
        (
            "physnode='compute-0-0'",
            "physnode='compute-0-0",
            "a ' quote is not closed on its line",
        ),
        (
            "set host vm hosted-vm-0-0-0 ",
            "set host vm hosted-vm-9-9-9 ",
            "(VM hosted-vm-9-9-9): set host vm names hosted-vm-9-9-9, which has no \"add host\" line",
        ),
        (
            "hosted-vm-0-0-1.vda,vda,w'",
            "hosted-vm-0-0-1.vda'",
            "expected TYPE:PATH,DEV,BUS (three comma-separated fields), found 1",
        ),
    ];
    for (from, to, why) in cases {
        let (text, line) = with_line_changed(from, to);
        let dump = db.dump("bad.dump", &text);
        for extra in [&[][..], &["--dry-run"][..]] {
            let out = db.import(&dump, extra);
            assert_refused(&out, &format!("line {line}"));
            assert_refused(&out, why);
            assert_eq!(db.bytes(), before, "{from} -> {to}: the database changed");
        }
    }
    // Into no database at all: none is made.
    let fresh = Db::new();
    let (text, _) = with_line_changed("disksize='20'", "disksize='twenty'");
    let out = fresh.import(&fresh.dump("bad.dump", &text), &[]);
    assert_refused(&out, "disksize=\"twenty\" is not a whole number");
    assert!(!fresh.path.exists());
}

#[test]
fn a_refused_value_names_host_attribute_and_line_unless_skipped() {
    let db = Db::new();
    db.ok(&["db", "init"]);
    let before = db.bytes();
    // Twelve vCPUs pinned with pin_all on a container of eight.
    let (text, _) = with_line_changed("hosted-vm-0-0-0 cpus=2", "hosted-vm-0-0-0 cpus=12");
    let pin_line = String::from_utf8_lossy(&text)
        .lines()
        .position(|l| l.contains("hosted-vm-0-0-0 kvm_cpu_pinning pin_all"))
        .unwrap()
        + 1;
    let dump = db.dump("wide.dump", &text);
    let out = db.import(&dump, &[]);
    assert_refused(
        &out,
        &format!("line {pin_line} (attribute kvm_cpu_pinning of host hosted-vm-0-0-0): VM \"hosted-vm-0-0-0\": pin_all needs 12 vCPUs pinned but container \"vm-container-0-0\" has only 8 CPUs"),
    );
    assert_eq!(db.bytes(), before);

    let said = db.imported(&dump, &["--skip-invalid"]);
    assert!(said.contains("4 VMs, 19 attributes"), "{said}");
    assert!(
        said.contains(&format!(
            "skipped line {pin_line} (attribute kvm_cpu_pinning of host hosted-vm-0-0-0): VM"
        )),
        "{said}"
    );
    assert_eq!(
        db.run(&["attr", "get", "hosted-vm-0-0-0", "kvm_cpu_pinning"])
            .status
            .code(),
        Some(1)
    );

    // A VM kvmroll has no disk for is left out with what needs it.
    let fresh = Db::new();
    let (text, line) = with_line_changed(
        "qcow2:/state/partition1/kvm/disks/hosted-vm-0-0-0.qcow2",
        "qed:/state/partition1/kvm/disks/hosted-vm-0-0-0.qed",
    );
    let dump = fresh.dump("qed.dump", &text);
    assert_refused(
        &fresh.import(&dump, &[]),
        &format!("line {line} (VM hosted-vm-0-0-0): disk vda: type \"qed\" has no kvmroll kind"),
    );
    let said = fresh.imported(&dump, &["--skip-invalid"]);
    assert!(said.contains("3 VMs"), "{said}");
    assert!(
        said.contains(&format!(
            "skipped line {line} (VM hosted-vm-0-0-0) (with 2 changes that needed it)"
        )),
        "{said}"
    );
    assert_eq!(
        fresh.run(&["vm", "show", "hosted-vm-0-0-0"]).status.code(),
        Some(1)
    );
}

#[test]
fn a_dry_run_says_what_it_would_make_and_changes_nothing() {
    let db = Db::new();
    let said = db.imported(
        fixture("cluster.dump").to_str().unwrap(),
        &[
            "--dry-run",
            "--vm-list",
            fixture("vm-list.txt").to_str().unwrap(),
        ],
    );
    for line in [
        "would add appliance nas\n",
        "would add host vm-container-0-0: appliance vm-container, rack 0, rank 0, 8 CPUs, os linux, boot os\n",
        "would add VM hosted-vm-0-0-0 on vm-container-0-0: 2048 MiB, 2 vCPUs, cdrom /export/isos/CentOS-7-x86_64-Minimal-2009.iso\n",
        "  nic direct peth0.7, mac 52:54:00:00:01:03\n",
        "would set kvm_cpu_pinning at host:hosted-vm-0-0-0: pin_all\n",
        "nothing was changed (--dry-run)\n",
    ] {
        assert!(said.contains(line), "{line:?} not in:\n{said}");
    }
    assert!(!db.path.exists(), "a dry run made a database");
    db.ok(&["db", "init"]);
    let before = db.bytes();
    db.imported(fixture("cluster.dump").to_str().unwrap(), &["--dry-run"]);
    assert_eq!(db.bytes(), before);
}

#[test]
fn merge_is_needed_for_a_database_with_hosts_and_refuses_every_conflict() {
    let db = Db::new();
    db.ok(&["host", "add", "compute-0-0", "--cpus", "4"]);
    let dump = fixture("cluster.dump");
    let dump = dump.to_str().unwrap();
    let before = db.bytes();
    assert_refused(
        &db.import(dump, &[]),
        "the database already holds 1 host: give --merge to import into it",
    );
    assert_eq!(db.bytes(), before);
    // The same host with the dump's values merges.
    let said = db.imported(dump, &["--merge"]);
    assert!(said.contains("4 hosts (the frontend is hpc-fe)"), "{said}");
    // Again: everything is there already.
    let said = db.imported(dump, &["--merge"]);
    assert!(
        said.contains("0 appliances, 0 hosts (the frontend is hpc-fe), 0 VMs, 0 attributes"),
        "{said}"
    );

    let other = Db::new();
    other.ok(&["host", "add", "compute-0-0", "--rack", "3"]);
    other.ok(&[
        "host",
        "add",
        "vm-container-0-0",
        "--appliance",
        "vm-container",
        "--cpus",
        "8",
    ]);
    other.ok(&["attr", "set", "--global", "cpu_mode", "host-model"]);
    other.ok(&[
        "--no-sync",
        "vm",
        "add",
        "hosted-vm-0-0-0",
        "--container",
        "vm-container-0-0",
        "--mem",
        "512",
        "--disk",
        "qcow2:/state/partition1/kvm/disks/hosted-vm-0-0-0.qcow2,vda,virtio,20",
        "--nic",
        "bridge:eth0,mac=52:54:00:00:01:01",
    ]);
    let before_other = other.bytes();
    assert_refused(
        &other.import(dump, &["--merge"]),
        "3 conflicts with the database (the same name, other values): host compute-0-0 (rack, cpus); attribute cpu_mode (global); VM hosted-vm-0-0-0 (memory, vcpus)",
    );
    assert_eq!(other.bytes(), before_other);
}
