//! The commands a property runs, as the CLI takes them, and their effect on
//! a store as `kvmroll` would have it.

use crate::values::*;
use kvmroll_core::model::check_name;
use kvmroll_core::{
    Change, Cluster, ClusterError, Disk, Host, Mac, Nic, NicSpec, Scope, Store, Vm,
};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use std::collections::BTreeSet;
use std::path::Path;

/// The containers, hosts and VMs of the starting cluster, and names that
/// are none of those.
pub(crate) const CONTAINERS: &[&str] = &["vm-container-0-0", "vm-container-0-1"];

#[derive(Debug, Clone)]
pub(crate) enum At {
    Global,
    Os(String),
    Appliance(String),
    Rack(u32),
    Host(String),
}

#[derive(Debug, Clone)]
pub(crate) enum Op {
    Attr {
        at: At,
        name: String,
        value: String,
    },
    Add {
        name: String,
        container: String,
        mem: u32,
        cpus: u32,
        disks: Vec<String>,
        nics: Vec<String>,
        virt_type: String,
    },
    Set {
        name: String,
        container: Option<String>,
        mem: Option<u32>,
        cpus: Option<u32>,
        virt_type: Option<String>,
    },
}

pub(crate) fn vm_name() -> BoxedStrategy<String> {
    prop_oneof![
        6 => pick(&["vm-a", "vm-b", "vm-c", "hosted-vm-0-0-1"]),
        1 => pick(&[
            "a/b", "..", "a b", "vm-\u{e9}", "-x", "vm-container-0-0", "compute-0-0", "",
            "vm.a..b", "x\u{0}y",
        ]),
        1 => Just("v".repeat(64)),
    ]
    .boxed()
}

pub(crate) fn container() -> BoxedStrategy<String> {
    prop_oneof![
        6 => select(CONTAINERS.to_vec()).prop_map(String::from),
        1 => pick(&["compute-0-0", "nowhere", "vm-a"]),
    ]
    .boxed()
}

pub(crate) fn disk_spec() -> BoxedStrategy<String> {
    let kind = pick(&["file", "raw", "qcow2", "block"]);
    let path = prop_oneof![
        6 => pick(&[
            "/state/kvm/a.qcow2",
            "/state/kvm/b.img",
            "/vm disks/o'brien & co <1>.img",
            "/dev/sdb",
            "/x/\u{e9}t\u{e9}.img",
            "/a\u{200B}b.img",
        ]),
        1 => pick(&["rel/a.img", "/a/../b", "/a\u{FFFE}b.img", "/a\u{1}b", "/a\u{85}b", "/a,b"]),
    ];
    let dev = prop_oneof![
        8 => pick(&["vda", "vdb", "hda", "hdc", "hdd", "sda", "sdb", "vdz"]),
        1 => pick(&["VDA", "v", "vd-a", "vdaaaaaaaa", "hde", "ab", "vd1", "vda1", "xvda", "hdzz", "fda"]),
    ];
    let bus = prop_oneof![
        8 => pick(&["virtio", "ide", "scsi", "sata"]),
        1 => pick(&["usb", "fdc", "sd", "pci"]),
    ];
    let size = prop_oneof![
        2 => Just(String::new()),
        2 => (1u32..100).prop_map(|n| format!(",{n}")),
        1 => pick(&[",0", ",x", ",4294967296"]),
    ];
    (kind, path, dev, bus, size)
        .prop_map(|(k, p, d, b, s)| format!("{k}:{p},{d},{b}{s}"))
        .boxed()
}

pub(crate) fn nic_spec() -> BoxedStrategy<String> {
    prop_oneof![
        8 => pick(&[
            "bridge:br0",
            "bridge:br1,vlan=12",
            "direct:eth0",
            "direct:eth0,vlan=4094",
            "bridge:br0,model=e1000",
            "bridge:br0,mac=52:54:00:12:34:56",
            "direct:averylongname15,vlan=7",
            "bridge:br-a.b_c,model=rtl8139",
            "direct:eth0.5,vlan=7,model=a_b-c",
        ]),
        1 => pick(&[
            "bridge:a/b", "bridge:", "tap:br0", "bridge:br0,vlan=0",
            "bridge:br0,mac=01:00:00:00:00:01", "bridge:br0,model=a b", "bridge:..",
        ]),
    ]
    .boxed()
}

