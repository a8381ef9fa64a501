//! A cluster of machines (issue 8) on the rig, end to end: a frontend (this
//! test process's `kvmroll`, on a PostgreSQL database over TCP) and two VM
//! containers (rig nodes, each its own libvirtd with the static hook, its
//! own plugins, and a `kvmroll.conf` written from its own kickstart
//! fragment; node-a's credential comes in its kickstart, node-b's is
//! installed by hand as the kickstart tells). The nodes run the workspace's
//! binaries at the paths their configuration names: the build folder is
//! bound at `/usr/local/bin` in each.
//!
//! One rig serves the whole binary ([`Rig::shared`]); its tests take turns
//! ([`SERIAL`]): `kvmroll-guests stop` acts on every guest of a container,
//! and one test stops the server. Each VM is named after this process, and
//! is destroyed and undefined on both nodes when its test ends.
//!
//! Events may reach the database through a spool on the container (a later
//! design): the tests wait up to [`EVENTS_WAIT`] for those they expect.
//!
//! It does not use the machine's libvirtd, nor its /etc/libvirt or
//! /etc/kvmroll.

use kvmroll_tests::json::{self, Get};
use kvmroll_tests::rig::{self, Node, Postgres, Rig, Role, StopMode, NODE_PG_SOCKET};
use kvmroll_tests::{bin, bin_dir, ok, prefix, wait_for, Kvmroll, GUEST_CPU_MODE};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

const A: &str = "node-a";
const B: &str = "node-b";
/// The cluster database, and the role containers connect as.
const DB: &str = "kvmroll";
const CONTAINER_ROLE: &str = "kvmroll_container";
const CONTAINER_PASSWORD: &str = "c0ntainer pass";
/// How long events may take to reach the frontend's database.
const EVENTS_WAIT: Duration = Duration::from_secs(10);
/// Each node's plugins log here, inside the node.
const PLUGIN_LOG: &str = "/var/lib/kvmroll/plugins.log";
/// The disk root of the disk test, private to each node.
const DISK_ROOT: &str = "/var/lib/kvmroll/disks";

/// One test at a time (see the module notes).
static SERIAL: Mutex<()> = Mutex::new(());
static RIG: OnceLock<Rig> = OnceLock::new();
static FRONTEND: OnceLock<Frontend> = OnceLock::new();

fn admin() -> Role {
    Role::login("kvmroll", "fr0ntend pass").with("CREATEROLE")
}

/// A plugin that logs the node, stage and VM it ran for.
const LOG_PLUGIN: &str = "#!/bin/sh
echo \"$(hostname) $KVMROLL_STAGE $KVMROLL_VM\" >>/var/lib/kvmroll/plugins.log
";

/// The frontend, set up once: the cluster database with both containers,
/// and each container's configuration from its kickstart.
struct Frontend {
    rig: &'static Rig,
    /// `kvmroll --db` over TCP, as the administrator.
    k: Kvmroll,
    /// Holds the frontend's copy of the containers' credential.
    _dir: tempfile::TempDir,
}

/// This binary's frontend and rig, and this test's turn; `None` to skip
/// (never under `KVMROLL_E2E=1`).
fn frontend(test: &str) -> Option<(&'static Frontend, MutexGuard<'static, ()>)> {
    if !rig::available(test) {
        return None;
    }
    let turn = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    let t = Instant::now();
    let f = FRONTEND.get_or_init(set_up);
    if t.elapsed() > Duration::from_millis(100) {
        eprintln!("{test}: rig and frontend set up in {:.1?}", t.elapsed());
    }
    Some((f, turn))
}

