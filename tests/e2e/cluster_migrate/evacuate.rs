//! Emptying a container: `kvmroll host evacuate` with room for all its
//! running VMs elsewhere, and with room for two of three; and
//! `kvmroll-guests stop` on a container whose `kvm_guests_on_shutdown` is
//! `migrate`, which moves what it can and saves the rest.
//!
//! The guests are unpinned (each node has the machine's two CPUs): the
//! containers' `cpus` in the database are set for room, as a site sets
//! them, and put back when the test ends.

use crate::{frontend, persistent, state, stderr, Frontend, Vm, A, B};
use kvmroll_tests::bin_dir;
use std::process::{Output, Stdio};

/// Sets the containers' `cpus` (A, B) and their attributes for one test;
/// puts them back when dropped.
struct Room<'f> {
    f: &'f Frontend,
    attrs: Vec<(&'static str, &'static str)>,
}

impl<'f> Room<'f> {
    fn new(
        f: &'f Frontend,
        a_cpus: u32,
        b_cpus: u32,
        attrs: &[(&'static str, &'static str)],
    ) -> Room<'f> {
        for (node, cpus) in [(A, a_cpus), (B, b_cpus)] {
            f.k.ok(&["host", "set", node, "--cpus", &cpus.to_string()]);
        }
        for (name, value) in attrs {
            f.k.ok(&["attr", "set", A, name, value]);
        }
        Room {
            f,
            attrs: attrs.to_vec(),
        }
    }
}

impl Drop for Room<'_> {
    fn drop(&mut self) {
        for (name, _) in &self.attrs {
            let _ = self.f.k.run(&["attr", "rm", A, name]);
        }
        for node in [A, B] {
            let _ = self.f.k.run(&["host", "set", node, "--cpus", "2"]);
        }
    }
}

/// `n` running 64 MiB one-vCPU guests on A, unpinned, with `attrs`.
fn running_on_a<'f>(f: &'f Frontend, tag: &str, n: usize, attrs: &[(&str, &str)]) -> Vec<Vm<'f>> {
    (0..n)
        .map(|i| {
            let name = format!("{}-{tag}{i}", kvmroll_tests::prefix("evac"));
            f.k.add_small_vm(&name, A);
            for (attr, value) in attrs {
                f.k.ok(&["attr", "set", &name, attr, value]);
            }
            let vm = Vm::new(f.rig, &f.k, name);
            f.k.ok(&["vm", "define", &vm.name]);
            f.k.ok(&["vm", "start", &vm.name]);
            vm
        })
        .collect()
}

fn evacuate(f: &Frontend) -> Output {
    f.k.run(&["host", "evacuate", A])
}

/// Asserts `vm` runs on B, defined there only, and the database says B.
fn moved_to_b(f: &Frontend, vm: &str) {
    assert_eq!(
        state(f.node(B), vm).as_deref(),
        Some("running"),
        "{vm} on {B}"
    );
    assert!(persistent(f.node(B), vm), "{vm} is not defined on {B}");
    assert_eq!(state(f.node(A), vm), None, "{vm} is still on {A}");
    assert_eq!(f.placed(vm), B, "{vm}");
}

#[test]
fn host_evacuate_moves_three_running_vms_where_there_is_room() {
    let Some((f, _turn)) = frontend("host_evacuate_moves_three_running_vms") else {
        return;
    };
    let _room = Room::new(f, 4, 4, &[]);
    let vms = running_on_a(f, "all", 3, &[]);
    let t = std::time::Instant::now();
    let out = evacuate(f);
    eprintln!("host evacuate of 3 guests: {:.1?}", t.elapsed());
    assert!(out.status.success(), "{}", stderr(&out));
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(said.lines().count(), 3, "{said}");
    for vm in &vms {
        let line = format!("VM {} moved to {B} (live, ", vm.name);
        assert!(said.contains(&line), "{line:?} not in {said}");
        moved_to_b(f, &vm.name);
    }
}

