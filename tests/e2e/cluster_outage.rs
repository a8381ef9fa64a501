//! A frontend outage seen from a VM container, end to end on the cluster
//! rig (`kvmroll_tests::rig`): a private PostgreSQL is the cluster
//! database, one node is the container, with this build's hook installed
//! and its plugins. With PostgreSQL stopped, the container's VMs still start
//! and stop with their plugins, are saved and restored across a restart of
//! the container's libvirtd, and a `virsh edit` of their vCPUs is caught;
//! the events of the outage, 60 of them made while hooks and upkeeps were
//! killed, reach the database soon after it is back, each once.
//!
//! It uses only the rig's private daemons: not the machine's libvirtd, nor
//! its /etc/libvirt or /etc/kvmroll.

use kvmroll_core::pg::PgStore;
use kvmroll_tests::json::{self, Get};
use kvmroll_tests::rig::{self, Node, Role, StopMode};
use kvmroll_tests::{bin_dir, ok, wait_for, Kvmroll, GUEST_CPU_MODE};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const TEST: &str = "containers_keep_working_while_the_frontend_is_down";

/// The autostart VM, lenient about drift, and its strict twin.
const LENIENT: &str = "outage-l";
const STRICT: &str = "outage-s";

/// Where the plugins write what they were told, inside the node.
const MARKS: &str = "/var/lib/kvmroll/marks";

fn admin() -> Role {
    Role::login("kvmroll", "s3cret").with("CREATEROLE")
}

/// The containers' role, as `kvmroll` grants it on PostgreSQL.
fn container_role() -> Role {
    Role::login(PgStore::CONTAINER_ROLE, "ct-s3cret")
}

/// A plugin that writes a line of what it was told to [`MARKS`].
fn mark(stage: &str) -> String {
    format!(
        "#!/bin/sh\necho \"$KVMROLL_VM {stage} unreachable=$KVMROLL_DB_UNREACHABLE\" >>{MARKS}\n"
    )
}

fn marks(a: &Node) -> Vec<String> {
    std::fs::read_to_string(a.outside(MARKS))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// The events the database holds (`kvmroll events` on the frontend).
fn events(k: &Kvmroll) -> Vec<BTreeMap<String, Option<String>>> {
    json::rows(&k.ok(&["events", "--json", "--limit", "100000"]))
}

fn field<'a>(e: &'a BTreeMap<String, Option<String>>, name: &str) -> &'a str {
    e.get(name).and_then(|v| v.as_deref()).unwrap_or_default()
}

/// `kvmroll-guests ARGS` inside the node, with its own configuration.
fn guests(a: &Node, cmd: &str) -> std::process::Output {
    a.command(bin_dir().join("kvmroll-guests"))
        .args([
            "--host",
            "node-a",
            "--state-dir",
            "/var/lib/kvmroll/guests",
            cmd,
        ])
        .env_remove("KVMROLL_DB")
        .env_remove("KVMROLL_CONF")
        .output()
        .expect("kvmroll-guests runs")
}

