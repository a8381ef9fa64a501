//! The administrator's daily commands against a real libvirtd, on the
//! cluster rig (`kvmroll_tests::rig`): `kvmroll vm list` shows what each
//! VM is doing, `vm start` goes through the hook and its plugins (whose
//! refusal is one line), `vm destroy` stops a VM, and `vm cdrom --live`
//! changes a running VM's medium, seen in its live XML.
//!
//! It uses only the rig's private daemons: not the machine's libvirtd, nor
//! its /etc/libvirt or /etc/kvmroll.

use kvmroll_core::pg::PgStore;
use kvmroll_tests::json;
use kvmroll_tests::rig::{self, Node, Rig, Role};
use kvmroll_tests::{ok, Kvmroll, GUEST_CPU_MODE};
use std::path::Path;
use std::process::Output;

const TEST: &str = "daily_commands_on_a_real_libvirtd";

/// Started by `vm start`; its medium is changed while it runs.
const RUNS: &str = "daily-run";
/// Never started: shut off.
const OFF: &str = "daily-off";
/// Its allocate plugin refuses every start.
const REFUSED: &str = "daily-refused";

fn admin() -> Role {
    Role::login("kvmroll", "s3cret").with("CREATEROLE")
}

fn container_role() -> Role {
    Role::login(PgStore::CONTAINER_ROLE, "ct-s3cret")
}

/// Each VM's state as `vm list --json` gives it.
fn states(k: &Kvmroll) -> Vec<(String, String)> {
    json::rows(&k.ok(&["vm", "list", "--json"]))
        .into_iter()
        .map(|r| {
            let get = |f: &str| r.get(f).cloned().flatten().unwrap_or_default();
            (get("name"), get("state"))
        })
        .collect()
}

fn state(k: &Kvmroll, vm: &str) -> String {
    states(k)
        .into_iter()
        .find(|(n, _)| n == vm)
        .map(|(_, s)| s)
        .unwrap_or_else(|| panic!("{vm} is not listed"))
}

