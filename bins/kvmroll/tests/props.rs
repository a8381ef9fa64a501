//! Property tests over validation and rendering (issue 10): whatever
//! `kvmroll attr set`, `vm add` and `vm set` accept renders a domain that
//! passes `virt-xml-validate` and that libvirt's test driver defines;
//! whatever they refuse leaves the database byte for byte as it was.
//!
//! Two properties:
//! - [`accepted_changes_render_domains_libvirt_takes`] runs at the library
//!   level, as the CLI does (its argument checks, then one
//!   [`kvmroll_core::Store::update`] per command on a real SQLite file, whose
//!   plan renders the VMs it touches), many cases a second. Every domain an
//!   accepted change leaves is defined on libvirt's `test:///default` driver
//!   in this process; the first [`XML_VALIDATE_BUDGET`] distinct ones of a run
//!   also go through `virt-xml-validate`, a process per file.
//! - [`refused_commands_leave_the_database_file_as_it_was`] runs the real
//!   binary, fewer cases: each spawns processes.
//!
//! Values mix what a user would set (CPU modes, pin_all and pin_auto,
//! pinning fragments with vcpupin, emulatorpin and iothreadpin sets, device
//! fragments, booleans, numbers), near misses (sets past the container,
//! numbers with signs, a wrong case) and hostile input (nesting past
//! libvirt's limit, entities, `</devices>` smuggled into a fragment, names
//! with `/`, `..`, spaces and unicode, characters XML cannot carry). The
//! fragments offered as valid are valid libvirt devices on their own:
//! kvmroll checks a fragment's structure, sets and elements, not each
//! device's own schema, so a `<watchdog/>` without a model is not offered.
//!
//! Case counts: [`LIBRARY_CASES`] and [`CLI_CASES`], or `PROPTEST_CASES`.
//! A failure is saved in `props.proptest-regressions` beside this file (kept
//! in the repository) and replayed first at every run.

use kvmroll_core::model::check_name;
use kvmroll_core::{
    open_store, Change, Cluster, ClusterError, Disk, Host, Mac, Nic, NicSpec, OpenMode, Renderer,
    Scope, Store, Vm,
};
use kvmroll_virt::Connector;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{Config, FileFailurePersistence, TestCaseError, TestRunner};
use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

/// Cases of the library property unless `PROPTEST_CASES` says otherwise.
const LIBRARY_CASES: u32 = 192;
/// Cases of the CLI property (each command a process).
const CLI_CASES: u32 = 12;
/// Distinct domains `virt-xml-validate` checks in one run of the library
/// property (it is a shell script and an xmllint process per file, about
/// 30 ms each), unless `KVMROLL_PROPS_VALIDATE` says otherwise; every
/// domain is defined on the test driver regardless.
const XML_VALIDATE_BUDGET: usize = 64;

