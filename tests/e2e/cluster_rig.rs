//! The cluster rig itself (`kvmroll_tests::rig`), end to end: a private
//! PostgreSQL and two nodes, each its own libvirtd in its own namespaces,
//! all started here. What a cluster test relies on: each node answers with
//! its own host name on its `libvirt_uri`, runs its own guests and its own
//! hook inside itself, reaches the server on its socket; the server stops
//! and starts with its data; and nothing of the rig remains once it is
//! dropped, or once the process holding it is killed.
//!
//! It does not use the machine's libvirtd, nor its /etc/libvirt or
//! /etc/kvmroll.

use kvmroll_tests::rig::{self, Footprint, NodeBuilder, Postgres, Rig, RigError, Role, StopMode};
use kvmroll_tests::{ok, wait_for};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Set in the child process that builds a rig and is then killed.
const CHILD_ENV: &str = "KVMROLL_RIG_CHILD";

/// A hook that records, in the node's own /var/lib/kvmroll, each event with
/// the host name and PID namespace it ran in.
const HOOK: &str = "#!/bin/sh
echo \"$(hostname) $(readlink /proc/self/ns/pid) $1 $2 $3 $4\" >>/var/lib/kvmroll/rig-hook.log
cat >/dev/null
";

/// The hook's log, inside a node.
const HOOK_LOG: &str = "/var/lib/kvmroll/rig-hook.log";

/// The tests of this binary one at a time: a namespace's number is reused
/// as soon as it is freed, so a node another test starts right after one
/// ended can take its numbers, and its processes would look left behind in
/// the first one's footprint.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn admin() -> Role {
    Role::login("kvmroll", "s3cret pass").with("CREATEROLE")
}

/// The diskless fixture guest under another name.
fn guest_xml(name: &str) -> String {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/tiny-guest.xml");
    std::fs::read_to_string(fixture)
        .expect("tests/fixtures/tiny-guest.xml")
        .replace(
            "<name>kvmroll-fixture</name>",
            &format!("<name>{name}</name>"),
        )
}

fn with_hook(n: &mut NodeBuilder) -> Result<(), RigError> {
    n.write("/etc/libvirt/hooks/qemu", HOOK, 0o755).map(drop)
}

fn started(b: rig::RigBuilder) -> Rig {
    b.start()
        .unwrap_or_else(|e| panic!("the rig did not start: {}", rig::chain(&e)))
}

/// `psql -X -A -t -c SQL URL`, run by `cmd`.
fn psql(mut cmd: Command, url: &str, sql: &str) -> Output {
    cmd.args(["-X", "-A", "-t", "-c", sql, url])
        .env_remove("PGPASSWORD")
        .output()
        .expect("psql runs")
}

fn text(out: Output, what: &str) -> String {
    ok(out, what).trim().to_string()
}

/// Defines the fixture guest `name` on `node` and starts it.
fn start_guest(node: &rig::Node, name: &str) {
    let xml = node
        .write("/var/lib/kvmroll/guest.xml", guest_xml(name), 0o644)
        .unwrap();
    ok(
        node.virsh(&["define", &xml.to_string_lossy()]),
        "virsh define",
    );
    ok(node.virsh(&["start", name]), "virsh start");
}

/// The command names of the processes in a footprint's namespaces.
fn comms(f: &Footprint) -> Vec<String> {
    f.processes().into_iter().map(|(_, c)| c).collect()
}

/// Asserts that nothing of the footprints remains within `limit`.
fn assert_nothing_remains(prints: &[Footprint], limit: Duration) {
    let gone = wait_for(limit, || prints.iter().all(|f| f.remains().is_empty()));
    let left: Vec<String> = prints.iter().flat_map(Footprint::remains).collect();
    assert!(gone, "left behind: {left:#?}");
}

/// Folders named after `vm` in the machine's cgroup hierarchies.
fn cgroups_of(vm: &str) -> Vec<String> {
    let mut found = Vec::new();
    for ctrl in std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        for dir in [ctrl.path(), ctrl.path().join("machine")] {
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                if e.file_name().to_string_lossy().contains(vm) {
                    found.push(e.path().display().to_string());
                }
            }
        }
    }
    found
}