/// The command line of the QEMU process running `vm` in the node.
fn qemu_cmdline(a: &Node, vm: &str) -> Option<String> {
    a.footprint()
        .processes()
        .into_iter()
        .filter(|(_, comm)| comm.starts_with("qemu-system"))
        .filter_map(|(pid, _)| std::fs::read(format!("/proc/{pid}/cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .find(|c| c.contains(&format!("guest={vm},")))
}

/// Processes of the node whose command line holds `arg` as an argument.
fn with_arg(a: &Node, arg: &str) -> Vec<i32> {
    a.footprint()
        .processes()
        .into_iter()
        .filter(|(_, comm)| !comm.starts_with("qemu-system"))
        .filter(|(pid, _)| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .unwrap_or_default()
                .split(|b| *b == 0)
                .skip(1)
                .any(|a| a == arg.as_bytes())
        })
        .map(|(pid, _)| pid as i32)
        .collect()
}

fn sigkill(pid: i32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );
}

/// `virsh edit` of a VM's vCPUs, from 1 to 2, done as virsh does it.
fn edit_vcpus(a: &Node, vm: &str) {
    let xml = ok(a.virsh(&["dumpxml", "--inactive", vm]), "dumpxml");
    let edited = xml.replace(
        "<vcpu placement='static'>1</vcpu>",
        "<vcpu placement='static'>2</vcpu>",
    );
    assert_ne!(xml, edited, "{vm} has not one vCPU: {xml}");
    let file = a
        .write(format!("/var/lib/kvmroll/{vm}-edited.xml"), edited, 0o644)
        .unwrap();
    ok(
        a.virsh(&["define", &file.to_string_lossy()]),
        "virsh define",
    );
}

// size: one scenario against real daemons, each step on the state the last one left; kept whole
#[test]
fn containers_keep_working_while_the_frontend_is_down() {
    if !rig::available(TEST) {
        return;
    }
    let rig = kvmroll_tests::one_node_rig(&admin());
    let a = rig.node("node-a");
    // The frontend: the database, the containers' role, the cluster.
    let k = kvmroll_tests::rig_cluster(&rig, &admin(), &container_role(), "node-a");
    for stage in ["allocate", "preboot", "shutdown"] {
        a.write(
            format!("/etc/kvmroll/plugins/{stage}.d/10-mark"),
            mark(stage),
            0o755,
        )
        .unwrap();
    }
    k.ok(&[
        "host",
        "add",
        "node-a",
        "--appliance",
        "vm-container",
        "--cpus",
        "2",
    ]);
    k.ok(&["attr", "set", "node-a", "libvirt_uri", &a.libvirt_uri()]);
    k.ok(&["attr", "set", "--global", "cpu_mode", GUEST_CPU_MODE]);
    k.ok(&["attr", "set", "--global", "kvm_graphics", "none"]);
    for vm in [LENIENT, STRICT] {
        k.add_small_vm(vm, "node-a");
        k.ok(&["attr", "set", vm, "kvm_autostart", "true"]);
    }
    k.ok(&["attr", "set", STRICT, "kvm_strict_definition", "true"]);
    k.ok(&["vm", "define", LENIENT, STRICT]);
    ok(
        a.virsh(&["start", LENIENT]),
        "virsh start with the frontend up",
    );
    let up = wait_for(Duration::from_secs(10), || {
        events(&k)
            .iter()
            .any(|e| field(e, "op") == "started" && field(e, "vm") == LENIENT)
    });
    assert!(up, "the events of a start did not reach the database");

    // The outage.
    rig.pg
        .stop(StopMode::Fast)
        .unwrap_or_else(|e| panic!("{}", rig::chain(&e)));
    let before = marks(a).len();
    ok(a.virsh(&["destroy", LENIENT]), "virsh destroy");
    ok(
        a.virsh(&["start", LENIENT]),
        "virsh start with the frontend down",
    );
    let seen = marks(a)[before..].to_vec();
    assert_eq!(
        seen,
        [
            format!("{LENIENT} shutdown unreachable=1"),
            format!("{LENIENT} allocate unreachable=1"),
            // start begin never opens the database: nothing to tell.
            format!("{LENIENT} preboot unreachable="),
        ]
    );

    // Saved at the container's shutdown, restored at its boot, from
    // libvirt's definitions: the database does not answer.
    let out = guests(a, "stop");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "kvmroll-guests stop: {err}");
    assert!(err.contains("the kvmroll database is unreachable"), "{err}");
    let info = ok(a.virsh(&["dominfo", LENIENT]), "dominfo");
    assert!(
        info.lines()
            .any(|l| l.starts_with("Managed save:") && l.ends_with("yes")),
        "{info}"
    );
    a.restart_libvirtd()
        .unwrap_or_else(|e| panic!("{}", rig::chain(&e)));
    let out = guests(a, "start");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "kvmroll-guests start: {err}");
    let restored = qemu_cmdline(a, LENIENT).expect("the VM runs again");
    assert!(restored.contains("-incoming"), "not restored: {restored}");
    let booted = qemu_cmdline(a, STRICT).expect("the strict VM was started too");
    assert!(!booted.contains("-incoming"), "{booted}");

    // virsh edit of the vCPUs: caught at the next start, from the metadata.
    for vm in [LENIENT, STRICT] {
        ok(a.virsh(&["destroy", vm]), "virsh destroy");
        edit_vcpus(a, vm);
    }
    ok(a.virsh(&["start", LENIENT]), "a lenient VM starts, drifted");
    let refused = a.virsh(&["start", STRICT]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "a strict VM started, drifted");
    assert!(err.contains("vcpus: 1 is now 2"), "{err}");

    // 60 events more, hooks and upkeeps killed at random moments.
    let xml = ok(a.virsh(&["dumpxml", LENIENT]), "dumpxml");
    let static_hook = kvmroll_tests::static_hook();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("{TEST}: seed {seed}");
    let mut state = seed;
    let mut random = move |below: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % below
    };
    let (mut finished, mut killed) = (Vec::new(), Vec::new());
    for n in 0..60 {
        let op = format!("probe{n:02}");
        let mut child = a
            .command(&static_hook)
            .args([LENIENT, &op, "begin", "-"])
            .env_remove("KVMROLL_CONF")
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        {
            use std::io::Write;
            let _ = child.stdin.take().unwrap().write_all(xml.as_bytes());
        }
        let mut hit = false;
        if random(3) == 0 {
            std::thread::sleep(Duration::from_micros(random(8000)));
            for pid in with_arg(a, &op) {
                sigkill(pid);
                hit = true;
            }
        }
        let status = child.wait().unwrap();
        if status.success() && !hit {
            finished.push(op);
        } else {
            killed.push(op);
        }
        if random(3) == 0 {
            for pid in with_arg(a, "upkeep") {
                sigkill(pid);
            }
        }
    }
    eprintln!(
        "{TEST}: {} probe events finished, {} killed",
        finished.len(),
        killed.len()
    );
    // A last event, not killed: its upkeep waits for the database.
    ok(a.virsh(&["destroy", LENIENT]), "virsh destroy");

    // The frontend is back: the outage's events reach it, each once.
    rig.pg
        .start()
        .unwrap_or_else(|e| panic!("{}", rig::chain(&e)));
    let back = Instant::now();
    let all_in = wait_for(Duration::from_secs(30), || {
        let evs = events(&k);
        finished
            .iter()
            .all(|op| evs.iter().any(|e| field(e, "op") == op))
            && evs
                .iter()
                .any(|e| field(e, "op") == "release" && field(e, "outcome") == "ok")
    });
    eprintln!(
        "{TEST}: the outage's events in the database {:?} after it was back",
        back.elapsed()
    );
    assert!(all_in, "the outage's events did not all arrive");
    let evs = events(&k);
    let count = |op: &str| evs.iter().filter(|e| field(e, "op") == op).count();
    for op in &finished {
        assert_eq!(count(op), 1, "seed {seed}: {op}");
    }
    for op in &killed {
        assert!(count(op) <= 1, "seed {seed}: {op} twice");
    }
    let probes: Vec<&str> = evs
        .iter()
        .map(|e| field(e, "op"))
        .filter(|op| op.starts_with("probe"))
        .collect();
    let mut sorted = probes.clone();
    sorted.sort();
    assert_eq!(probes, sorted, "seed {seed}: out of order");
    let drift: Vec<&str> = evs
        .iter()
        .filter(|e| field(e, "outcome") == "drift")
        .map(|e| field(e, "message"))
        .collect();
    assert!(
        drift
            .iter()
            .any(|m| m.contains(LENIENT) && m.contains("vcpus: 1 is now 2")),
        "{drift:?}"
    );
    assert!(
        evs.iter().any(|e| field(e, "outcome") == "unreachable"),
        "no event says the database was unreachable"
    );
    assert!(evs.iter().all(|e| field(e, "container") == "node-a"));
    // Once more: nothing is added twice by a later forward.
    let again = json::parse(&k.ok(&["events", "--json", "--limit", "100000"])).unwrap();
    assert_eq!(again.arr().len(), evs.len());
}
