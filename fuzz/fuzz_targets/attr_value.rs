//! Attribute values as `kvmroll attr set` takes them: the first byte picks
//! the attribute, the rest is its value, checked by `attrs::normalize`
//! (the XML fragments of `cpu_mode`, `kvm_cpu_pinning` and `kvm_device_N`,
//! cpusets, numbers, booleans, paths).
//!
//! Beyond not crashing: a value accepted once is accepted again unchanged
//! (the renderer checks it again), and a VM rendered with it is one
//! well-formed domain, no deeper than libvirt reads, still named and
//! numbered as the database says, with no drift from itself.

#![no_main]

use kvmroll_core::drift::{check_domain, compare};
use kvmroll_core::{attrs, render_domain, Change, Cluster, Host, Scope, Vm};
use libfuzzer_sys::fuzz_target;

const NAMES: &[&str] = &[
    "cpu_mode",
    "kvm_cpu_pinning",
    "kvm_device_0",
    "numa_cells",
    "kvm_plugin_timeout_allocate",
    "kvm_guests_start_delay",
    "kvm_autostart",
    "kvm_emulator",
    "kvm_machine",
    "libvirt_uri",
];

const VM: &str = "vm-a";
const UUID: &str = "6a1f0e2c-0000-4000-8000-000000000001";

fn cluster() -> Cluster {
    let mut c = Cluster::seeded();
    let mut host = Host::new("vm-container-0-0", "vm-container");
    host.cpus = 8;
    c.apply(&Change::AddHost(host)).unwrap();
    c.apply(&Change::AddVm(Vm {
        id: 0,
        name: VM.into(),
        container: Some("vm-container-0-0".into()),
        memory_mib: 256,
        vcpus: 4,
        uuid: UUID.into(),
        cdrom: None,
        virt_type: "kvm".into(),
        disks: vec![],
        nics: vec![],
        stale: false,
        generation: 0,
    }))
    .unwrap();
    c
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, value)) = data.split_first() else {
        return;
    };
    let Ok(value) = std::str::from_utf8(value) else {
        return;
    };
    let name = NAMES[usize::from(pick) % NAMES.len()];
    let Ok(stored) = attrs::normalize(name, value) else {
        return;
    };
    assert_eq!(
        attrs::normalize(name, &stored).as_deref(),
        Ok(stored.as_str()),
        "a stored value is not accepted again as it is"
    );
    // numa_cells shapes the container, the others the VM.
    let host = if name == "numa_cells" { "vm-container-0-0" } else { VM };
    let mut c = cluster();
    c.apply(&Change::SetAttr {
        scope: Scope::Host(host.into()),
        name: name.into(),
        value: value.into(),
    })
    .expect("a value normalize accepts is set");
    if let Ok(xml) = render_domain(&c, VM) {
        if let Err(e) = check_domain(&xml, VM, Some(UUID)) {
            panic!("{name} = {value:?} renders a domain that is refused: {e}\n{xml}");
        }
        let drift = compare(&xml, &xml).expect("parses");
        assert!(drift.is_empty(), "{drift:?}");
    }
});