/// The source of the cdrom drive in `vm`'s XML (live, or its definition).
fn cdrom_source(a: &Node, vm: &str, inactive: bool) -> Option<String> {
    let mut args = vec!["dumpxml", vm];
    if inactive {
        args.push("--inactive");
    }
    let xml = ok(a.virsh(&args), "virsh dumpxml");
    let doc = kvmroll_core::xml::parse_document(&xml).expect("libvirt's XML parses");
    let mut disks = Vec::new();
    doc.descendants("disk", &mut disks);
    let drive = disks
        .into_iter()
        .find(|d| d.attr("device") == Some("cdrom"))
        .unwrap_or_else(|| panic!("{vm} has no cdrom drive: {xml}"));
    drive
        .child("source")
        .and_then(|s| s.attr("file"))
        .map(str::to_string)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The cluster: the database on the rig's server, node-a a VM container
/// whose hook reaches it as the containers' role, and three small VMs
/// defined there, RUNS with the cdrom `iso`.
fn cluster(rig: &Rig, iso: &Path) -> Kvmroll {
    let a = rig.node("node-a");
    let k = kvmroll_tests::rig_cluster(rig, &admin(), &container_role(), "node-a");
    a.write(
        format!("/etc/kvmroll/vms/{REFUSED}/allocate.d/10-deny"),
        "#!/bin/sh\necho \"no room for $KVMROLL_VM on this container\" >&2\nexit 1\n",
        0o755,
    )
    .unwrap();
    let add_container = ["host", "add", "node-a", "--appliance", "vm-container"];
    k.ok(&[&add_container[..], &["--cpus", "4"]].concat());
    k.ok(&["attr", "set", "node-a", "libvirt_uri", &a.libvirt_uri()]);
    k.ok(&["attr", "set", "--global", "cpu_mode", GUEST_CPU_MODE]);
    k.ok(&["attr", "set", "--global", "kvm_graphics", "none"]);
    for vm in [RUNS, OFF, REFUSED] {
        k.add_small_vm(vm, "node-a");
    }
    k.ok(&["vm", "cdrom", RUNS, &iso.to_string_lossy()]);
    k.ok(&["vm", "define", RUNS, OFF, REFUSED]);
    k
}

// size: one scenario against real daemons, each step on the state the last one left; kept whole
#[test]
fn daily_commands_on_a_real_libvirtd() {
    if !rig::available(TEST) {
        return;
    }
    let rig = kvmroll_tests::one_node_rig(&admin());
    let a = rig.node("node-a");
    // Media for the cdrom: any file will do for QEMU. /tmp is shared with
    // the node.
    let media = tempfile::tempdir().unwrap();
    let (first, second) = (
        media.path().join("first.iso"),
        media.path().join("second.iso"),
    );
    std::fs::write(&first, vec![0u8; 1 << 20]).unwrap();
    std::fs::write(&second, vec![1u8; 1 << 20]).unwrap();
    let k = cluster(&rig, &first);

    // Every VM defined and off.
    for vm in [RUNS, OFF, REFUSED] {
        assert_eq!(state(&k, vm), "shut off", "{vm} before any start");
    }

    // A start through the hook.
    let out = k.run(&["vm", "start", RUNS]);
    assert!(out.status.success(), "vm start: {}", stderr(&out));
    assert_eq!(
        stderr(&out),
        format!("kvmroll: VM {RUNS} started on node-a\n")
    );
    assert!(ok(a.virsh(&["domstate", RUNS]), "domstate").contains("running"));
    assert_eq!(state(&k, RUNS), "running");
    assert_eq!(state(&k, OFF), "shut off");
    let table = k.ok(&["vm", "list"]);
    let row = table.lines().find(|l| l.starts_with(RUNS)).unwrap();
    assert!(row.contains("  running  "), "{table}");

    // A start the allocate plugin refuses: its line, one line, non-zero.
    let out = k.run(&["vm", "start", REFUSED]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "not one line: {err}");
    assert!(err.starts_with("kvmroll: "), "{err}");
    assert!(
        err.contains(&format!("no room for {REFUSED} on this container")),
        "the plugin's line is missing: {err}"
    );
    assert!(!err.contains("Hook script execution failed"), "{err}");
    assert_eq!(state(&k, REFUSED), "shut off");

    // The running VM's medium changes at once with --live.
    assert_eq!(
        cdrom_source(a, RUNS, false),
        Some(first.display().to_string())
    );
    let out = k.run(&["vm", "cdrom", RUNS, &second.to_string_lossy(), "--live"]);
    assert!(out.status.success(), "vm cdrom --live: {}", stderr(&out));
    assert!(
        stderr(&out).contains("in the running VM"),
        "{}",
        stderr(&out)
    );
    let second_s = second.display().to_string();
    assert_eq!(
        cdrom_source(a, RUNS, false),
        Some(second_s.clone()),
        "live XML"
    );
    assert_eq!(
        cdrom_source(a, RUNS, true),
        Some(second_s.clone()),
        "definition"
    );
    // Without --live, the running VM keeps its medium until its next power cycle.
    let out = k.run(&["vm", "cdrom", RUNS, &first.to_string_lossy()]);
    assert!(
        stderr(&out).contains("next power cycle"),
        "{}",
        stderr(&out)
    );
    assert_eq!(cdrom_source(a, RUNS, false), Some(second_s), "live XML");
    assert_eq!(
        cdrom_source(a, RUNS, true),
        Some(first.display().to_string())
    );
    // Ejected while it runs: the drive stays, empty.
    k.ok(&["vm", "cdrom", RUNS, "none", "--live"]);
    assert_eq!(cdrom_source(a, RUNS, false), None, "still a medium");

    // Saved, then destroyed after a start from the saved state.
    ok(a.virsh(&["managedsave", RUNS]), "virsh managedsave");
    assert_eq!(state(&k, RUNS), "saved");
    let out = k.run(&["vm", "start", RUNS]);
    assert!(
        stderr(&out).contains("from its saved state"),
        "{}",
        stderr(&out)
    );
    k.ok(&["vm", "destroy", RUNS]);
    assert_eq!(state(&k, RUNS), "shut off");
}
