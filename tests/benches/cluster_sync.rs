//! Benchmark (not a test): a change that redefines every VM of a cluster,
//! `kvmroll attr set --global kvm_graphics ...` over four containers of
//! fifty VMs each, each container a libvirtd of the test rig (its own
//! namespaces) and the database a private PostgreSQL server: the containers
//! brought in step concurrently (the default) against one after another
//! (`KVMROLL_SYNC_PARALLEL=1`), in one run, printed as a ratio. Goal: at
//! most 0.4.
//!
//!     cargo build --release --workspace && cargo bench -p kvmroll-tests --bench cluster_sync
//!
//! It needs what the rig needs (root, libvirtd, a PostgreSQL server).

use kvmroll_core::location::Location;
use kvmroll_core::{Change, Host, Scope, Vm};
use kvmroll_tests::rig::{self, Postgres, Rig, Role};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const CONTAINERS: usize = 4;
const VMS_EACH: usize = 50;
const ROUNDS: usize = 3;
const GOAL: f64 = 0.4;

fn main() {
    if !rig::available("cluster_sync") {
        return;
    }
    let role = Role::login("kvmroll", "bench pass");
    let rig = start_rig(&role);
    let url = rig.pg.url_tcp(&role, "kvmroll");
    write_cluster(&url, &cluster_changes(&rig));

    let all = CONTAINERS * VMS_EACH;
    let took = kvmroll(&url, None, &["vm", "define", "--all"]);
    println!("{all} VMs defined (one after another) in {took:.1?}");
    let (concurrent, serial) = measure(&rig, &url);
    report(concurrent, serial);
}

/// The containers and the PostgreSQL server, started; says how long that
/// took.
fn start_rig(role: &Role) -> Rig {
    let mut builder = Rig::builder().postgres(
        Postgres::builder()
            .role(role.clone())
            .database("kvmroll", "kvmroll")
            .durable(),
    );
    for c in 0..CONTAINERS {
        builder = builder.node(&format!("node-{c}"), |_| Ok(()));
    }
    let t = Instant::now();
    let rig = builder
        .start()
        .unwrap_or_else(|e| panic!("the rig: {}", rig::chain(&e)));
    println!(
        "rig of {CONTAINERS} containers and PostgreSQL up in {:.1?}",
        t.elapsed()
    );
    rig
}

/// The cluster: the rig's nodes as containers, [`VMS_EACH`] VMs on each.
fn cluster_changes(rig: &Rig) -> Vec<Change> {
    let mut changes = vec![
        Change::SetAttr {
            scope: Scope::Global,
            name: "kvm_graphics".into(),
            value: "none".into(),
        },
        Change::SetAttr {
            scope: Scope::Appliance("hosted-vm".into()),
            name: "cpu_mode".into(),
            value: kvmroll_tests::GUEST_CPU_MODE.into(),
        },
    ];
    for node in rig.nodes() {
        let mut h = Host::new(node.name(), "vm-container");
        h.cpus = 4;
        changes.push(Change::AddHost(h));
        changes.push(Change::SetAttr {
            scope: Scope::Host(node.name().into()),
            name: "libvirt_uri".into(),
            value: node.libvirt_uri(),
        });
    }
    for (c, node) in rig.nodes().iter().enumerate() {
        for i in 0..VMS_EACH {
            changes.push(Change::AddVm(Vm {
                id: 0,
                name: format!("bench-vm-{c}-{i}"),
                container: Some(node.name().into()),
                memory_mib: 64,
                vcpus: 1,
                uuid: format!("7a1c2a4e-0d4b-4f57-9a53-{:012}", c * 1000 + i),
                cdrom: None,
                virt_type: "kvm".into(),
                disks: vec![],
                nics: vec![],
                stale: false,
                generation: 0,
            }));
        }
    }
    changes
}

/// Writes the cluster through the store, in one go, into the database at
/// `url`.
fn write_cluster(url: &str, changes: &[Change]) {
    let location = Location::parse(url, Path::new("/")).expect("URL");
    let (mut store, _) = kvmroll_core::location::init(&location).expect("db init");
    store
        .update(&mut |_| Ok(changes.to_vec()))
        .expect("the cluster");
}

/// Runs `kvmroll args` on the database at `url`, with
/// `KVMROLL_SYNC_PARALLEL` set to `parallel` (or unset); how long it took.
fn kvmroll(url: &str, parallel: Option<&str>, args: &[&str]) -> Duration {
    let mut c = Command::new(kvmroll_tests::bin_dir().join("kvmroll"));
    c.arg("--db").arg(url).args(args);
    match parallel {
        Some(n) => c.env("KVMROLL_SYNC_PARALLEL", n),
        None => c.env_remove("KVMROLL_SYNC_PARALLEL"),
    };
    let t = Instant::now();
    let out = c.output().expect("kvmroll runs");
    let took = t.elapsed();
    assert!(
        out.status.success(),
        "kvmroll {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

/// Times the change concurrent and one after another, interleaved, for
/// [`ROUNDS`] rounds; checks that the last one reached the last container.
fn measure(rig: &Rig, url: &str) -> (Vec<Duration>, Vec<Duration>) {
    // Each run flips the attribute, so every VM's definition changes.
    let mut value = "none";
    let mut concurrent = Vec::new();
    let mut serial = Vec::new();
    for _ in 0..ROUNDS {
        for (parallel, times) in [(None, &mut concurrent), (Some("1"), &mut serial)] {
            value = if value == "none" { "vnc" } else { "none" };
            times.push(kvmroll(
                url,
                parallel,
                &["attr", "set", "--global", "kvm_graphics", value],
            ));
        }
    }
    // The last change reached the last container.
    let last = &rig.nodes()[CONTAINERS - 1];
    let xml = last.virsh(&["dumpxml", &format!("bench-vm-{}-0", CONTAINERS - 1)]);
    let xml = String::from_utf8_lossy(&xml.stdout);
    assert_eq!(xml.contains("<graphics"), value == "vnc", "{xml}");
    (concurrent, serial)
}

fn median(t: &mut [Duration]) -> Duration {
    t.sort();
    t[t.len() / 2]
}

/// The medians, and their ratio against the goal.
fn report(mut concurrent: Vec<Duration>, mut serial: Vec<Duration>) {
    let all = CONTAINERS * VMS_EACH;
    let (c, s) = (median(&mut concurrent), median(&mut serial));
    println!(
        "attr set --global redefining {all} VMs on {CONTAINERS} containers, median of {ROUNDS}:"
    );
    println!("  concurrent (default)           {c:>9.3?}");
    println!("  one after another (PARALLEL=1) {s:>9.3?}");
    let r = c.as_secs_f64() / s.as_secs_f64();
    println!(
        "concurrent / one after another: {r:.2} (goal <= {GOAL}: {})",
        if r <= GOAL { "met" } else { "MISSED" }
    );
}
