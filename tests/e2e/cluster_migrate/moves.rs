//! A running VM moved live, with the plugins of both sides; and a
//! destination whose allocate plugin refuses it.

use crate::{frontend, persistent, plugin_runs, state, stderr, A, B};

#[test]
fn a_running_pin_auto_vm_moves_live_with_pins_from_its_destination() {
    let Some((f, _turn)) = frontend("a_running_pin_auto_vm_moves_live") else {
        return;
    };
    let vm = f.running_vm("live", A, &[]);
    let out = f.migrate(&vm.name, B);
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        said.starts_with(&format!("VM {} moved to {B} (live, ", vm.name))
            && said.lines().count() == 1,
        "{said}"
    );
    let (a, b) = (f.node(A), f.node(B));
    assert_eq!(state(b, &vm.name).as_deref(), Some("running"));
    assert!(persistent(b, &vm.name), "{B} keeps the VM defined");
    assert_eq!(state(a, &vm.name), None, "{A} keeps a definition");
    assert_eq!(f.placed(&vm.name), B);
    assert!(!f.marked(&vm.name));
    // The definition B runs is kvmroll's for B: its metadata and the pins
    // of B's allocation (what `kvmroll vm sync` finds in step).
    // libvirt writes the metadata back with double quotes.
    let live = String::from_utf8_lossy(&b.virsh(&["dumpxml", &vm.name]).stdout).replace('"', "'");
    assert!(
        live.contains(&format!("<kvmroll:container name='{B}'")),
        "{live}"
    );
    assert!(live.contains("<vcpupin vcpu='0' cpuset="), "{live}");
    let synced = f.k.run(&["vm", "sync", &vm.name]);
    assert!(
        stderr(&synced).contains("in step"),
        "B's definition is not the database's: {}",
        stderr(&synced)
    );
    // Plugins on both sides: B's preboot filter at migrate begin and its
    // allocate plugins at prepare begin; A's shutdown plugins told where
    // the VM went.
    let on_b = plugin_runs(b, &vm.name);
    for want in [
        format!("{B} preboot migrate begin to=-"),
        format!("{B} allocate prepare begin to=-"),
    ] {
        assert!(on_b.contains(&want), "{want:?} not in {on_b:?}");
    }
    let on_a = plugin_runs(a, &vm.name);
    let released = format!("{A} shutdown release end to={B}");
    assert!(on_a.contains(&released), "{released:?} not in {on_a:?}");
}

#[test]
fn a_destination_allocate_plugin_that_refuses_keeps_the_vm_on_its_source() {
    let Some((f, _turn)) = frontend("a_destination_allocate_plugin_that_refuses") else {
        return;
    };
    let vm = f.running_vm("refused", A, &[]);
    let plugin = format!("/etc/kvmroll/vms/{}/allocate.d/05-refuse", vm.name);
    f.node(B)
        .write(
            &plugin,
            "#!/bin/sh\necho 'no room for it here' >&2\nexit 1\n",
            0o755,
        )
        .unwrap();
    let out = f.migrate(&vm.name, B);
    let err = stderr(&out);
    let _ = std::fs::remove_file(f.node(B).outside(&plugin));
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("no room for it here"), "{err}");
    assert!(err.contains(&format!("runs on {A}")), "{err}");
    assert_eq!(state(f.node(A), &vm.name).as_deref(), Some("running"));
    assert!(persistent(f.node(A), &vm.name));
    assert_eq!(state(f.node(B), &vm.name), None);
    assert_eq!(f.placed(&vm.name), A);
    assert!(!f.marked(&vm.name));
}

#[test]
fn a_migration_past_its_time_limit_is_aborted_and_the_vm_keeps_running_on_its_source() {
    let Some((f, _turn)) = frontend("a_migration_past_its_time_limit") else {
        return;
    };
    let vm = f.running_vm("slow", A, &[]);
    // A destination slow to let it in: its allocate plugin takes 8 s.
    let plugin = format!("/etc/kvmroll/vms/{}/allocate.d/05-slow", vm.name);
    f.node(B)
        .write(&plugin, "#!/bin/sh\nsleep 8\n", 0o755)
        .unwrap();
    let t = std::time::Instant::now();
    let out =
        f.k.run(&["vm", "migrate", &vm.name, "--to", B, "--timeout", "2"]);
    let took = t.elapsed();
    let err = stderr(&out);
    let _ = std::fs::remove_file(f.node(B).outside(&plugin));
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(took < std::time::Duration::from_secs(20), "{took:?}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("within 2 s: the migration was aborted")
            && err.contains(&format!("runs on {A}")),
        "{err}"
    );
    assert_eq!(state(f.node(A), &vm.name).as_deref(), Some("running"));
    assert!(persistent(f.node(A), &vm.name));
    assert_eq!(state(f.node(B), &vm.name), None);
    assert_eq!(f.placed(&vm.name), A);
    assert!(!f.marked(&vm.name));
}

/// A meminfo field of this machine (the nodes share its memory), in MiB.
fn meminfo_mib(field: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kib| kib >> 10)
}

#[test]
fn a_guest_larger_than_free_memory_was_refused_though_the_page_cache_had_room() {
    let Some((f, _turn)) = frontend("a_guest_larger_than_free_memory") else {
        return;
    };
    let (free, available) = (meminfo_mib("MemFree"), meminfo_mib("MemAvailable"));
    let mib = free + 256;
    if available < mib + 1024 {
        eprintln!("skipped: {free} MiB free and {available} MiB available leave no such guest");
        return;
    }
    let name = format!("{}-large", kvmroll_tests::prefix("mig"));
    let mem = mib.to_string();
    f.k.ok(&[
        "vm",
        "add",
        &name,
        "--container",
        A,
        "--mem",
        &mem,
        "--cpus",
        "1",
    ]);
    let vm = crate::Vm::new(f.rig, &f.k, name);
    f.k.ok(&["vm", "define", &vm.name]);
    f.k.ok(&["vm", "start", &vm.name]);
    let out = f.migrate(&vm.name, B);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(state(f.node(B), &vm.name).as_deref(), Some("running"));
    assert_eq!(f.placed(&vm.name), B);
}
