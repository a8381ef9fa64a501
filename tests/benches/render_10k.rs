//! Benchmark (not a test): 10,000 VMs on 250 containers in one database,
//! read back by the real binaries: `kvmroll-gen domain --all` (goal: all
//! 10,000 rendered in under one second on SQLite) and `kvmroll vm list`,
//! each on SQLite and on PostgreSQL over TCP (the same cluster, copied there
//! with `kvmroll db copy`; a private server of the test rig, its data on
//! disk). Goal: PostgreSQL at most 2x SQLite. The PostgreSQL half needs
//! root and a PostgreSQL server (scripts/deps.sh); without them it is
//! skipped, said so.
//!
//!     scripts/build.sh --release && cargo bench -p kvmroll-tests --bench render_10k

use kvmroll_core::model::NicKind;
use kvmroll_core::sqlite::SqliteStore;
use kvmroll_core::{Change, Disk, Host, Mac, Nic, OpenMode, Scope, Store, Vm};
use kvmroll_tests::rig;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const VMS: u32 = 10_000;
const CONTAINERS: u32 = 250;
const GOAL: Duration = Duration::from_secs(1);
/// PostgreSQL against SQLite, for the same command.
const RATIO_GOAL: f64 = 2.0;
const RUNS: usize = 5;

/// The commands timed: a name, the binary, its arguments, and what it
/// prints once per VM (at least).
const COMMANDS: [(&str, &str, &[&str], &str); 2] = [
    (
        "kvmroll-gen domain --all",
        "kvmroll-gen",
        &["domain", "--all"],
        "</domain>",
    ),
    ("kvmroll vm list", "kvmroll", &["vm", "list"], "\n"),
];

/// Per command, per database, the time of each run.
type Times = Vec<Vec<Vec<Duration>>>;

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("kvmroll.db");
    let t = Instant::now();
    write_db(&db, &cluster_changes());
    println!(
        "built {VMS} VMs on {CONTAINERS} containers in {:.1?}",
        t.elapsed()
    );

    let sqlite = db.display().to_string();
    // The same cluster on PostgreSQL, through `kvmroll db copy`.
    let pg = rig::bench_server("the PostgreSQL runs");
    if let Some((_, url)) = &pg {
        copy_to_postgres(&sqlite, url);
    }
    let mut dbs = vec![("SQLite", sqlite)];
    dbs.extend(pg.as_ref().map(|(_, url)| ("PostgreSQL", url.clone())));

    let times = measure(&dbs);
    report(&dbs, &times);
}

/// The cluster: [`VMS`] VMs spread over [`CONTAINERS`] containers, half of
/// the VMs with an attribute of their own.
fn cluster_changes() -> Vec<Change> {
    let mut changes = vec![Change::SetAttr {
        scope: Scope::Appliance("hosted-vm".into()),
        name: "cpu_mode".into(),
        value: "host-passthrough".into(),
    }];
    for c in 0..CONTAINERS {
        let mut h = Host::new(&format!("vm-container-0-{c}"), "vm-container");
        h.cpus = 64;
        changes.push(Change::AddHost(h));
    }
    for i in 0..VMS {
        let c = i % CONTAINERS;
        let name = format!("hosted-vm-0-{c}-{}", i / CONTAINERS);
        changes.push(Change::AddVm(Vm {
            id: 0,
            name: name.clone(),
            container: Some(format!("vm-container-0-{c}")),
            memory_mib: 2048,
            vcpus: 1,
            uuid: format!("6f1c2a4e-0d4b-4f57-9a53-{i:012}"),
            cdrom: (i % 3 == 0).then(|| "/isos/rescue.iso".to_string()),
            virt_type: "kvm".into(),
            disks: vec![
                Disk::parse(&format!("qcow2:/state/kvm/{name}.qcow2,vda,virtio,36")).expect("disk"),
            ],
            nics: vec![Nic {
                kind: NicKind::Bridge,
                source: "br0".into(),
                mac: Mac::qemu([(i >> 16) as u8, (i >> 8) as u8, i as u8]),
                vlan: None,
                model: "virtio".into(),
            }],
            stale: false,
            generation: 0,
        }));
        if i % 2 == 0 {
            changes.push(Change::SetAttr {
                scope: Scope::Host(name),
                name: "kvm_cpu_pinning".into(),
                value: "pin_auto".into(),
            });
        }
    }
    changes
}