pub(crate) fn mem() -> BoxedStrategy<u32> {
    prop_oneof![8 => 64u32..4096, 1 => Just(1u32), 1 => Just(u32::MAX), 1 => any::<u32>()].boxed()
}

pub(crate) fn cpus() -> BoxedStrategy<u32> {
    prop_oneof![8 => 1u32..9, 1 => Just(4096u32), 1 => Just(0u32), 1 => Just(4097u32)].boxed()
}

pub(crate) fn virt_type() -> BoxedStrategy<String> {
    prop_oneof![8 => pick(&["kvm", "qemu"]), 1 => pick(&["xen", "KVM", ""])].boxed()
}

pub(crate) fn at() -> BoxedStrategy<At> {
    prop_oneof![
        2 => Just(At::Global),
        1 => pick(&["linux", "l/x", ""]).prop_map(At::Os),
        1 => pick(&["hosted-vm", "vm-container", "nosuch"]).prop_map(At::Appliance),
        1 => (0u32..2).prop_map(At::Rack),
        6 => pick(&["vm-a", "vm-b", "vm-c", "vm-container-0-0", "vm-container-0-1", "compute-0-0", "nowhere"])
            .prop_map(At::Host),
    ]
    .boxed()
}

pub(crate) fn op() -> BoxedStrategy<Op> {
    let attr = (at(), attribute()).prop_map(|(at, (name, value))| Op::Attr { at, name, value });
    let add = (
        vm_name(),
        container(),
        mem(),
        cpus(),
        vec(disk_spec(), 0..3),
        vec(nic_spec(), 0..3),
        virt_type(),
    )
        .prop_map(
            |(name, container, mem, cpus, disks, nics, virt_type)| Op::Add {
                name,
                container,
                mem,
                cpus,
                disks,
                nics,
                virt_type,
            },
        );
    let set = (
        vm_name(),
        proptest::option::of(container()),
        proptest::option::of(mem()),
        proptest::option::of(cpus()),
        proptest::option::of(virt_type()),
    )
        .prop_map(|(name, container, mem, cpus, virt_type)| Op::Set {
            name,
            container,
            mem,
            cpus,
            virt_type,
        });
    prop_oneof![6 => attr, 2 => add, 2 => set].boxed()
}

/// The starting cluster: two containers (the first of `cpus` CPUs), a plain
/// compute host, and VM `vm-a` of two vCPUs on the first container.
pub(crate) fn start_ops(cpus: u32) -> Vec<Change> {
    let mut c0 = Host::new(CONTAINERS[0], "vm-container");
    c0.cpus = cpus;
    let mut c1 = Host::new(CONTAINERS[1], "vm-container");
    c1.cpus = 2;
    vec![
        Change::AddHost(c0),
        Change::AddHost(c1),
        Change::AddHost(Host::new("compute-0-0", "compute")),
        Change::AddVm(Vm {
            id: 0,
            name: "vm-a".into(),
            container: Some(CONTAINERS[0].into()),
            memory_mib: 256,
            vcpus: 2,
            uuid: uuid(0),
            cdrom: None,
            virt_type: "kvm".into(),
            disks: vec![Disk::parse("qcow2:/state/kvm/vm-a.qcow2,vda,virtio,10").unwrap()],
            nics: vec![],
            stale: false,
            generation: 0,
        }),
    ]
}

pub(crate) fn uuid(n: u64) -> String {
    format!("6a1f0e2c-0000-4000-8000-{n:012x}")
}

/// Where a test's database goes: memory-backed where the machine has it,
/// so that a case costs no disk flushes.
pub(crate) fn scratch() -> tempfile::TempDir {
    match tempfile::tempdir_in("/dev/shm") {
        Ok(d) => d,
        Err(_) => tempfile::tempdir().unwrap(),
    }
}

pub(crate) fn scope(at: &At) -> Scope {
    match at {
        At::Global => Scope::Global,
        At::Os(o) => Scope::Os(o.clone()),
        At::Appliance(a) => Scope::Appliance(a.clone()),
        At::Rack(r) => Scope::Rack(*r),
        At::Host(h) => Scope::Host(h.clone()),
    }
}