#[test]
fn host_evacuate_with_room_for_two_moves_two_and_reports_the_third() {
    let Some((f, _turn)) = frontend("host_evacuate_with_room_for_two") else {
        return;
    };
    let _room = Room::new(f, 4, 2, &[]);
    let vms = running_on_a(f, "two", 3, &[]);
    let out = evacuate(f);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(said.lines().count(), 2, "{said}");
    let stayed: Vec<&Vm> = vms
        .iter()
        .filter(|vm| !said.contains(&format!("VM {} moved to {B}", vm.name)))
        .collect();
    assert_eq!(stayed.len(), 1, "{said}");
    let third = &stayed[0].name;
    let why = format!(
        "kvmroll: VM {third} not moved: no container has room ({B}: 0 CPU(s) free, 1 needed)"
    );
    assert!(err.lines().any(|l| l == why), "{why:?} not in {err}");
    assert!(
        err.lines()
            .last()
            .unwrap_or_default()
            .ends_with(&format!("1 of 3 running VM(s) did not leave {A}")),
        "{err}"
    );
    assert_eq!(state(f.node(A), third).as_deref(), Some("running"));
    assert_eq!(f.placed(third), A);
    for vm in vms.iter().filter(|vm| &vm.name != third) {
        moved_to_b(f, &vm.name);
    }
}

/// `kvmroll-guests stop` run inside `node`, reading its own configuration.
fn guests_stop(f: &Frontend, node: &str) -> Output {
    let mut c = f.node(node).command(bin_dir().join("kvmroll-guests"));
    for var in [
        "KVMROLL_DB",
        "KVMROLL_CONF",
        "KVMROLL_DB_READONLY",
        "KVMROLL_STAGE",
    ] {
        c.env_remove(var);
    }
    c.arg("stop").stdin(Stdio::null()).output().unwrap()
}

#[test]
fn guests_stop_with_on_shutdown_migrate_moves_what_fits_and_saves_the_rest() {
    let Some((f, _turn)) = frontend("guests_stop_with_on_shutdown_migrate") else {
        return;
    };
    let _room = Room::new(
        f,
        4,
        2,
        &[
            ("kvm_guests_on_shutdown", "migrate"),
            ("kvm_guests_stop_budget", "120"),
            ("kvm_guests_shutdown_timeout", "5"),
        ],
    );
    let vms = running_on_a(f, "stop", 3, &[("kvm_autostart", "true")]);
    let t = std::time::Instant::now();
    let out = guests_stop(f, A);
    eprintln!("kvmroll-guests stop with migrate: {:.1?}", t.elapsed());
    let log = stderr(&out);
    assert!(out.status.success(), "kvmroll-guests stop: {log}");
    let (moved, stayed): (Vec<&Vm>, Vec<&Vm>) = vms.iter().partition(|vm| f.placed(&vm.name) == B);
    assert_eq!((moved.len(), stayed.len()), (2, 1), "{log}");
    for vm in moved {
        moved_to_b(f, &vm.name);
        let line = format!("VM {}: moved to {B} (live, ", vm.name);
        assert!(log.contains(&line), "{line:?} not in {log}");
    }
    let saved = &stayed[0].name;
    assert_eq!(state(f.node(A), saved).as_deref(), Some("shut off"));
    let info = String::from_utf8_lossy(&f.node(A).virsh(&["dominfo", saved]).stdout).into_owned();
    assert!(
        info.lines()
            .any(|l| l.starts_with("Managed save:") && l.ends_with("yes")),
        "{saved} has no managed-save image on {A}: {info}"
    );
}

/// A field of this machine's /proc/meminfo in MiB (the nodes share its
/// memory).
fn meminfo_mib(field: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib >> 10)
}

/// Regression: the destinations' free memory was libvirt's
/// `virNodeGetFreeMemory`, MemFree alone, so a host whose RAM was mostly
/// page cache (265 MiB free of 24 GiB here) had "no room" for a guest
/// larger than that, and evacuate moved nothing.
#[test]
fn a_destination_whose_memory_is_page_cache_has_room() {
    let Some((f, _turn)) = frontend("a_destination_whose_memory_is_page_cache_has_room") else {
        return;
    };
    let free = meminfo_mib("MemFree");
    let cache = meminfo_mib("Cached") + meminfo_mib("Buffers");
    // Larger than what is free, well within what the cache gives back.
    let mem = free + 256;
    if cache < mem + 1024 {
        eprintln!("skipped: {free} MiB free and {cache} MiB of cache leave no case to test");
        return;
    }
    let _room = Room::new(f, 4, 4, &[]);
    let name = format!("{}-cache", kvmroll_tests::prefix("evac"));
    let m = mem.to_string();
    f.k.ok(&[
        "vm",
        "add",
        &name,
        "--container",
        A,
        "--mem",
        &m,
        "--cpus",
        "1",
    ]);
    let vm = Vm::new(f.rig, &f.k, name);
    f.k.ok(&["vm", "define", &vm.name]);
    f.k.ok(&["vm", "start", &vm.name]);
    let out = evacuate(f);
    assert!(out.status.success(), "{mem} MiB guest: {}", stderr(&out));
    moved_to_b(f, &vm.name);
}