/// Writes `changes` into a new SQLite database at `db`.
fn write_db(db: &Path, changes: &[Change]) {
    // Built from a raw snapshot: one planned write of 15,000 changes would
    // spend its time re-checking, which is not what is measured here.
    let mut store = SqliteStore::open(db, OpenMode::Create).expect("open");
    for chunk in changes.chunks(500) {
        store.update(&mut |_| Ok(chunk.to_vec())).expect("write");
    }
}

/// Copies the SQLite database to the PostgreSQL one at `url` with
/// `kvmroll db copy`, and says how long it took.
fn copy_to_postgres(sqlite: &str, url: &str) {
    let t = Instant::now();
    let out = Command::new(kvmroll_tests::bin_dir().join("kvmroll"))
        .args(["db", "copy", sqlite, url])
        .output()
        .expect("kvmroll runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!(
        "kvmroll db copy to PostgreSQL in {:.1?}: {}",
        t.elapsed(),
        String::from_utf8_lossy(&out.stdout).trim()
    );
}

/// Runs each command on each database [`RUNS`] times, interleaved, so that
/// the machine's drift touches all alike.
fn measure(dbs: &[(&str, String)]) -> Times {
    let mut times = vec![vec![Vec::new(); dbs.len()]; COMMANDS.len()];
    for _ in 0..RUNS {
        for (c, (_, program, args, unit)) in COMMANDS.iter().enumerate() {
            for (d, (_, location)) in dbs.iter().enumerate() {
                times[c][d].push(run_once(program, args, unit, location));
            }
        }
    }
    times
}

/// Runs `program` once on the database at `location`; checks that it
/// printed `unit` once per VM.
fn run_once(program: &str, args: &[&str], unit: &str, location: &str) -> Duration {
    let t = Instant::now();
    let out = Command::new(kvmroll_tests::bin_dir().join(program))
        .arg("--db")
        .arg(location)
        .args(args)
        .stdout(Stdio::piped())
        .output()
        .expect("runs");
    let took = t.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let units = String::from_utf8_lossy(&out.stdout).matches(unit).count();
    // vm list: a header and one line per VM.
    assert!(units >= VMS as usize, "{program}: {units} of {VMS}");
    took
}

fn median(t: &[Duration]) -> Duration {
    let mut t = t.to_vec();
    t.sort();
    t[t.len() / 2]
}

/// The medians, and the ratios against the goals.
fn report(dbs: &[(&str, String)], times: &Times) {
    println!("median of {RUNS} runs each, {VMS} VMs:");
    for (c, (name, ..)) in COMMANDS.iter().enumerate() {
        for (d, (engine, _)) in dbs.iter().enumerate() {
            let m = median(&times[c][d]);
            println!(
                "  {name:<26} {engine:<10} {m:>9.3?}  {:.1} us per VM",
                m.as_secs_f64() * 1e6 / f64::from(VMS)
            );
        }
    }
    let render = median(&times[0][0]);
    println!(
        "kvmroll-gen domain --all on SQLite: goal {GOAL:?} for all: ratio {:.2} of the goal ({})",
        render.as_secs_f64() / GOAL.as_secs_f64(),
        if render < GOAL { "met" } else { "MISSED" }
    );
    if dbs.len() > 1 {
        for (c, (name, ..)) in COMMANDS.iter().enumerate() {
            let r = median(&times[c][1]).as_secs_f64() / median(&times[c][0]).as_secs_f64();
            println!(
                "{name}: PostgreSQL / SQLite {r:.2} (goal <= {RATIO_GOAL}: {})",
                if r <= RATIO_GOAL { "met" } else { "MISSED" }
            );
        }
    }
}