fn set_up() -> Frontend {
    let rig = Rig::shared(&RIG, || {
        let node = |n: &mut rig::NodeBuilder| {
            // Before the daemons start: libvirtd reads its hooks only then.
            n.install_hook(&kvmroll_tests::static_hook())?;
            // kvmroll.conf (from the kickstart) names no CLI: its default
            // takes /usr/local/bin/kvmroll first.
            n.bind(&bin_dir(), "/usr/local/bin")?;
            n.private_dir(DISK_ROOT).map(drop)
        };
        Rig::builder()
            .postgres(Postgres::builder().role(admin()).database(DB, "kvmroll"))
            .node(A, node)
            .node(B, node)
    });
    let k = Kvmroll::new(rig.pg.url_tcp(&admin(), DB));
    let dir = tempfile::tempdir().unwrap();
    let password_file = write_private(dir.path(), "container.password", CONTAINER_PASSWORD);
    let pw = password_file.to_str().unwrap();
    k.ok(&[
        "db",
        "init",
        "--container-role",
        CONTAINER_ROLE,
        "--container-password-file",
        pw,
    ]);
    for node in rig.nodes() {
        let name = node.name();
        k.ok(&[
            "host",
            "add",
            name,
            "--appliance",
            "vm-container",
            "--cpus",
            "2",
        ]);
        k.ok(&["attr", "set", name, "libvirt_uri", &node.libvirt_uri()]);
        // Non-autostart test guests ignore ACPI: destroyed after 2 s.
        k.ok(&["attr", "set", name, "kvm_guests_shutdown_timeout", "2"]);
        k.ok(&["attr", "set", name, "kvm_guests_on_timeout", "destroy"]);
    }
    k.ok(&[
        "attr",
        "set",
        "--appliance",
        "hosted-vm",
        "cpu_mode",
        GUEST_CPU_MODE,
    ]);
    k.ok(&["attr", "set", "--global", "kvm_graphics", "none"]);
    // What containers connect with: the server's socket folder as they see
    // it, the containers' role, its password in a passfile (libpq's format;
    // a unix socket matches the host "localhost").
    let port = rig.pg.port();
    let url = format!(
        "postgresql://{CONTAINER_ROLE}@/{DB}?host={NODE_PG_SOCKET}&port={port}&connect_timeout=5"
    );
    k.ok(&["attr", "set", "--global", "kvmroll_db_url", &url]);
    let passfile_line = format!("localhost:{port}:{DB}:{CONTAINER_ROLE}:{CONTAINER_PASSWORD}\n");
    let passfile = write_private(dir.path(), "db.pgpass", &passfile_line);
    k.ok(&[
        "attr",
        "set",
        A,
        "kvmroll_db_credential_in_kickstart",
        "true",
    ]);
    k.ok(&[
        "attr",
        "set",
        A,
        "kvmroll_db_passfile",
        passfile.to_str().unwrap(),
    ]);

    for node in rig.nodes() {
        let post = kickstart_post(&k, node.name());
        let conf = heredoc(&post, "/etc/kvmroll/kvmroll.conf").unwrap_or_else(|| {
            panic!(
                "{}'s kickstart writes no kvmroll.conf:\n{post}",
                node.name()
            )
        });
        assert!(conf.contains(&format!("db = {url}\n")), "{conf}");
        node.write("/etc/kvmroll/kvmroll.conf", &conf, 0o644)
            .unwrap();
        let credential = heredoc(&post, "/etc/kvmroll/db.pgpass");
        if node.name() == A {
            let credential = credential.expect("node-a's kickstart carries its credential");
            assert_eq!(credential, passfile_line);
            node.write("/etc/kvmroll/db.pgpass", credential, 0o600)
                .unwrap();
        } else {
            // Out of band, as the kickstart's comment says.
            assert_eq!(credential, None, "node-b's kickstart carries a credential");
            assert!(
                post.contains("install it as /etc/kvmroll/db.pgpass, mode 0600"),
                "{post}"
            );
            node.write("/etc/kvmroll/db.pgpass", &passfile_line, 0o600)
                .unwrap();
        }
        for stage in ["allocate", "preboot", "shutdown"] {
            let plugin = format!("/etc/kvmroll/plugins/{stage}.d/10-log");
            node.write(&plugin, LOG_PLUGIN, 0o755).unwrap();
        }
    }
    Frontend { rig, k, _dir: dir }
}

