//! Benchmark (not a test): renders 10,000 VMs from one database with the real
//! `kvmroll-gen domain --all` and prints the time per VM against the goal of
//! all 10,000 in under one second.
//!
//!     cargo build --release --workspace && cargo bench -p kvmroll-tests --bench render_10k

use kvmroll_core::model::NicKind;
use kvmroll_core::sqlite::SqliteStore;
use kvmroll_core::{Change, Disk, Host, Mac, Nic, OpenMode, Scope, Store, Vm};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const VMS: u32 = 10_000;
const CONTAINERS: u32 = 250;
const GOAL: Duration = Duration::from_secs(1);

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("kvmroll.db");
    let t = Instant::now();
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
    // Built from a raw snapshot: one planned write of 15,000 changes would
    // spend its time re-checking, which is not what is measured here.
    let mut store = SqliteStore::open(&db, OpenMode::Create).expect("open");
    for chunk in changes.chunks(500) {
        store.update(&mut |_| Ok(chunk.to_vec())).expect("write");
    }
    drop(store);
    println!(
        "built {VMS} VMs on {CONTAINERS} containers in {:.1?}",
        t.elapsed()
    );

    let gen = kvmroll_tests::bin_dir().join("kvmroll-gen");
    let mut times = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let out = Command::new(&gen)
            .arg("--db")
            .arg(&db)
            .args(["domain", "--all"])
            .stdout(Stdio::piped())
            .output()
            .expect("kvmroll-gen runs");
        let took = t.elapsed();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let docs = String::from_utf8_lossy(&out.stdout)
            .matches("</domain>")
            .count();
        assert_eq!(docs, VMS as usize);
        times.push(took);
    }
    times.sort();
    let median = times[times.len() / 2];
    println!(
        "kvmroll-gen domain --all: {VMS} VMs in {median:.3?} (median of 5; best {:.3?}), {:.1} us per VM",
        times[0],
        median.as_secs_f64() * 1e6 / f64::from(VMS)
    );
    println!(
        "goal {GOAL:?} for all: ratio {:.2} of the goal ({})",
        median.as_secs_f64() / GOAL.as_secs_f64(),
        if median < GOAL { "met" } else { "MISSED" }
    );
}