fn validate_budget() -> usize {
    std::env::var("KVMROLL_PROPS_VALIDATE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(XML_VALIDATE_BUDGET)
}

fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn config(cases: u32) -> Config {
    Config {
        cases,
        // Shrinking replays whole command sequences; a bound keeps a
        // failure's report quick.
        max_shrink_iters: 512,
        source_file: Some(file!()),
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..Config::default()
    }
}

// ---------------------------------------------------------------------------
// Values

fn pick(values: &[&'static str]) -> BoxedStrategy<String> {
    select(values.to_vec()).prop_map(String::from).boxed()
}

/// A cpuset in libvirt's syntax: mostly within a small host, sometimes past it.
fn cpuset() -> BoxedStrategy<String> {
    let cpu = prop_oneof![12 => 0u32..9, 1 => Just(4095u32)];
    let part = prop_oneof![
        4 => cpu.clone().prop_map(|n| n.to_string()),
        2 => (cpu.clone(), cpu.clone()).prop_map(|(a, b)| format!("{}-{}", a.min(b), a.max(b))),
        1 => cpu.prop_map(|n| format!("^{n}")),
    ];
    let valid = vec(part, 1..4).prop_map(|p| p.join(","));
    let near = pick(&[
        "",
        "a",
        "1-",
        "-1",
        "3-1",
        "4096",
        "99999999999",
        "+1",
        " 1",
        "1,,2",
        "0x1",
        "١",
        "1 2",
        "0,^0",
        "1-3,^1-2",
        "0-4095",
    ]);
    prop_oneof![6 => valid, 1 => near].boxed()
}

/// What a user writes into a fragment's number attributes, and near misses.
fn small_number() -> BoxedStrategy<String> {
    prop_oneof![
        8 => (0u32..5).prop_map(|n| n.to_string()),
        1 => pick(&["+1", "01", " 0", "-1", "4294967296", "1.0", ""]),
    ]
    .boxed()
}

/// `kvm_cpu_pinning`: pin_all, pin_auto, a fragment, or a near miss.
fn pinning() -> BoxedStrategy<String> {
    let vcpupin =
        (small_number(), cpuset()).prop_map(|(v, s)| format!("<vcpupin vcpu='{v}' cpuset='{s}'/>"));
    let emulatorpin = cpuset().prop_map(|s| format!("<emulatorpin cpuset='{s}'/>"));
    let iothreadpin = (small_number(), cpuset())
        .prop_map(|(i, s)| format!("<iothreadpin iothread='{i}' cpuset='{s}'/>"));
    let other = pick(&[
        "<shares>2048</shares>",
        "<period>100000</period>",
        "<quota>-1</quota>",
        "<vcpusched vcpus='0' scheduler='fifo' priority='1'/>",
        "<vcpusched vcpus='1' scheduler='batch'/>",
    ]);
    let child = prop_oneof![4 => vcpupin, 2 => emulatorpin, 2 => iothreadpin, 1 => other];
    let cputune = vec(child, 0..4).prop_map(|c| format!("<cputune>{}</cputune>", c.concat()));
    let iothreads = prop_oneof![
        Just(String::new()),
        (1u32..4).prop_map(|n| format!("<iothreads>{n}</iothreads>")),
        Just("<iothreadids><iothread id='2'/></iothreadids>".to_string()),
    ];
    let numatune = prop_oneof![
        2 => Just(String::new()),
        1 => cpuset().prop_map(|s| format!("<numatune><memory mode='strict' nodeset='{s}'/></numatune>")),
    ];
    let fragment = (cputune, iothreads, numatune, any::<bool>()).prop_map(|(c, i, n, first)| {
        if first {
            format!("{c}{i}{n}")
        } else {
            format!("{i}\n{n}\n  {c}")
        }
    });
    let near = pick(&[
        "Pin_All",
        " pin_all ",
        "pin_all pin_auto",
        "pin_some",
        "<cputune/>",
        "<vcpupin vcpu='0' cpuset='1'/>",
        "<cputune><vcpupin vcpu='0' cpuset='1'/></cputune><cputune/>",
        "<name>x</name><cputune/>",
        "<vcpu>64</vcpu>",
        "<cputune><vcpupin vcpu='0' cpuset='1'/>",
        "&lt;cputune&gt;&lt;vcpupin vcpu='0' cpuset='1'/&gt;&lt;/cputune&gt;",
        "<cputune><vcpupin vcpu='0' cpuset='1'/></cputune></domain><domain>",
    ]);
    prop_oneof![
        2 => Just("pin_all".to_string()),
        2 => Just("pin_auto".to_string()),
        6 => fragment,
        2 => near,
        1 => hostile(),
    ]
    .boxed()
}

/// `cpu_mode`.
fn cpu_mode() -> BoxedStrategy<String> {
    let valid = pick(&[
        "host-model",
        "host-passthrough",
        "maximum",
        "custom: <model>Haswell</model>",
        "exact: <model fallback='forbid'>Skylake-Client</model>",
        "host-passthrough: <feature policy='disable' name='vmx'/>",
        "custom:<model>qemu64</model>\n<feature policy='require' name='pdpe1gb'/>",
        "&lt;host-model&gt;",
    ]);
    let near = pick(&[
        "host_model",
        "HOST-MODEL",
        "custom",
        "exact",
        "custom:",
        " host-model ",
        "host-model :",
        "custom: <model>x</model></cpu><devices>",
        "exact: <model>x",
        "custom: <model>Haswell</model>:x",
        "custom: text<model>Haswell</model>",
    ]);
    prop_oneof![4 => valid, 2 => near, 1 => hostile()].boxed()
}

/// `kvm_device_N`: devices libvirt takes, near misses and hostile XML.
fn device() -> BoxedStrategy<String> {
    let valid = pick(&[
        "<watchdog model='i6300esb' action='reset'/>",
        "<rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>",
        "<hostdev mode='subsystem' type='pci' managed='yes'><source><address domain='0x0000' bus='0x06' slot='0x02' function='0x0'/></source></hostdev>",
        "<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='/state/extra.img'/><target dev='vdz' bus='virtio'/></disk>",
        "<disk type='file' device='disk'><source file='/state/x.img'/><target dev='vda' bus='virtio'/></disk>",
        "<disk type='file' device='cdrom'><source file='/isos/a.iso'/><target dev='hdc' bus='ide'/><readonly/></disk>",
        "<memballoon model='virtio'/>",
        "<input type='tablet' bus='usb'/>",
        "<video><model type='vga'/></video>",
        "<!-- a comment --><panic model='isa'/>",
        "<serial type='pty'><target port='1'/></serial>",
        "<watchdog model='i6300esb'/>\n<memballoon model='none'/>",
        "&lt;watchdog model='i6300esb'/&gt;",
        "<rng model='virtio'>\n  <backend model='random'>/dev/urandom</backend>\n</rng>",
    ]);
    let near = pick(&[
        "<watchdog model='i6300esb'/>text",
        "<domain/>",
        "<devices><watchdog model='i6300esb'/></devices>",
        "<watchdog model='i6300esb'>",
        "</devices><watchdog model='i6300esb'/>",
        "<watchdog model='i6300esb'/></devices><devices>",
        "<watchdog model='i6300esb' model='ib700'/>",
        "<watchdog model=i6300esb/>",
        "<Watchdog model='i6300esb'/>",
        "<x:watchdog model='i6300esb'/>",
        "<watchdog model='i6300esb'/>\u{3000}",
        "<watchdog model='i6300esb'/>\u{85}",
        "<watchdog model='i6300esb'/>&#x20;",
    ]);
    prop_oneof![5 => valid, 2 => near, 2 => hostile()].boxed()
}

/// XML that must never reach a domain: nesting past libvirt's limit,
/// entities, markup that is not a fragment, characters XML cannot carry.
fn hostile() -> BoxedStrategy<String> {
    let deep = (255usize..400).prop_map(|n| {
        format!(
            "<rng model='virtio'>{}{}</rng>",
            "<a>".repeat(n),
            "</a>".repeat(n)
        )
    });
    let fixed = pick(&[
        "<watchdog model='&bogus;'/>",
        "<!DOCTYPE d [<!ENTITY e 'i6300esb'>]><watchdog model='&e;'/>",
        "<?pi x?><watchdog model='i6300esb'/>",
        "<![CDATA[<watchdog model='i6300esb'/>]]>",
        "<!-- a -- b --><watchdog model='i6300esb'/>",
        "<watchdog model='i6300esb&#1;'/>",
        "<watchdog model='i6300&#xFFFE;esb'/>",
        "<watchdog model='i6300esb&#0;'/>",
        "<watchdog model='i6300esb&#xD800;'/>",
        "<rng model='virtio'><backend model='random'>/dev/urandom\u{1}</backend></rng>",
        "<rng model='virtio'><backend model='random'>/dev/\u{FFFF}</backend></rng>",
        "<watchdog model='i6300esb'/>\u{0}",
        "<?xml version='1.0'?><watchdog model='i6300esb'/>",
        "",
        "   ",
        "<watchdog model='i6300esb'/><!--",
        "<watchdog model='i6300esb'/>]]>",
    ]);
    prop_oneof![1 => deep, 4 => fixed].boxed()
}

fn boolean() -> BoxedStrategy<String> {
    pick(&[
        "true", "false", "yes", "No", "1", "0", "y", "ON", "maybe", "", "tru e", "true\n",
    ])
}

fn number() -> BoxedStrategy<String> {
    prop_oneof![
        3 => (1u32..5000).prop_map(|n| n.to_string()),
        2 => pick(&[
            "0", "-1", "+5", "05", "3600", "3601", "4294967295", "4294967296",
            "99999999999999999999", " 5", "5 ", "٥", "1e3", "",
        ]),
    ]
    .boxed()
}

/// Free text for attributes kvmroll does not read (sites keep their own).
fn text() -> BoxedStrategy<String> {
    prop_oneof![
        3 => "[ -~]{0,24}",
        1 => any::<String>(),
        1 => pick(&["a\0b", "line\nline", "\u{FFFE}", "'\"<>&;$(reboot)`"]),
    ]
    .boxed()
}

/// An attribute name and a value that suits it (or nearly).
fn attribute() -> BoxedStrategy<(String, String)> {
    let named = |name: &'static str, values: BoxedStrategy<String>| {
        values.prop_map(move |v| (name.to_string(), v)).boxed()
    };
    prop_oneof![
        3 => named("cpu_mode", cpu_mode()),
        4 => named("kvm_cpu_pinning", pinning()),
        3 => (select(vec!["kvm_device_0", "kvm_device_1", "kvm_device_2"]), device())
            .prop_map(|(n, v)| (n.to_string(), v)),
        1 => named("kvm_autostart", boolean()),
        1 => named("kvm_strict_definition", boolean()),
        1 => named("kvm_plugin_timeout_preboot", number()),
        1 => named("kvm_guests_parallel", number()),
        1 => named("kvm_guests_start_delay", number()),
        1 => named("kvm_machine", pick(&["pc", "q35", "pc-i440fx-7.2", "pc q35", "../x", "a/b", "m\u{e9}", ""])),
        1 => named("kvm_graphics", pick(&["vnc", "spice", "none", "rdp", "VNC"])),
        1 => named("kvm_emulator", pick(&[
            "/usr/bin/qemu-system-x86_64",
            "/opt/q'e\"m<u>&.bin",
            "/a/../b",
            "qemu-kvm",
            "/a\u{FFFE}b",
            "/a\u{85}b",
            "/a\u{200B}b",
            "/a\u{1}b",
        ])),
        1 => named("numa_cells", pick(&["0-1;2-3", "0-3", "0-1,4-5;2-3,6-7", "0-3;3-5", "", "a", "0-9999"])),
        2 => ("[a-z_]{1,12}", text()),
        1 => (
            pick(&[
                "a/b", "..", "a b", "\u{e9}t\u{e9}", "", "kvm_device_01", "kvm_device_-1",
                "kvm_device_99999999999", "kvm_device_", "-x", "x\ny",
            ]),
            text(),
        ),
    ]
    .boxed()
}

// ---------------------------------------------------------------------------
// Commands, as the CLI takes them

/// The containers, hosts and VMs of the starting cluster, and names that
/// are none of those.
const CONTAINERS: &[&str] = &["vm-container-0-0", "vm-container-0-1"];

#[derive(Debug, Clone)]
enum At {
    Global,
    Os(String),
    Appliance(String),
    Rack(u32),
    Host(String),
}

#[derive(Debug, Clone)]
enum Op {
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

fn vm_name() -> BoxedStrategy<String> {
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

fn container() -> BoxedStrategy<String> {
    prop_oneof![
        6 => select(CONTAINERS.to_vec()).prop_map(String::from),
        1 => pick(&["compute-0-0", "nowhere", "vm-a"]),
    ]
    .boxed()
}

fn disk_spec() -> BoxedStrategy<String> {
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

fn nic_spec() -> BoxedStrategy<String> {
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

fn mem() -> BoxedStrategy<u32> {
    prop_oneof![8 => 64u32..4096, 1 => Just(1u32), 1 => Just(u32::MAX), 1 => any::<u32>()].boxed()
}

fn cpus() -> BoxedStrategy<u32> {
    prop_oneof![8 => 1u32..9, 1 => Just(4096u32), 1 => Just(0u32), 1 => Just(4097u32)].boxed()
}

fn virt_type() -> BoxedStrategy<String> {
    prop_oneof![8 => pick(&["kvm", "qemu"]), 1 => pick(&["xen", "KVM", ""])].boxed()
}

fn at() -> BoxedStrategy<At> {
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

fn op() -> BoxedStrategy<Op> {
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
fn start_ops(cpus: u32) -> Vec<Change> {
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

fn uuid(n: u64) -> String {
    format!("6a1f0e2c-0000-4000-8000-{n:012x}")
}

/// Where a test's database goes: memory-backed where the machine has it,
/// so that a case costs no disk flushes.
fn scratch() -> tempfile::TempDir {
    match tempfile::tempdir_in("/dev/shm") {
        Ok(d) => d,
        Err(_) => tempfile::tempdir().unwrap(),
    }
}

fn scope(at: &At) -> Scope {
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
fn apply(store: &mut dyn Store, op: &Op, serial: &mut u64) -> Result<(), String> {
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
                    let mut taken = BTreeSet::new();
                    let nics = specs
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
                        .collect();
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
        } => {
            if *mem == Some(0) || cpus.is_some_and(|c| !(1..=4096).contains(&c)) {
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
                .map_err(|e| refused(&e))
        }
    }
}

/// A MAC no VM has: the CLI draws random ones; a test draws them in order.
fn fresh_mac(c: &Cluster, taken: &BTreeSet<Mac>, base: u8, i: usize) -> Mac {
    (0u8..=255)
        .map(|n| Mac::qemu([base, i as u8, n]))
        .find(|m| !c.mac_in_use(m) && !taken.contains(m))
        .expect("a free MAC")
}

/// The database as bytes: the file and its write-ahead log.
fn db_bytes(db: &Path) -> Vec<u8> {
    let mut b = std::fs::read(db).unwrap_or_default();
    if let Ok(w) = std::fs::read(format!("{}-wal", db.display())) {
        b.extend(w);
    }
    b
}

// ---------------------------------------------------------------------------
// What libvirt says of a domain

/// Domains already put through `virt-xml-validate` in this run, and whether
/// a check failed (from then on, while proptest shrinks the case, every
/// domain is checked whatever the budget).
static VALIDATED: Mutex<Option<HashSet<String>>> = Mutex::new(None);
static VALIDATE_FAILED: AtomicBool = AtomicBool::new(false);
static DEFINED: AtomicUsize = AtomicUsize::new(0);
/// Commands accepted and refused in a run, to show both paths are taken.
struct Tally {
    accepted: AtomicUsize,
    refused: AtomicUsize,
}

impl Tally {
    const fn new() -> Tally {
        Tally {
            accepted: AtomicUsize::new(0),
            refused: AtomicUsize::new(0),
        }
    }

    fn count(&self, accepted: bool) {
        let n = if accepted {
            &self.accepted
        } else {
            &self.refused
        };
        n.fetch_add(1, Ordering::Relaxed);
    }
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} commands accepted, {} refused",
            self.accepted.load(Ordering::Relaxed),
            self.refused.load(Ordering::Relaxed)
        )
    }
}

static LIBRARY: Tally = Tally::new();
static CLI: Tally = Tally::new();

fn have_virt_xml_validate() -> bool {
    let have = Command::new("virt-xml-validate")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        have || std::env::var_os("KVMROLL_E2E").is_none(),
        "virt-xml-validate (libvirt-clients) is required here"
    );
    have
}

/// `virt-xml-validate FILE domain`, within the run's budget.
fn xml_validate(dir: &Path, xml: &str) -> Result<(), String> {
    {
        let mut seen = VALIDATED.lock().unwrap();
        let seen = seen.get_or_insert_with(HashSet::new);
        let failing = VALIDATE_FAILED.load(Ordering::SeqCst);
        if !failing && (seen.len() >= validate_budget() || seen.contains(xml)) {
            return Ok(());
        }
        seen.insert(xml.to_string());
    }
    let file = dir.join("domain.xml");
    std::fs::write(&file, xml).unwrap();
    let out = Command::new("virt-xml-validate")
        .arg(&file)
        .arg("domain")
        .output()
        .map_err(|e| format!("virt-xml-validate: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    VALIDATE_FAILED.store(true, Ordering::SeqCst);
    Err(format!(
        "virt-xml-validate refuses:\n{}{}\n{xml}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

/// Defines the domain on libvirt's test driver (in this process, no
/// daemon), then undefines it so that the next case starts clean.
fn test_define(name: &str, xml: &str) -> Result<(), String> {
    let hv = kvmroll_virt::Libvirt
        .connect("test:///default")
        .map_err(|e| format!("test:///default: {e}"))?;
    let result = hv.define(xml).map_err(|e| {
        let mut s = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(c) = src {
            s.push_str(&format!(": {c}"));
            src = c.source();
        }
        format!("libvirt's test driver refuses: {s}\n{xml}")
    });
    if result.is_ok() {
        DEFINED.fetch_add(1, Ordering::Relaxed);
        hv.undefine(name)
            .map_err(|e| format!("undefine {name}: {e}"))?;
    }
    result
}

// ---------------------------------------------------------------------------
// The properties

/// Whatever the CLI's checks and the store accept leaves every VM
/// renderable, the store keeps what the plan decided, and libvirt takes
/// every domain; a refusal leaves the database file as it was.
fn check_library_case(host_cpus: u32, ops: &[Op], validate: bool) -> Result<(), TestCaseError> {
    let dir = scratch();
    let db = dir.path().join("kvmroll.db");
    let mut store = open_store(&db, OpenMode::Create).unwrap();
    store
        .update(&mut |_| Ok(start_ops(host_cpus)))
        .map_err(|e| TestCaseError::fail(format!("starting cluster refused: {e}")))?;
    let mut serial = 0;
    let mut defined: HashSet<String> = HashSet::new();
    for op in ops {
        let before = db_bytes(&db);
        let result = apply(store.as_mut(), op, &mut serial);
        LIBRARY.count(result.is_ok());
        if result.is_err() {
            prop_assert!(
                db_bytes(&db) == before,
                "refused {op:?} changed the database file"
            );
            continue;
        }
        let cluster = store.snapshot().unwrap();
        let mut r = Renderer::new(&cluster);
        for name in cluster.vms.keys() {
            let xml = r.render(name).map_err(|e| {
                TestCaseError::fail(format!(
                    "after accepted {op:?}, VM {name} cannot be rendered: {}",
                    kvmroll_core::error_chain(&e)
                ))
            })?;
            if !defined.insert(xml.clone()) {
                continue;
            }
            kvmroll_core::xml::parse_document(&xml).map_err(|e| {
                TestCaseError::fail(format!("rendered XML does not parse back: {e}\n{xml}"))
            })?;
            test_define(name, &xml).map_err(TestCaseError::fail)?;
            if validate {
                xml_validate(dir.path(), &xml).map_err(TestCaseError::fail)?;
            }
        }
    }
    Ok(())
}

#[test]
fn accepted_changes_render_domains_libvirt_takes() {
    let validate = have_virt_xml_validate();
    let mut runner = TestRunner::new(config(cases(LIBRARY_CASES)));
    let strategy = (select(vec![2u32, 4, 8]), vec(op(), 1..8));
    let result = runner.run(&strategy, |(cpus, ops)| {
        check_library_case(cpus, &ops, validate)
    });
    let checked = VALIDATED.lock().unwrap().as_ref().map_or(0, HashSet::len);
    eprintln!(
        "library: {LIBRARY}; {} domains defined on test:///default, \
         {checked} through virt-xml-validate",
        DEFINED.load(Ordering::Relaxed)
    );
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// The CLI on a real SQLite file: a refused command exits non-zero with one
/// line on stderr, prints nothing on stdout and leaves the file's bytes
/// (and its write-ahead log's) as they were.
struct Cli {
    _dir: tempfile::TempDir,
    db: PathBuf,
}

impl Cli {
    fn new(host_cpus: u32) -> Cli {
        let dir = scratch();
        let cli = Cli {
            db: dir.path().join("kvmroll.db"),
            _dir: dir,
        };
        let cpus = host_cpus.to_string();
        for args in [
            &[
                "host",
                "add",
                CONTAINERS[0],
                "--appliance",
                "vm-container",
                "--cpus",
                &cpus,
            ][..],
            &[
                "host",
                "add",
                CONTAINERS[1],
                "--appliance",
                "vm-container",
                "--cpus",
                "2",
            ],
            &["host", "add", "compute-0-0"],
            // The VMs are never defined there, so no refresh is made.
            &["attr", "set", "--global", "libvirt_uri", "test:///default"],
            &[
                "vm",
                "add",
                "vm-a",
                "--container",
                CONTAINERS[0],
                "--cpus",
                "2",
            ],
        ] {
            let out = cli.run(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>());
            assert!(out.status.success(), "{args:?}: {out:?}");
        }
        cli
    }

    fn run(&self, args: &[String]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_kvmroll"))
            .arg("--db")
            .arg(&self.db)
            .args(args)
            .env_remove("KVMROLL_DB")
            .env_remove("KVMROLL_DB_READONLY")
            .env_remove("KVMROLL_STAGE")
            .output()
            .unwrap()
    }

    /// The command line of an operation; a value that an argument cannot
    /// carry (a NUL) goes through --value-file.
    fn args(&self, op: &Op) -> Vec<String> {
        let s = |x: &str| x.to_string();
        match op {
            Op::Attr { at, name, value } => {
                let mut a = vec![s("attr"), s("set")];
                match at {
                    At::Global => a.push(s("--global")),
                    At::Os(x) => a.extend([s("--os"), x.clone()]),
                    At::Appliance(x) => a.extend([s("--appliance"), x.clone()]),
                    At::Rack(r) => a.extend([s("--rack"), r.to_string()]),
                    At::Host(h) => a.push(h.clone()),
                }
                a.push(name.clone());
                if value.contains('\0') || value.starts_with('-') || value.ends_with('\n') {
                    let file = self.db.with_file_name("value");
                    std::fs::write(&file, value).unwrap();
                    a.extend([s("--value-file"), file.display().to_string()]);
                } else {
                    a.push(value.clone());
                }
                a
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
                let mut a = vec![s("vm"), s("add"), name.clone()];
                a.extend([s("--container"), container.clone()]);
                a.extend([s("--mem"), mem.to_string(), s("--cpus"), cpus.to_string()]);
                for d in disks {
                    a.push(format!("--disk={d}"));
                }
                for n in nics {
                    a.push(format!("--nic={n}"));
                }
                a.push(format!("--virt-type={virt_type}"));
                a
            }
            Op::Set {
                name,
                container,
                mem,
                cpus,
                virt_type,
            } => {
                let mut a = vec![s("vm"), s("set"), name.clone()];
                if let Some(c) = container {
                    a.push(format!("--container={c}"));
                }
                if let Some(m) = mem {
                    a.push(format!("--mem={m}"));
                }
                if let Some(c) = cpus {
                    a.push(format!("--cpus={c}"));
                }
                if let Some(t) = virt_type {
                    a.push(format!("--virt-type={t}"));
                }
                a
            }
        }
    }
}

/// Whether a command line can carry the operation's names: an argument
/// holds no NUL (a value with one goes through --value-file).
fn arg_safe(op: &Op) -> bool {
    match op {
        Op::Attr { at, name, .. } => {
            !name.contains('\0') && !matches!(at, At::Host(h) if h.contains('\0'))
        }
        Op::Add { name, .. } | Op::Set { name, .. } => !name.contains('\0'),
    }
}

fn check_cli_case(host_cpus: u32, ops: &[Op]) -> Result<(), TestCaseError> {
    let cli = Cli::new(host_cpus);
    for op in ops.iter().filter(|o| arg_safe(o)) {
        let args = cli.args(op);
        let before = db_bytes(&cli.db);
        let out = cli.run(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        CLI.count(out.status.success());
        match out.status.code() {
            Some(0) => prop_assert!(err.is_empty(), "kvmroll {args:?} warned: {err}"),
            Some(1 | 2) => {
                prop_assert_eq!(err.lines().count(), 1, "kvmroll {:?}: {}", args, err);
                prop_assert!(err.starts_with("kvmroll: "), "kvmroll {:?}: {}", args, err);
                prop_assert!(out.stdout.is_empty(), "kvmroll {:?} printed", args);
                prop_assert!(
                    db_bytes(&cli.db) == before,
                    "refused kvmroll {args:?} ({err}) changed the database file"
                );
            }
            other => prop_assert!(false, "kvmroll {args:?}: status {other:?}: {err}"),
        }
    }
    Ok(())
}

#[test]
fn refused_commands_leave_the_database_file_as_it_was() {
    let mut runner = TestRunner::new(config(cases(CLI_CASES)));
    let strategy = (select(vec![2u32, 4, 8]), vec(op(), 1..7));
    let result = runner.run(&strategy, |(cpus, ops)| check_cli_case(cpus, &ops));
    eprintln!("kvmroll binary: {CLI}");
    if let Err(e) = result {
        panic!("{e}");
    }
}