/// A file only its owner can read.
fn write_private(dir: &Path, name: &str, text: &str) -> PathBuf {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(name);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .unwrap();
    std::io::Write::write_all(&mut f, text.as_bytes()).unwrap();
    path
}

/// The shell text of `kvmroll-gen kickstart NODE`'s `<post>` section.
fn kickstart_post(k: &Kvmroll, node: &str) -> String {
    let out = bin("kvmroll-gen")
        .arg("--db")
        .arg(&k.db)
        .args(["kickstart", node])
        .output()
        .unwrap();
    let xml = ok(out, &format!("kvmroll-gen kickstart {node}"));
    let doc = kvmroll_core::xml::parse_document(&xml).expect("the kickstart is XML");
    doc.child("post").expect("a <post> section").text.clone()
}

/// The body of the here-document the post section writes to `path`.
fn heredoc(post: &str, path: &str) -> Option<String> {
    let end = kvmroll_core::hostfiles::HEREDOC_END;
    let start = format!("cat > '{path}' <<'{end}'\n");
    let body = &post[post.find(&start)? + start.len()..];
    let stop = body.find(&format!("\n{end}\n"))?;
    Some(format!("{}\n", &body[..stop]))
}

impl Frontend {
    fn node(&self, name: &str) -> &Node {
        self.rig.node(name)
    }

    /// Adds a 64 MiB one-vCPU guest on `node` and defines it there from
    /// the frontend; its guard removes it from both nodes.
    fn vm(&self, tag: &str, node: &str, attrs: &[(&str, &str)]) -> Vm<'_> {
        let name = format!("{}-{tag}", prefix("cl"));
        self.k.add_small_vm(&name, node);
        for (attr, value) in attrs {
            self.k.ok(&["attr", "set", &name, attr, value]);
        }
        Vm { f: self, name }
    }

    /// `kvmroll events --vm VM --json` as (stage, op subop, plugin file).
    fn events(&self, vm: &str) -> Vec<(String, String, String)> {
        let text = self
            .k
            .ok(&["events", "--vm", vm, "--limit", "500", "--json"]);
        json::parse(&text)
            .expect("events --json")
            .arr()
            .iter()
            .map(|e| {
                let plugin = e.at("plugin").str().unwrap_or("-");
                (
                    e.at("stage").str().unwrap_or_default().to_string(),
                    format!(
                        "{} {}",
                        e.at("op").str().unwrap_or_default(),
                        e.at("subop").str().unwrap_or_default()
                    ),
                    plugin.rsplit('/').next().unwrap_or(plugin).to_string(),
                )
            })
            .collect()
    }

    /// Waits until the events of `vm` include a plugin run of each stage.
    fn wait_plugin_events(&self, vm: &str, stages: &[&str]) -> bool {
        wait_for(EVENTS_WAIT, || {
            let seen = self.events(vm);
            stages
                .iter()
                .all(|s| seen.iter().any(|(st, _, p)| st == s && p == "10-log"))
        })
    }
}

/// A test's VM: destroyed and undefined on both nodes, and removed from
/// the database, when dropped.
struct Vm<'f> {
    f: &'f Frontend,
    name: String,
}

impl Drop for Vm<'_> {
    fn drop(&mut self) {
        for node in self.f.rig.nodes() {
            let _ = node.virsh(&["destroy", &self.name]);
            let _ = node.virsh(&["undefine", &self.name, "--managed-save"]);
        }
        let _ = self.f.k.run(&["--no-sync", "vm", "remove", &self.name]);
    }
}

/// `virsh ARGS` run inside `node`, as its administrator would.
fn virsh_in(node: &Node, args: &[&str]) -> Output {
    node.command("virsh").arg("-q").args(args).output().unwrap()
}

fn virsh_ok_in(node: &Node, args: &[&str]) -> String {
    ok(
        virsh_in(node, args),
        &format!("virsh {args:?} in {}", node.name()),
    )
    .trim()
    .to_string()
}

fn domstate(node: &Node, vm: &str) -> String {
    virsh_ok_in(node, &["domstate", vm])
}