// size: one scenario against real daemons, each step on the state the last one left; kept whole
#[test]
fn a_rig_runs_nodes_and_postgres_and_leaves_nothing_when_dropped() {
    let _serial = serial();
    const TEST: &str = "a_rig_runs_nodes_and_postgres_and_leaves_nothing_when_dropped";
    if !rig::available(TEST) {
        return;
    }
    let t0 = Instant::now();
    let mut rig = started(
        Rig::builder()
            .postgres(
                Postgres::builder()
                    .role(admin())
                    .database("kvmroll", "kvmroll"),
            )
            .node("node-a", with_hook)
            .node("node-b", |n| {
                with_hook(n)?;
                // Missing on the machine: made in an overlay of /etc that
                // only node-b sees.
                n.private_dir("/etc/kvmroll-rig-e2e/disks").map(drop)
            }),
    );
    eprintln!("{TEST}: server and two nodes up in {:?}", t0.elapsed());
    let (a, b) = (rig.node("node-a"), rig.node("node-b"));

    // Each node answers with its own host name on its own socket.
    assert_eq!(text(a.virsh(&["hostname"]), "hostname on a"), "node-a");
    assert_eq!(text(b.virsh(&["hostname"]), "hostname on b"), "node-b");
    assert_ne!(a.libvirt_uri(), b.libvirt_uri());

    // A guest started on A is A's alone.
    let vm = format!("rig-e2e-{}", std::process::id());
    let t = Instant::now();
    start_guest(a, &vm);
    eprintln!("{TEST}: guest defined and started in {:?}", t.elapsed());
    assert_eq!(text(a.virsh(&["domstate", &vm]), "domstate"), "running");
    assert!(
        !b.virsh(&["dominfo", &vm]).status.success(),
        "{vm} is on node-b"
    );
    let on_b = text(b.virsh(&["list", "--all", "--name"]), "list on b");
    assert!(!on_b.contains(&vm), "node-b lists {on_b}");
    let machine = Command::new("virsh")
        .args(["-c", "qemu:///system", "dominfo", &vm])
        .output()
        .unwrap();
    assert!(!machine.status.success(), "the machine's libvirtd has {vm}");
    let a_print = a.footprint();
    let qemus: Vec<_> = a_print
        .processes()
        .into_iter()
        .filter(|(_, c)| c.starts_with("qemu-system"))
        .collect();
    assert_eq!(qemus.len(), 1, "QEMU processes in node-a: {qemus:?}");
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", qemus[0].0)).unwrap();
    assert!(String::from_utf8_lossy(&cmdline).contains(&format!("guest={vm}")));
    assert_eq!(
        cgroups_of(&vm),
        Vec::<String>::new(),
        "cgroups on the machine"
    );

    // The hook ran inside A: A's host name and PID namespace, A's own
    // /var/lib/kvmroll; not in B, not on the machine.
    let a_pid_ns = a_print
        .namespaces
        .iter()
        .find(|ns| ns.starts_with("pid:"))
        .unwrap()
        .clone();
    let log = std::fs::read_to_string(a.outside(HOOK_LOG)).expect("node-a's hook log");
    for event in ["prepare begin -", "start begin -", "started begin -"] {
        let line = format!("node-a {a_pid_ns} {vm} {event}");
        assert!(log.lines().any(|l| l == line), "no '{line}' in:\n{log}");
    }
    assert!(!b.outside(HOOK_LOG).exists(), "node-b's hook ran");
    assert!(
        !Path::new(HOOK_LOG).exists(),
        "the machine's {HOOK_LOG} exists"
    );

    // B's private folder under /etc is B's alone.
    let made = b.exec(&["sh", "-c", "echo disk >/etc/kvmroll-rig-e2e/disks/d0"]);
    ok(made, "write in node-b's private folder");
    assert!(b.outside("/etc/kvmroll-rig-e2e/disks/d0").exists());
    assert!(
        !Path::new("/etc/kvmroll-rig-e2e").exists(),
        "made on the machine"
    );

    // PostgreSQL: from inside A on the bound socket, from the machine over
    // TCP with the password; a wrong password is refused.
    let pg = &rig.pg;
    let psql_bin = pg.bin("psql");
    let in_a = pg.url_socket_in(rig::NODE_PG_SOCKET, &admin(), "kvmroll");
    let answer = psql(a.command(&psql_bin), &in_a, "select 1");
    assert_eq!(text(answer, "psql inside node-a"), "1");
    let tcp = pg.url_tcp(&admin(), "kvmroll");
    let who = psql(Command::new(&psql_bin), &tcp, "select current_user");
    assert_eq!(text(who, "psql over TCP"), "kvmroll");
    let wrong = pg.url_tcp(&Role::login("kvmroll", "wrong"), "kvmroll");
    let refused = psql(Command::new(&psql_bin), &wrong, "select 1");
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("password authentication failed"), "{err}");
    let sql = "create table kept (x int); insert into kept values (1)";
    ok(psql(Command::new(&psql_bin), &tcp, sql), "create table");

    // An outage, fast then immediate: refused while stopped, the data back
    // after each start.
    for mode in [StopMode::Fast, StopMode::Immediate] {
        let t = Instant::now();
        pg.stop(mode)
            .unwrap_or_else(|e| panic!("stop {mode:?}: {}", rig::chain(&e)));
        let down = psql(Command::new(&psql_bin), &tcp, "select 1");
        assert!(!down.status.success(), "answered while stopped ({mode:?})");
        let down_in_a = psql(a.command(&psql_bin), &in_a, "select 1");
        assert!(
            !down_in_a.status.success(),
            "answered in node-a while stopped"
        );
        pg.start()
            .unwrap_or_else(|e| panic!("start: {}", rig::chain(&e)));
        eprintln!("{TEST}: stop {mode:?} and start in {:?}", t.elapsed());
        let count = psql(Command::new(&psql_bin), &tcp, "select count(*) from kept");
        assert_eq!(text(count, "count after start"), "1");
    }

    // A restart of A's libvirtd keeps its guest and reruns its hook.
    a.restart_libvirtd()
        .unwrap_or_else(|e| panic!("restart: {}", rig::chain(&e)));
    assert_eq!(text(a.virsh(&["domstate", &vm]), "domstate"), "running");
    let reconnect = format!("node-a {a_pid_ns} {vm} reconnect begin -");
    let seen = wait_for(Duration::from_secs(15), || {
        let log = std::fs::read_to_string(a.outside(HOOK_LOG)).unwrap_or_default();
        log.lines().any(|l| l == reconnect)
    });
    assert!(seen, "no '{reconnect}' after the restart");

    // Every daemon is where it should be; then a stopped node is gone
    // while the other still answers.
    let prints = rig.footprints();
    let [pg_print, a_print, b_print] = &prints[..] else {
        panic!("{prints:?}")
    };
    assert!(
        comms(pg_print).contains(&"postgres".to_string()),
        "{pg_print:?}"
    );
    for want in ["libvirtd", "virtlogd", "qemu-system-x86"] {
        assert!(
            comms(a_print).iter().any(|c| c == want),
            "no {want} in node-a"
        );
    }
    assert!(comms(b_print).iter().any(|c| c == "libvirtd"));
    assert!(!b_print.remains().is_empty());

    // Each node is a host of its own (its host_uuid): the running guest
    // moves from A to B over libvirt's own connection, and B's hook sees it
    // arrive, inside B.
    let t = Instant::now();
    let uri_b = b.libvirt_uri();
    let args = ["migrate", "--live", "--p2p", "--tunnelled", "--persistent"];
    let moved = a.virsh(&[&args[..], &["--undefinesource", &vm, &uri_b]].concat());
    ok(moved, "virsh migrate");
    eprintln!("{TEST}: guest migrated from a to b in {:?}", t.elapsed());
    assert_eq!(
        text(b.virsh(&["domstate", &vm]), "domstate on b"),
        "running"
    );
    assert!(
        !a.virsh(&["dominfo", &vm]).status.success(),
        "{vm} stayed on a"
    );
    assert!(comms(b_print).iter().any(|c| c.starts_with("qemu-system")));
    assert!(!comms(a_print).iter().any(|c| c.starts_with("qemu-system")));
    let b_pid_ns = b_print.namespaces.iter().find(|ns| ns.starts_with("pid:"));
    let arrived = format!("node-b {} {vm} migrate begin -", b_pid_ns.unwrap());
    let b_log = std::fs::read_to_string(b.outside(HOOK_LOG)).expect("node-b's hook log");
    assert!(
        b_log.lines().any(|l| l == arrived),
        "no '{arrived}' in:\n{b_log}"
    );

    rig.node_mut("node-b").stop();
    assert_eq!(b_print.processes(), Vec::new(), "node-b's processes");
    assert!(!rig.node("node-b").virsh(&["hostname"]).status.success());
    assert_eq!(
        text(rig.node("node-a").virsh(&["hostname"]), "a after b stopped"),
        "node-a"
    );

    let t = Instant::now();
    drop(rig);
    eprintln!("{TEST}: dropped in {:?}", t.elapsed());
    // Drop returns once it is all gone: no waiting here.
    assert_nothing_remains(&prints, Duration::ZERO);
}