/// Runs one command as `kvmroll` does: the checks it makes before the
/// store, then one update. `Err` when the command is refused.
pub(crate) fn apply(store: &mut dyn Store, op: &Op, serial: &mut u64) -> Result<(), String> {
    let refused = |e: &dyn std::fmt::Display| e.to_string();
    match op {
        Op::Attr { at, name, value } => {
            let change = Change::SetAttr {
                scope: scope(at),
                name: name.clone(),
                value: value.clone(),
            };
            store
                .update(&mut |_| Ok(vec![change.clone()]))
                .map(drop)
                .map_err(|e| refused(&e))
        }
        Op::Add {
            name,
            container,
            mem,
            cpus,
            disks,
            nics,
            virt_type,
        } => {
            // clap's ranges, then the checks `vm add` makes itself.
            if *mem == 0 || !(1..=4096).contains(cpus) {
                return Err("out of clap's range".into());
            }
            check_name("VM", name).map_err(|e| refused(&e))?;
            let disks = disks
                .iter()
                .map(|d| Disk::parse(d))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| refused(&e))?;
            let specs = nics
                .iter()
                .map(|n| NicSpec::parse(n))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| refused(&e))?;
            *serial += 1;
            let uuid = uuid(*serial);
            let base = *serial as u8;
            store
                .update(&mut |c| {
                    let nics = nics_of(c, &specs, base);
                    Ok(vec![Change::AddVm(Vm {
                        id: 0,
                        name: name.clone(),
                        container: Some(container.clone()),
                        memory_mib: *mem,
                        vcpus: *cpus,
                        uuid: uuid.clone(),
                        cdrom: None,
                        virt_type: virt_type.clone(),
                        disks: disks.clone(),
                        nics,
                        stale: false,
                        generation: 0,
                    })])
                })
                .map(drop)
                .map_err(|e| refused(&e))
        }
        Op::Set {
            name,
            container,
            mem,
            cpus,
            virt_type,
        } => set_vm(store, name, container, *mem, *cpus, virt_type),
    }
}

/// `vm add`'s NICs from their specs, each without a MAC given a fresh one.
fn nics_of(c: &Cluster, specs: &[NicSpec], base: u8) -> Vec<Nic> {
    let mut taken = BTreeSet::new();
    specs
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let mac = s
                .mac
                .clone()
                .unwrap_or_else(|| fresh_mac(c, &taken, base, i));
            taken.insert(mac.clone());
            Nic {
                kind: s.kind,
                source: s.source.clone(),
                mac,
                vlan: s.vlan,
                model: s.model.clone(),
            }
        })
        .collect()
}

/// `vm set`, as [`apply`] runs it.
fn set_vm(
    store: &mut dyn Store,
    name: &str,
    container: &Option<String>,
    mem: Option<u32>,
    cpus: Option<u32>,
    virt_type: &Option<String>,
) -> Result<(), String> {
    if mem == Some(0) || cpus.is_some_and(|c| !(1..=4096).contains(&c)) {
        return Err("out of clap's range".into());
    }
    store
        .update(&mut |c| {
            let mut vm = c.vm(name)?.clone();
            if let Some(ct) = container {
                vm.container = Some(ct.clone());
            }
            vm.memory_mib = mem.unwrap_or(vm.memory_mib);
            vm.vcpus = cpus.unwrap_or(vm.vcpus);
            if let Some(t) = virt_type {
                vm.virt_type = t.clone();
            }
            Ok::<_, ClusterError>(vec![Change::SetVm(vm)])
        })
        .map(drop)
        .map_err(|e| e.to_string())
}

/// A MAC no VM has: the CLI draws random ones; a test draws them in order.
pub(crate) fn fresh_mac(c: &Cluster, taken: &BTreeSet<Mac>, base: u8, i: usize) -> Mac {
    (0u8..=255)
        .map(|n| Mac::qemu([base, i as u8, n]))
        .find(|m| !c.mac_in_use(m) && !taken.contains(m))
        .expect("a free MAC")
}

/// The database as bytes: the file and its write-ahead log.
pub(crate) fn db_bytes(db: &Path) -> Vec<u8> {
    let mut b = std::fs::read(db).unwrap_or_default();
    if let Ok(w) = std::fs::read(format!("{}-wal", db.display())) {
        b.extend(w);
    }
    b
}