fn defined(node: &Node, vm: &str) -> bool {
    node.virsh(&["dominfo", vm]).status.success()
}

/// The lines of `node`'s plugin log about `vm`, without the VM's name.
fn plugin_runs(node: &Node, vm: &str) -> Vec<String> {
    std::fs::read_to_string(node.outside(PLUGIN_LOG))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_suffix(&format!(" {vm}")))
        .map(str::to_string)
        .collect()
}

/// A program of the build, run inside `node` at the path the node's
/// configuration names, reading that configuration.
fn in_node(node: &Node, program: &str, args: &[&str]) -> Output {
    let mut c = node.command(format!("/usr/local/bin/{program}"));
    for var in [
        "KVMROLL_DB",
        "KVMROLL_CONF",
        "KVMROLL_DB_READONLY",
        "KVMROLL_STAGE",
        "PGPASSWORD",
    ] {
        c.env_remove(var);
    }
    c.args(args).stdin(Stdio::null()).output().unwrap()
}

/// Asserts a fault: exit 1, one line on stderr holding `expect`, nothing
/// on stdout.
fn assert_fault(out: &Output, expect: &str, what: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{what}: {err}");
    assert_eq!(err.lines().count(), 1, "{what}: not one line: {err}");
    assert!(err.contains(expect), "{what}: {err:?} lacks {expect:?}");
    assert!(out.stdout.is_empty(), "{what}: printed {:?}", out.stdout);
}

#[test]
fn vms_defined_from_the_frontend_run_their_containers_plugins_there() {
    const TEST: &str = "vms_defined_from_the_frontend_run_their_containers_plugins_there";
    let Some((f, _turn)) = frontend(TEST) else {
        return;
    };
    let (a, b) = (f.node(A), f.node(B));
    let va = f.vm("va", A, &[]);
    let vb = f.vm("vb", B, &[]);
    let t = Instant::now();
    f.k.ok(&["vm", "define", &va.name, &vb.name]);
    assert!(defined(a, &va.name) && !defined(b, &va.name));
    assert!(defined(b, &vb.name) && !defined(a, &vb.name));
    for (node, vm) in [(a, &va.name), (b, &vb.name)] {
        virsh_ok_in(node, &["start", vm]);
        assert_eq!(domstate(node, vm), "running");
        virsh_ok_in(node, &["destroy", vm]);
    }
    eprintln!(
        "{TEST}: two VMs defined, started and destroyed in {:.1?}",
        t.elapsed()
    );

    // Each container ran its own plugins, for its own VM only.
    let stages = ["allocate", "preboot", "shutdown"];
    for (node, mine, other) in [(a, &va.name, &vb.name), (b, &vb.name, &va.name)] {
        let want: Vec<String> = stages
            .iter()
            .map(|s| format!("{} {s}", node.name()))
            .collect();
        let ran = wait_for(EVENTS_WAIT, || plugin_runs(node, mine) == want);
        assert!(ran, "{}: {:?}", node.name(), plugin_runs(node, mine));
        assert!(
            plugin_runs(node, other).is_empty(),
            "{} ran {other}'s",
            node.name()
        );
    }
    // The frontend sees both containers' events.
    for vm in [&va.name, &vb.name] {
        assert!(
            f.wait_plugin_events(vm, &stages),
            "{vm}: {:?}",
            f.events(vm)
        );
        let seen = f.events(vm);
        for event in ["prepare begin", "start begin", "release end"] {
            assert!(
                seen.iter().any(|(_, e, _)| e == event),
                "{vm}: no {event} in {seen:?}"
            );
        }
    }
    let all = f.k.ok(&["events", "--limit", "500"]);
    assert!(all.contains(&va.name) && all.contains(&vb.name), "{all}");
}