#[test]
fn a_node_and_a_server_in_a_test_that_panics_leave_nothing() {
    let _serial = serial();
    const TEST: &str = "a_node_and_a_server_in_a_test_that_panics_leave_nothing";
    if !rig::available(TEST) {
        return;
    }
    let prints = std::sync::Mutex::new(Vec::new());
    let failed = std::panic::catch_unwind(|| {
        let node = rig::Node::start("node-p").unwrap();
        let pg = Postgres::builder().start().unwrap();
        assert_eq!(pg.sql("postgres", "select 1").unwrap().trim(), "1");
        start_guest(&node, &format!("rig-panic-{}", std::process::id()));
        *prints.lock().unwrap() = vec![node.footprint(), pg.footprint()];
        panic!("{TEST}: a test failing with a node and a server");
    });
    assert!(failed.is_err());
    let prints = prints.into_inner().unwrap();
    assert_eq!(prints.len(), 2);
    assert_nothing_remains(&prints, Duration::ZERO);
}

#[test]
fn a_rig_whose_process_is_killed_leaves_nothing() {
    let _serial = serial();
    const TEST: &str = "a_rig_whose_process_is_killed_leaves_nothing";
    if !rig::available(TEST) {
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args(["--exact", "child_holds_a_rig_until_killed", "--ignored"])
        .args(["--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut prints = Vec::new();
    let mut ready = false;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        // libtest may have begun the line with the test's name.
        if let Some((_, print)) = line.split_once("FOOTPRINT ") {
            prints.push(Footprint::from_line(print).unwrap());
        } else if line == "READY" {
            ready = true;
            break;
        }
    }
    assert!(
        ready,
        "the child ended before its rig was up: {:?}",
        child.wait()
    );
    // The server, the node and the network linking it.
    assert_eq!(prints.len(), 3, "{prints:?}");
    let running: Vec<String> = prints.iter().flat_map(comms).collect();
    for want in ["postgres", "libvirtd", "virtlogd", "qemu-system-x86"] {
        assert!(
            running.iter().any(|c| c == want),
            "no {want} in {running:?}"
        );
    }

    // SIGKILL: no destructor, no handler runs.
    child.kill().unwrap();
    child.wait().unwrap();
    let t = Instant::now();
    assert_nothing_remains(&prints, Duration::from_secs(20));
    eprintln!("{TEST}: all gone {:?} after the kill", t.elapsed());
}

/// Run by [`a_rig_whose_process_is_killed_leaves_nothing`] in a child
/// process: builds a rig with a running guest on a node linked to the
/// rig's network, prints its footprints and waits to be killed.
#[test]
#[ignore = "a helper process of a_rig_whose_process_is_killed_leaves_nothing"]
fn child_holds_a_rig_until_killed() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let rig = started(
        Rig::builder()
            .postgres(Postgres::builder().role(admin()))
            .node("node-k", with_hook)
            .network(),
    );
    start_guest(
        rig.node("node-k"),
        &format!("rig-kill-{}", std::process::id()),
    );
    for print in rig.footprints() {
        println!("FOOTPRINT {}", print.to_line());
    }
    println!("READY");
    // Killed long before this, unless the parent died first.
    std::thread::sleep(Duration::from_secs(120));
}

static SHARED: OnceLock<Rig> = OnceLock::new();
static SHARED_BUILDS: AtomicUsize = AtomicUsize::new(0);

/// This binary's shared rig: a server with the admin role and its data on
/// disk, no node.
fn shared() -> &'static Rig {
    Rig::shared(&SHARED, || {
        SHARED_BUILDS.fetch_add(1, Ordering::SeqCst);
        Rig::builder().postgres(Postgres::builder().role(admin()).durable())
    })
}

#[test]
fn a_shared_rig_is_built_once_and_gives_each_test_its_own_database() {
    let _serial = serial();
    const TEST: &str = "a_shared_rig_is_built_once_and_gives_each_test_its_own_database";
    if !rig::available(TEST) {
        return;
    }
    let rigs: Vec<usize> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..3)
            .map(|_| s.spawn(|| shared() as *const Rig as usize))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(rigs.windows(2).all(|w| w[0] == w[1]), "{rigs:?}");
    assert_eq!(SHARED_BUILDS.load(Ordering::SeqCst), 1);
    let pg = &shared().pg;
    let one = pg.fresh_database("kvmroll").unwrap();
    let two = pg.fresh_database("kvmroll").unwrap();
    assert_ne!(one, two);
    let psql_bin = pg.bin("psql");
    ok(
        psql(
            Command::new(&psql_bin),
            &pg.url_tcp(&admin(), &one),
            "create table t (x int)",
        ),
        "create in the first",
    );
    let other = psql(
        Command::new(&psql_bin),
        &pg.url_tcp(&admin(), &two),
        "select count(*) from t",
    );
    assert!(
        !other.status.success(),
        "the second database has the first's table"
    );
}
