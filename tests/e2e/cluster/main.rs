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

// size: the cluster's set-up in the order a site does it (README.md, "A cluster"); kept whole
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
        Vm::new(self.rig, &self.k, name)
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

/// A test's VM, removed from both nodes and the database when dropped.
type Vm<'f> = kvmroll_tests::RigVm<'f>;

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
    kvmroll_tests::lines_about(node, PLUGIN_LOG, vm)
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

mod containers;
mod faults;