#[test]
fn an_allocate_plugin_moves_a_vm_and_its_definition_follows() {
    const TEST: &str = "an_allocate_plugin_moves_a_vm_and_its_definition_follows";
    let Some((f, _turn)) = frontend(TEST) else {
        return;
    };
    let (a, b) = (f.node(A), f.node(B));
    let vm = f.vm("moved", A, &[]);
    f.k.ok(&["vm", "define", &vm.name]);
    // This VM's own allocate plugin on A sends it to B, through the
    // cluster database, as the container's role.
    let mover = format!("/etc/kvmroll/vms/{}/allocate.d/20-move", vm.name);
    let script = "#!/bin/sh\nexec kvmroll vm set \"$KVMROLL_VM\" --container node-b\n";
    a.write(&mover, script, 0o755).unwrap();

    let t = Instant::now();
    let out = virsh_in(a, &["start", &vm.name]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started on A");
    assert!(
        err.contains(&format!("VM {} was moved to container node-b", vm.name)),
        "{err}"
    );
    let show = f.k.ok(&["vm", "show", &vm.name, "--json"]);
    assert_eq!(json::parse(&show).unwrap().at("container").str(), Some(B));

    // Its definition leaves A for B by itself, once libvirt on A is done.
    let moved = wait_for(Duration::from_secs(20), || {
        !defined(a, &vm.name) && defined(b, &vm.name)
    });
    assert!(
        moved,
        "defined on A: {}, on B: {}",
        defined(a, &vm.name),
        defined(b, &vm.name)
    );
    eprintln!(
        "{TEST}: refused on A and defined on B in {:.1?}",
        t.elapsed()
    );
    virsh_ok_in(b, &["start", &vm.name]);
    assert_eq!(domstate(b, &vm.name), "running");
    assert_eq!(
        plugin_runs(a, &vm.name).first().map(String::as_str),
        Some("node-a allocate")
    );
    let on_b = plugin_runs(b, &vm.name);
    assert_eq!(on_b, ["node-b allocate", "node-b preboot"], "{on_b:?}");
    virsh_ok_in(b, &["destroy", &vm.name]);
}

#[test]
fn kvmroll_guests_saves_and_restores_a_containers_vms_and_leaves_the_others() {
    const TEST: &str = "kvmroll_guests_saves_and_restores_a_containers_vms_and_leaves_the_others";
    let Some((f, _turn)) = frontend(TEST) else {
        return;
    };
    let (a, b) = (f.node(A), f.node(B));
    let saved = f.vm("saved", A, &[("kvm_autostart", "true")]);
    let other = f.vm("other", B, &[("kvm_autostart", "true")]);
    f.k.ok(&["vm", "define", &saved.name, &other.name]);
    virsh_ok_in(a, &["start", &saved.name]);
    virsh_ok_in(b, &["start", &other.name]);
    let b_pid =
        || std::fs::read_to_string(b.outside(format!("/run/libvirt/qemu/{}.pid", other.name)));
    let b_before = b_pid().expect("the QEMU pid of B's VM");

    let t = Instant::now();
    let stop = in_node(a, "kvmroll-guests", &["stop"]);
    ok(stop, "kvmroll-guests stop on node-a");
    assert_eq!(domstate(a, &saved.name), "shut off");
    let info = virsh_ok_in(a, &["dominfo", &saved.name]);
    assert!(
        info.lines()
            .any(|l| l.starts_with("Managed save:") && l.ends_with("yes")),
        "{info}"
    );
    a.restart_libvirtd()
        .unwrap_or_else(|e| panic!("{}", rig::chain(&e)));
    let start = in_node(a, "kvmroll-guests", &["start"]);
    ok(start, "kvmroll-guests start on node-a");
    eprintln!(
        "{TEST}: stop, libvirtd restart and start on A in {:.1?}",
        t.elapsed()
    );
    assert_eq!(domstate(a, &saved.name), "running");
    // Restored from its image: QEMU was given the saved state.
    let pid = std::fs::read_to_string(a.outside(format!("/run/libvirt/qemu/{}.pid", saved.name)))
        .unwrap();
    // The pid is the node's: its /proc is read inside it.
    let cmdline = a
        .command("cat")
        .arg(format!("/proc/{}/cmdline", pid.trim()))
        .output()
        .unwrap()
        .stdout;
    assert!(
        String::from_utf8_lossy(&cmdline).contains("-incoming"),
        "not restored: {}",
        String::from_utf8_lossy(&cmdline).replace('\0', " ")
    );
    let status = in_node(a, "kvmroll-guests", &["status", "--json"]);
    let status = json::parse(&ok(status, "kvmroll-guests status")).unwrap();
    let names: Vec<&str> = status
        .at("vms")
        .arr()
        .iter()
        .filter_map(|v| v.at("name").str())
        .collect();
    assert!(
        names.contains(&saved.name.as_str()) && !names.contains(&other.name.as_str()),
        "{names:?}"
    );

    // B's VM ran on, the same QEMU all along.
    assert_eq!(domstate(b, &other.name), "running");
    assert_eq!(b_pid().unwrap(), b_before);
    virsh_ok_in(a, &["destroy", &saved.name]);
    virsh_ok_in(b, &["destroy", &other.name]);
}

/// Issue 17's last check: on the rig, where each container's disk root is
/// its own, a VM defined from the frontend gets its disk made on its
/// container at its first start, not on the frontend nor on the other.
#[test]
fn a_missing_disk_is_made_on_its_container_not_on_the_frontend() {
    const TEST: &str = "a_missing_disk_is_made_on_its_container_not_on_the_frontend";
    let Some((f, _turn)) = frontend(TEST) else {
        return;
    };
    let (a, b) = (f.node(A), f.node(B));
    let vm = f.vm("disk", B, &[("kvm_disk_roots", DISK_ROOT)]);
    let image = format!("{DISK_ROOT}/{}.qcow2", vm.name);
    f.k.ok(&[
        "vm",
        "disk",
        "add",
        &vm.name,
        &format!("qcow2:{image},vda,virtio,1"),
    ]);
    f.k.ok(&["vm", "define", &vm.name]);
    assert!(!b.outside(&image).exists());
    virsh_ok_in(b, &["start", &vm.name]);
    assert_eq!(domstate(b, &vm.name), "running");
    let made = b.outside(&image);
    assert!(made.exists(), "no {image} on node-b");
    let info = Command::new("qemu-img")
        .args(["info", "--output=json", "-U"])
        .arg(&made)
        .output()
        .unwrap();
    let info = json::parse(&ok(info, "qemu-img info")).unwrap();
    assert_eq!(info.at("format").str(), Some("qcow2"));
    assert_eq!(info.at("virtual-size").num(), Some((1u64 << 30) as f64));
    assert!(!Path::new(&image).exists(), "made on the frontend");
    assert!(!a.outside(&image).exists(), "made on node-a");
    virsh_ok_in(b, &["destroy", &vm.name]);
    // The database knows the image was made there.
    let out = f.k.run(&["vm", "remove", &vm.name]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(&format!("images stay on node-b: {image}")),
        "{err}"
    );
}

#[test]
fn faults_are_one_line_and_change_nothing() {
    const TEST: &str = "faults_are_one_line_and_change_nothing";
    let Some((f, _turn)) = frontend(TEST) else {
        return;
    };
    let pg = &f.rig.pg;
    let port = pg.port();
    let listed = f.k.ok(&["host", "list"]);

    // A wrong password.
    let wrong = Kvmroll::new(pg.url_tcp(&Role::login("kvmroll", "not it"), DB));
    assert_fault(
        &wrong.run(&["host", "list"]),
        "refused the password of user kvmroll",
        "wrong password",
    );
    assert_fault(
        &wrong.run(&["host", "add", "intruder"]),
        "refused the password of user kvmroll",
        "wrong password, a write",
    );

    // A password file that others can read.
    let dir = tempfile::tempdir().unwrap();
    let passfile = dir.path().join("pgpass");
    std::fs::write(&passfile, format!("*:*:*:kvmroll:{}\n", admin().password)).unwrap();
    std::fs::set_permissions(
        &passfile,
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    let readable = Kvmroll::new(format!(
        "postgresql://kvmroll@127.0.0.1:{port}/{DB}?passfile={}",
        passfile.display()
    ));
    assert_fault(
        &readable.run(&["host", "list"]),
        &format!(
            "password file {} is not used: group or others have access to it",
            passfile.display()
        ),
        "world-readable passfile",
    );
    std::fs::set_permissions(
        &passfile,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    assert_eq!(readable.ok(&["host", "list"]), listed);

    // A database of a newer schema: refused, untouched.
    let newer = pg.fresh_database("kvmroll").unwrap();
    let k_newer = Kvmroll::new(pg.url_tcp(&admin(), &newer));
    k_newer.ok(&["db", "init"]);
    pg.sql(
        &newer,
        "UPDATE kvmroll_meta SET value = '99' WHERE key = 'schema_version';",
    )
    .unwrap();
    let dump = || {
        pg.sql(
            &newer,
            "SELECT h FROM hosts h; SELECT a FROM appliances a; SELECT m FROM kvmroll_meta m;",
        )
        .unwrap()
    };
    let before = dump();
    for args in [
        &["host", "list"][..],
        &["host", "add", "h"],
        &["db", "init"],
    ] {
        assert_fault(
            &k_newer.run(args),
            "has schema version 99, newer than this kvmroll knows",
            "newer schema",
        );
    }
    assert_eq!(dump(), before);

    // The server stopped: the line names its host and port; back, nothing
    // changed.
    pg.stop(StopMode::Fast)
        .unwrap_or_else(|e| panic!("{}", rig::chain(&e)));
    let down = [
        f.k.run(&["host", "list"]),
        f.k.run(&["attr", "set", "--global", "x", "1"]),
    ];
    pg.start().unwrap_or_else(|e| panic!("{}", rig::chain(&e)));
    for out in &down {
        assert_fault(
            out,
            &format!("cannot reach the database server at 127.0.0.1 port {port}"),
            "server stopped",
        );
    }
    assert_eq!(f.k.ok(&["host", "list"]), listed);
    assert_eq!(f.k.run(&["attr", "get", A, "x"]).status.code(), Some(1));
}

/// Two CLIs changing one VM at once on PostgreSQL, again and again: each
/// adds a NIC (a read, then a write of the VM's whole row set). Every one
/// that said it succeeded is kept; one that failed said so in one line.
#[test]
fn two_clis_writing_one_vm_at_once_lose_nothing() {
    const TEST: &str = "two_clis_writing_one_vm_at_once_lose_nothing";
    let Some((f, _turn)) = frontend(TEST) else {
        return;
    };
    let vm = f.vm("both", A, &[]);
    let mut kept = Vec::new();
    for round in 0..8 {
        let children: Vec<_> = ["x", "y"]
            .iter()
            .map(|who| {
                let mac = format!(
                    "52:54:00:ee:{round:02x}:{}",
                    if *who == "x" { "01" } else { "02" }
                );
                let child = bin("kvmroll")
                    .arg("--db")
                    .arg(&f.k.db)
                    .args(["--no-sync", "vm", "nic", "add", &vm.name])
                    .arg(format!("bridge:br-{who},mac={mac}"))
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap();
                (mac, child)
            })
            .collect();
        for (mac, child) in children {
            let out = child.wait_with_output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            if out.status.success() {
                kept.push(mac);
            } else {
                assert_eq!(err.lines().count(), 1, "not one line: {err}");
                assert!(err.starts_with("kvmroll: "), "{err}");
            }
        }
    }
    let show = json::parse(&f.k.ok(&["vm", "show", &vm.name, "--json"])).unwrap();
    let mut macs: Vec<String> = show
        .at("nics")
        .arr()
        .iter()
        .filter_map(|n| n.at("mac").str().map(str::to_string))
        .collect();
    macs.sort();
    kept.sort();
    assert_eq!(macs, kept, "a change that succeeded was lost");
    assert!(kept.len() >= 8, "most were refused: {kept:?}");
}
