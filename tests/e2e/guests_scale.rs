//! kvmroll-guests at a container's scale, end to end on the cluster rig
//! (`kvmroll_tests::rig`): sixteen small `kvm_autostart` guests on one
//! node (a real libvirtd in its own namespaces), a `stop` whose budget
//! has room to save only some of them, a reboot of the node's libvirtd,
//! then a `start`: those saved are restored, the others cold-booted, none
//! lost and none started twice, and the journal says which was which.
//!
//! It uses only the rig's private daemons: not the machine's libvirtd, nor
//! its /etc/libvirt or /etc/kvmroll. The database is a SQLite file in a
//! temporary folder, which the node sees (its /tmp is the machine's).

use kvmroll_tests::rig::{self, Node, Rig};
use kvmroll_tests::{bin_dir, ok, Kvmroll, GUEST_CPU_MODE};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

const TEST: &str = "a_budget_too_small_for_all_saves_some_and_cold_boots_the_rest";
const NODE: &str = "node-s";
const STATE: &str = "/var/lib/kvmroll/guests";

/// `kvmroll-guests CMD` inside the node, on the test's database.
fn guests(a: &Node, db: &Path, cmd: &str) -> std::process::Output {
    a.command(bin_dir().join("kvmroll-guests"))
        .args(["--host", NODE, "--state-dir", STATE, cmd])
        .env("KVMROLL_DB", db)
        .env_remove("KVMROLL_CONF")
        .env_remove("NOTIFY_SOCKET")
        .output()
        .expect("kvmroll-guests runs")
}

/// The journal's state and note of each VM.
fn journal(a: &Node) -> BTreeMap<String, (String, String)> {
    let text =
        std::fs::read_to_string(a.outside(format!("{STATE}/journal.json"))).expect("a journal");
    let j: serde_json::Value = serde_json::from_str(&text).expect("the journal is JSON");
    j["vms"]
        .as_object()
        .expect("vms")
        .iter()
        .map(|(n, e)| {
            let s = |k: &str| e[k].as_str().unwrap_or_default().to_string();
            (n.clone(), (s("state"), s("note")))
        })
        .collect()
}

// size: one scenario against real daemons, each step on the state the last one left; kept whole
#[test]
fn a_budget_too_small_for_all_saves_some_and_cold_boots_the_rest() {
    if !rig::available(TEST) {
        return;
    }
    let t0 = Instant::now();
    let rig = Rig::builder()
        .node(NODE, |_| Ok(()))
        .start()
        .unwrap_or_else(|e| panic!("the rig did not start: {}", rig::chain(&e)));
    let a = rig.node(NODE);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kvmroll.db");
    let k = Kvmroll::new(&db);
    k.init_with_container(NODE, &a.libvirt_uri());
    k.ok(&["attr", "set", "--global", "cpu_mode", GUEST_CPU_MODE]);
    k.ok(&["attr", "set", "--global", "kvm_graphics", "none"]);
    // Four at once; a save gets 5 s at most, a shutdown 1 s, then a
    // destroy (these guests ignore ACPI). 12 s less 1 s kept: two rounds of
    // 5 s fit, eight saves of sixteen.
    for (name, value) in [
        ("kvm_guests_parallel", "4"),
        ("kvm_guests_save_timeout", "5"),
        ("kvm_guests_shutdown_timeout", "1"),
        ("kvm_guests_on_timeout", "destroy"),
        ("kvm_guests_stop_budget", "12"),
    ] {
        k.ok(&["attr", "set", NODE, name, value]);
    }
    let names: Vec<String> = (0..16).map(|i| format!("scale-{i:02}")).collect();
    for vm in &names {
        k.add_small_vm(vm, NODE);
        k.ok(&["attr", "set", vm, "kvm_autostart", "true"]);
    }
    let mut define = vec!["vm", "define"];
    define.extend(names.iter().map(String::as_str));
    k.ok(&define);
    for vm in &names {
        ok(a.virsh(&["start", vm]), "virsh start");
    }
    assert_eq!(a.qemus().len(), 16, "sixteen guests run");

    // The node shuts down: a budget too small for all.
    let t = Instant::now();
    let out = guests(a, &db, "stop");
    let stop_took = t.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "kvmroll-guests stop: {err}");
    assert!(err.contains("no room in the stop budget"), "{err}");
    let after_stop = journal(a);
    let saved: Vec<&String> = names
        .iter()
        .filter(|n| after_stop[*n].0 == "saved")
        .collect();
    let fell_back: Vec<&String> = names
        .iter()
        .filter(|n| after_stop[*n].0 == "destroyed")
        .collect();
    assert_eq!((saved.len(), fell_back.len()), (8, 8), "{after_stop:?}");
    for vm in &fell_back {
        assert_eq!(
            after_stop[*vm].1, "no room for its save in the stop budget of 12.0s",
            "{vm}"
        );
    }
    assert!(a.qemus().is_empty(), "a guest still runs after the stop");
    for vm in &names {
        let info = ok(a.virsh(&["dominfo", vm]), "dominfo");
        let managed = info
            .lines()
            .any(|l| l.starts_with("Managed save:") && l.ends_with("yes"));
        assert_eq!(managed, saved.contains(&vm), "{vm}: {info}");
    }

    // The node boots: its libvirtd anew, then the start.
    a.restart_libvirtd()
        .unwrap_or_else(|e| panic!("{}", rig::chain(&e)));
    let t = Instant::now();
    let out = guests(a, &db, "start");
    let start_took = t.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "kvmroll-guests start: {err}");
    let after_start = journal(a);
    let running = a.qemus();
    for vm in &names {
        let procs = running.get(vm).cloned().unwrap_or_default();
        assert_eq!(procs.len(), 1, "{vm}: one QEMU, not {procs:?}");
        let restored = saved.contains(&vm);
        assert_eq!(procs[0].1, restored, "{vm}: restored from its image?");
        let want = if restored { "restored" } else { "booted" };
        assert_eq!(after_start[vm].0, want, "{vm}: {after_start:?}");
    }

    // A second start starts nothing twice.
    let out = guests(a, &db, "start");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(a.qemus(), running, "a guest was started again");
    for vm in &names {
        assert_eq!(journal(a)[vm].0, "already-running", "{vm}");
    }
    eprintln!(
        "{TEST}: stop {:.1}s, start {:.1}s, whole test {:.1}s",
        stop_took.as_secs_f64(),
        start_took.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
}
