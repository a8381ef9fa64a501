//! The values a property draws: CPU modes, pinning, fragments, booleans,
//! numbers, and hostile text.

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;

pub(crate) fn pick(values: &[&'static str]) -> BoxedStrategy<String> {
    select(values.to_vec()).prop_map(String::from).boxed()
}

/// A cpuset in libvirt's syntax: mostly within a small host, sometimes past it.
pub(crate) fn cpuset() -> BoxedStrategy<String> {
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
pub(crate) fn small_number() -> BoxedStrategy<String> {
    prop_oneof![
        8 => (0u32..5).prop_map(|n| n.to_string()),
        1 => pick(&["+1", "01", " 0", "-1", "4294967296", "1.0", ""]),
    ]
    .boxed()
}

/// `kvm_cpu_pinning`: pin_all, pin_auto, a fragment, or a near miss.
pub(crate) fn pinning() -> BoxedStrategy<String> {
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
pub(crate) fn cpu_mode() -> BoxedStrategy<String> {
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
pub(crate) fn device() -> BoxedStrategy<String> {
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
pub(crate) fn hostile() -> BoxedStrategy<String> {
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

pub(crate) fn boolean() -> BoxedStrategy<String> {
    pick(&[
        "true", "false", "yes", "No", "1", "0", "y", "ON", "maybe", "", "tru e", "true\n",
    ])
}

pub(crate) fn number() -> BoxedStrategy<String> {
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
pub(crate) fn text() -> BoxedStrategy<String> {
    prop_oneof![
        3 => "[ -~]{0,24}",
        1 => any::<String>(),
        1 => pick(&["a\0b", "line\nline", "\u{FFFE}", "'\"<>&;$(reboot)`"]),
    ]
    .boxed()
}

/// An attribute name and a value that suits it (or nearly).
pub(crate) fn attribute() -> BoxedStrategy<(String, String)> {
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
