//! Moving VMs between containers (issue 14) on the rig, end to end: a
//! frontend (this test process's `kvmroll`, on PostgreSQL over TCP) and two
//! VM containers (rig nodes: their own libvirtd, with their own
//! `host_uuid`, the static hook, a plugin in each stage that logs where and
//! when it ran, and a `kvmroll.conf` reaching the database as the
//! containers' role), linked by the rig's network for native migrations.
//!
//! One rig serves the whole binary ([`Rig::shared`]); its tests take turns
//! ([`SERIAL`]). Each VM is named after this process and its test, and is
//! destroyed and undefined on both nodes when its test ends.
//!
//! Each module is one scenario; a new one needs only its `mod` line below.
//! It does not use the machine's libvirtd, nor its /etc/libvirt or
//! /etc/kvmroll.

use kvmroll_tests::json::{self, Get};
use kvmroll_tests::rig::{self, Node, Postgres, Rig, Role};
use kvmroll_tests::{prefix, Kvmroll};
use std::process::Output;
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};

mod evacuate;
mod kills;
mod moves;
mod native;

const A: &str = "node-a";
const B: &str = "node-b";
/// Each node's plugins log here, inside the node.
const PLUGIN_LOG: &str = "/var/lib/kvmroll/plugins.log";

/// A plugin that logs the node, stage, libvirt's event, the migration's
/// destination if any, and the VM.
const LOG_PLUGIN: &str = "#!/bin/sh
echo \"$(hostname) $KVMROLL_STAGE $KVMROLL_OP $KVMROLL_SUBOP to=${KVMROLL_MIGRATED_TO:--} $KVMROLL_VM\" >>/var/lib/kvmroll/plugins.log
";

/// One test at a time: they share the nodes.
static SERIAL: Mutex<()> = Mutex::new(());
static RIG: OnceLock<Rig> = OnceLock::new();
static FRONTEND: OnceLock<Frontend> = OnceLock::new();

fn admin() -> Role {
    Role::login("kvmroll", "fr0ntend pass").with("CREATEROLE")
}

fn container_role() -> Role {
    Role::login("kvmroll_container", "c0ntainer pass")
}

/// The frontend: the cluster database with both containers.
struct Frontend {
    rig: &'static Rig,
    /// `kvmroll --db` over TCP, as the administrator.
    k: Kvmroll,
}

/// This binary's frontend, and this test's turn; `None` to skip (never
/// under `KVMROLL_E2E=1`).
fn frontend(test: &str) -> Option<(&'static Frontend, MutexGuard<'static, ()>)> {
    if !rig::available(test) {
        return None;
    }
    let turn = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    Some((FRONTEND.get_or_init(set_up), turn))
}

fn set_up() -> Frontend {
    let rig = Rig::shared(&RIG, || {
        let node = |n: &mut rig::NodeBuilder| n.install_hook(&kvmroll_tests::static_hook());
        Rig::builder()
            .postgres(
                Postgres::builder()
                    .role(admin())
                    .database("kvmroll", &admin().name),
            )
            .node(A, node)
            .node(B, node)
            // For native migrations (native.rs): tunnelled ones need none.
            .network()
    });
    let k = kvmroll_tests::rig_cluster(rig, &admin(), &container_role(), A);
    kvmroll_tests::node_conf(rig, &container_role(), B);
    let nodes: Vec<&Node> = rig.nodes().iter().collect();
    k.rig_containers(&nodes, 2);
    for node in nodes {
        for stage in ["allocate", "preboot", "shutdown"] {
            let plugin = format!("/etc/kvmroll/plugins/{stage}.d/10-log");
            node.write(&plugin, LOG_PLUGIN, 0o755)
                .unwrap_or_else(|e| panic!("{}", rig::chain(&e)));
        }
    }
    Frontend { rig, k }
}

impl Frontend {
    fn node(&self, name: &str) -> &Node {
        self.rig.node(name)
    }

    /// A running 64 MiB one-vCPU guest on `node`, `pin_auto`, with the
    /// attributes `attrs`; its guard removes it from both nodes.
    fn running_vm(&self, tag: &str, node: &str, attrs: &[(&str, &str)]) -> Vm<'_> {
        let name = format!("{}-{tag}", prefix("mig"));
        self.k.add_small_vm(&name, node);
        self.k
            .ok(&["attr", "set", &name, "kvm_cpu_pinning", "pin_auto"]);
        for (attr, value) in attrs {
            self.k.ok(&["attr", "set", &name, attr, value]);
        }
        let vm = Vm::new(self.rig, &self.k, name);
        self.k.ok(&["vm", "define", &vm.name]);
        self.k.ok(&["vm", "start", &vm.name]);
        vm
    }

    /// `kvmroll vm migrate VM --to NODE`.
    fn migrate(&self, vm: &str, to: &str) -> Output {
        self.k.run(&["vm", "migrate", vm, "--to", to])
    }

    /// The container the database places `vm` on.
    fn placed(&self, vm: &str) -> String {
        let shown = self.k.ok(&["vm", "show", vm, "--json"]);
        let doc = json::parse(&shown).expect("vm show --json");
        doc.at("container").str().unwrap_or("-").to_string()
    }

    /// Whether `vm` carries the mark of a migration under way.
    fn marked(&self, vm: &str) -> bool {
        self.k
            .run(&["attr", "get", vm, "kvm_migrating_from"])
            .status
            .success()
    }
}

/// A test's VM, removed from both nodes and the database when dropped.
type Vm<'f> = kvmroll_tests::RigVm<'f>;

/// `virsh domstate` of `vm` on `node`; `None` when it has no such domain.
fn state(node: &Node, vm: &str) -> Option<String> {
    let out = node.virsh(&["domstate", vm]);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Whether `node` has a persistent definition of `vm`.
fn persistent(node: &Node, vm: &str) -> bool {
    let out = node.virsh(&["dominfo", vm]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.starts_with("Persistent:") && l.ends_with("yes"))
}

/// The lines of `node`'s plugin log about `vm`, without the VM's name.
fn plugin_runs(node: &Node, vm: &str) -> Vec<String> {
    kvmroll_tests::lines_about(node, PLUGIN_LOG, vm)
}

/// The stderr of a run, for messages.
fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}
