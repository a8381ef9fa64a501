//! Benchmark (not a test): a running 1 GiB guest whose memory holds data
//! (written into its QEMU's memory from outside, no page of it zero, which
//! QEMU would skip: [`kvmroll_tests::fill_guest_memory`]), moved between the two
//! containers of the test rig by `kvmroll vm migrate` against plain `virsh
//! migrate --live --p2p --persistent --undefinesource` with the same
//! transport, taking turns in one run; printed as a ratio. Both transports
//! in one run: tunnelled (`--tunnelled`), then native
//! (`kvm_migrate_transport=native`; virsh `--migrateuri tcp://ADDR`, over
//! the rig's network). Goal: at most 1.1. `KVMROLL_BENCH_ROUNDS` (default
//! 5) sets the migrations of each kind.
//!
//!     cargo build --release --workspace && scripts/build.sh --release &&
//!     cargo bench -p kvmroll-tests --bench migrate
//!
//! It needs what the rig needs (root, libvirtd, a PostgreSQL server) and
//! about 2 GiB of free memory.

use kvmroll_tests::rig::{self, Node, Postgres, Rig, Role};
use kvmroll_tests::{ok, Transport};
use std::time::{Duration, Instant};

const A: &str = "node-a";
const B: &str = "node-b";
const VM: &str = "bench-migrate";
const MIB: u32 = 1024;
/// Migrations of each kind, unless `KVMROLL_BENCH_ROUNDS` says.
const ROUNDS: usize = 5;
const GOAL: f64 = 1.1;

fn main() {
    if !rig::available("migrate") {
        return;
    }
    let admin = Role::login("kvmroll", "bench pass").with("CREATEROLE");
    let container = Role::login("kvmroll_container", "bench c0ntainer");
    let hook = kvmroll_tests::static_hook();
    let rig = Rig::builder()
        .postgres(
            Postgres::builder()
                .role(admin.clone())
                .database("kvmroll", &admin.name),
        )
        .node(A, {
            let hook = hook.clone();
            move |n| n.install_hook(&hook)
        })
        .node(B, move |n| n.install_hook(&hook))
        .network()
        .start()
        .unwrap_or_else(|e| panic!("the rig did not start: {}", rig::chain(&e)));
    let k = kvmroll_tests::rig_cluster(&rig, &admin, &container, A);
    kvmroll_tests::node_conf(&rig, &container, B);
    let nodes: Vec<&rig::Node> = rig.nodes().iter().collect();
    k.rig_containers(&nodes, 2);
    let mem = MIB.to_string();
    k.ok(&[
        "vm",
        "add",
        VM,
        "--container",
        A,
        "--mem",
        &mem,
        "--cpus",
        "1",
    ]);
    k.ok(&["vm", "define", VM]);
    let rounds = rounds();
    let (a, b) = (rig.node(A), rig.node(B));
    // Untimed: each side's first QEMU start reads its binary and libraries
    // from disk.
    fresh_guest(&k, a);
    ok(
        Transport::Tunnelled.virsh_migrate(a, b, VM),
        "virsh migrate",
    );
    ok(
        Transport::Tunnelled.virsh_migrate(b, a, VM),
        "virsh migrate",
    );

    let mut reports = Vec::new();
    for how in [Transport::Tunnelled, Transport::Native] {
        k.ok(&["attr", "set", VM, "kvm_migrate_transport", how.attr()]);
        reports.push(time_transport(&k, a, b, how, rounds));
    }
    let _ = a.virsh(&["destroy", VM]);
    for line in reports {
        println!("{line}");
    }
}

/// Boots the guest afresh on `a` and fills its memory. Afresh each round:
/// the diskless guest's firmware, finding nothing to boot, resets it
/// after 60 s, and a reset over the filled memory stops it.
fn fresh_guest(k: &kvmroll_tests::Kvmroll, a: &Node) {
    let _ = a.virsh(&["destroy", VM]);
    k.ok(&["vm", "start", VM]);
    kvmroll_tests::fill_guest_memory(a, VM, MIB);
    let state = ok(a.virsh(&["domstate", VM]), "virsh domstate");
    assert_eq!(
        state.trim(),
        "running",
        "the guest stopped when its memory was filled"
    );
}

/// The median of some durations.
fn median(d: &[Duration]) -> Duration {
    let mut d = d.to_vec();
    d.sort();
    d[d.len() / 2]
}

/// The line that compares `ours` with `plain`, both by `how`.
fn report(how: Transport, ours: &[Duration], plain: &[Duration]) -> String {
    let (o, p) = (median(ours), median(plain));
    let ratio = o.as_secs_f64() / p.as_secs_f64();
    format!(
        "{how}: a running {MIB} MiB guest with its memory filled: kvmroll vm migrate {o:.2?}, virsh migrate {p:.2?} (medians of {}): ratio {ratio:.2} (goal <= {GOAL}){}",
        ours.len(),
        if ratio <= GOAL { "" } else { ": MISSED" }
    )
}

/// Migrations of each kind: `KVMROLL_BENCH_ROUNDS`, or [`ROUNDS`].
fn rounds() -> usize {
    std::env::var("KVMROLL_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(ROUNDS)
}

/// `rounds` migrations each by kvmroll and by virsh, over `how`, taking
/// the freshly filled guest first in turn; the line that compares them.
fn time_transport(
    k: &kvmroll_tests::Kvmroll,
    a: &Node,
    b: &Node,
    how: Transport,
    rounds: usize,
) -> String {
    let mut ours = Vec::new();
    let mut plain = Vec::new();
    for round in 0..rounds {
        fresh_guest(k, a);
        // Each takes the freshly filled guest first in turn (its
        // first move differs from its second: the pages just written
        // on A, those just received on B), the database put in step
        // outside the time measured.
        let kvmroll = |to: &str| {
            let t = Instant::now();
            ok(
                k.run(&["vm", "migrate", VM, "--to", to]),
                "kvmroll vm migrate",
            );
            t.elapsed()
        };
        let virsh = |from: &Node, to: &Node| {
            let t = Instant::now();
            ok(how.virsh_migrate(from, to, VM), "virsh migrate");
            let took = t.elapsed();
            k.ok(&["--no-sync", "vm", "set", VM, "--container", to.name()]);
            took
        };
        let first = if round % 2 == 0 {
            ours.push(kvmroll(B));
            plain.push(virsh(b, a));
            "kvmroll"
        } else {
            plain.push(virsh(a, b));
            ours.push(kvmroll(A));
            "virsh"
        };
        println!(
            "{how} round {} ({first} first): kvmroll {:.2?}, virsh {:.2?}",
            round + 1,
            ours[round],
            plain[round]
        );
    }
    report(how, &ours, &plain)
}
