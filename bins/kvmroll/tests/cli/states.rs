//! `vm list`'s STATE column over containers that answer, one whose socket
//! does not exist and one that accepts and never answers; and the power
//! commands' refusals.

use crate::fixture::*;
use std::os::unix::net::UnixListener;
use std::time::{Duration, Instant};

on_both_engines!(
    power_commands_refuse_what_they_cannot_do_in_one_line,
    console_is_virsh_s_on_the_container_s_uri,
);

/// Adds a VM named as the domain libvirt's test driver always runs.
const ADD_TEST: [&str; 6] = [
    "--no-sync",
    "vm",
    "add",
    "test",
    "--container",
    "vm-container-0-0",
];

/// A libvirtd that accepts connections and never answers: each stream is
/// kept open until the test ends.
fn silent_socket(path: &std::path::Path) {
    let listener = UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            held.push(stream);
        }
    });
}

#[test]
fn vm_list_over_300_vms_waits_for_a_silent_container_only_its_limit() {
    let f = Fixture::on(Engine::Sqlite);
    let silent = f.file("silent.sock");
    silent_socket(&silent);
    let containers = [
        ("vm-container-0-0", None),
        (
            "vm-container-0-1",
            Some("qemu+unix:///system?socket=/nonexistent/libvirt-sock".to_string()),
        ),
        (
            "vm-container-0-2",
            Some(format!("qemu+unix:///system?socket={}", silent.display())),
        ),
    ];
    for (c, uri) in &containers[1..] {
        f.ok(&[
            "host",
            "add",
            c,
            "--appliance",
            "vm-container",
            "--cpus",
            "4",
        ]);
        f.ok(&["attr", "set", c, "libvirt_uri", uri.as_deref().unwrap()]);
    }
    // The test driver always runs a domain named "test".
    f.ok(&ADD_TEST);
    for (c, _) in &containers {
        for n in 0..100 {
            let vm = format!("{c}-vm-{n}");
            f.ok(&["--no-sync", "vm", "add", &vm, "--container", c]);
        }
    }
    let limit = Duration::from_secs(2);
    let t = Instant::now();
    let out = f.run(&["vm", "list", "--timeout", "2"]);
    let took = t.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(took >= limit && took < 2 * limit, "vm list took {took:?}");
    let table = String::from_utf8_lossy(&out.stdout);
    let state_of = |vm: &str| -> String {
        let line = table
            .lines()
            .find(|l| l.split_whitespace().next() == Some(vm))
            .unwrap_or_else(|| panic!("no row for {vm}: {table}"));
        let cells: Vec<&str> = line.split("  ").filter(|c| !c.is_empty()).collect();
        cells[2].trim().to_string()
    };
    assert_eq!(state_of("test"), "running");
    assert_eq!(state_of("vm-container-0-0-vm-7"), "not defined");
    for n in [0, 99] {
        assert_eq!(state_of(&format!("vm-container-0-1-vm-{n}")), "unreachable");
        assert_eq!(state_of(&format!("vm-container-0-2-vm-{n}")), "unreachable");
    }
    assert_eq!(table.lines().count(), 1 + 301 + 1, "{table}");
    // Each unreachable container is named once, not once per VM.
    let warnings: Vec<&str> = err.lines().collect();
    assert_eq!(warnings.len(), 2, "{err}");
    assert!(warnings[0].contains("vm-container-0-1") && warnings[0].contains("No such file"));
    assert!(
        warnings[1].contains("vm-container-0-2") && warnings[1].ends_with("no answer within 2 s")
    );

    let json: serde_json::Value =
        serde_json::from_slice(&f.run(&["vm", "list", "--json", "--timeout", "0.5"]).stdout)
            .unwrap();
    let state = |vm: &str| {
        json.as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == vm)
            .map(|v| v["state"].clone())
            .unwrap()
    };
    assert_eq!(state("vm-container-0-0-vm-1"), "not defined");
    assert_eq!(state("vm-container-0-2-vm-1"), "unreachable");
}

fn power_commands_refuse_what_they_cannot_do_in_one_line(e: Engine) {
    let f = Fixture::on(e);
    let vm = "hosted-vm-0-0-0";
    // The test driver has no such domain.
    f.refused(
        &["vm", "start", vm],
        "VM hosted-vm-0-0-0 is not defined on vm-container-0-0: run `kvmroll vm define hosted-vm-0-0-0`",
    );
    f.refused(&["vm", "shutdown", "nosuch"], "unknown VM");
    f.refused(
        &["vm", "cdrom", vm, "/a.iso", "--live", "--no-sync"],
        "--live calls libvirt",
    );
    // Its running domain "test" has no cdrom drive.
    f.ok(&ADD_TEST);
    f.refused(
        &["vm", "cdrom", "test", "/a.iso", "--live"],
        "VM test runs without a cdrom drive",
    );
    let out = f.run(&["vm", "start", "test"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "kvmroll: VM test is running already\n"
    );
}

/// The test driver has no such domain, so virsh fails after kvmroll has
/// handed it the terminal: kvmroll's line comes first, then virsh's.
fn console_is_virsh_s_on_the_container_s_uri(e: Engine) {
    let f = Fixture::on(e);
    let out = f.run(&["vm", "console", "hosted-vm-0-0-0"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.lines().next(),
        Some("kvmroll: virsh -c test:///default console hosted-vm-0-0-0"),
        "{err}"
    );
    assert!(err.contains("hosted-vm-0-0-0"), "{err}");
    assert!(!out.status.success());
    f.refused(&["vm", "console", "nosuch"], "unknown VM");
}
