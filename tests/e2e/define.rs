//! End to end against a real libvirtd: VMs added with the CLI, defined with
//! `kvmroll vm define`, started; what libvirt runs is what the database asked
//! for; a database change refreshes libvirt's definition.

use kvmroll_tests::{libvirtd_available, prefix, virsh, virsh_ok, Domains, Kvmroll};

struct Cluster {
    dir: tempfile::TempDir,
    k: Kvmroll,
}

impl Cluster {
    /// A fresh database with this machine as a VM container; it has no
    /// libvirt_uri, so kvmroll uses qemu:///system for it.
    fn local() -> (Cluster, String) {
        let dir = tempfile::tempdir().unwrap();
        let k = Kvmroll::new(dir.path().join("kvmroll.db"));
        let host = k.local_container();
        (Cluster { dir, k }, host)
    }
}

fn inactive(vm: &str) -> String {
    virsh_ok(&["dumpxml", "--inactive", vm])
}

fn boot_order(xml: &str) -> Vec<String> {
    xml.lines()
        .filter_map(|l| l.trim().strip_prefix("<boot dev='"))
        .map(|l| l.trim_end_matches("'/>").to_string())
        .collect()
}

// size: one scenario against real daemons, each step on the state the last one left; kept whole
#[test]
fn defined_vms_run_what_the_database_asks_for() {
    if !libvirtd_available("defined_vms_run_what_the_database_asks_for") {
        return;
    }
    let p = prefix("define");
    let (a, b, c) = (format!("{p}-a"), format!("{p}-b"), format!("{p}-c"));
    let _guard = Domains(vec![a.clone(), b.clone(), c.clone()]);
    let (cl, host) = Cluster::local();
    let iso = cl.dir.path().join("rescue.iso");
    std::fs::write(&iso, vec![0u8; 1 << 20]).unwrap();
    let iso = iso.to_str().unwrap();

    for vm in [&a, &b, &c] {
        cl.k.ok(&[
            "vm",
            "add",
            vm,
            "--container",
            &host,
            "--mem",
            "64",
            "--cpus",
            "1",
        ]);
    }
    cl.k.ok(&["attr", "set", &a, "kvm_cpu_pinning", "pin_all"]);
    cl.k.ok(&["attr", "set", &b, "kvm_cpu_pinning", "pin_auto"]);
    cl.k.ok(&["vm", "cdrom", &b, iso]);
    cl.k.ok(&[
        "attr",
        "set",
        &c,
        "cpu_mode",
        "exact: <model fallback='allow'>qemu64</model>",
    ]);
    cl.k.ok(&["vm", "define", &a, &b, &c]);

    // The inactive definitions hold what the database asked for.
    let xa = inactive(&a);
    assert!(xa.contains("<cpu mode='host-passthrough'"), "{xa}");
    assert!(
        xa.contains("<feature policy='disable' name='arch-capabilities'/>"),
        "{xa}"
    );
    assert!(xa.contains("<vcpupin vcpu='0' cpuset='0'/>"), "{xa}");
    assert_eq!(boot_order(&xa), ["network", "hd"]);
    let xb = inactive(&b);
    assert!(
        xb.contains("<vcpupin vcpu='0' cpuset='1'/>"),
        "pin_auto avoids CPU 0: {xb}"
    );
    assert_eq!(boot_order(&xb), ["cdrom", "network", "hd"]);
    assert!(xb.contains(&format!("<source file='{iso}'/>")), "{xb}");
    assert!(xb.contains("device='cdrom'"));
    let xc = inactive(&c);
    assert!(
        xc.contains("<cpu mode='custom' match='exact'"),
        "Rocks' exact becomes custom+exact: {xc}"
    );
    let uuid = cl.k.ok(&["vm", "show", &a, "--json"]);
    let uuid = uuid
        .split("\"uuid\": \"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();
    assert_eq!(virsh_ok(&["domuuid", &a]).trim(), uuid);

    // They start, and what runs is what was defined.
    virsh_ok(&["start", &a]);
    virsh_ok(&["start", &b]);
    let live = virsh_ok(&["dumpxml", &b]);
    assert!(live.contains("<vcpupin vcpu='0' cpuset='1'/>"));
    assert!(live.contains(&format!("<source file='{iso}'")));

    // A cdrom change refreshes the definition; it takes effect at the next
    // power cycle, so the running VM keeps its cdrom until then.
    cl.k.ok(&["vm", "cdrom", &b, "none"]);
    let xb = inactive(&b);
    assert!(!xb.contains("device='cdrom'"), "{xb}");
    assert_eq!(boot_order(&xb), ["network", "hd"]);
    assert!(virsh_ok(&["dumpxml", &b]).contains("device='cdrom'"));
    virsh_ok(&["destroy", &b]);
    virsh_ok(&["start", &b]);
    assert!(!virsh_ok(&["dumpxml", &b]).contains("device='cdrom'"));

    // Memory and vCPUs too; the UUID stays.
    cl.k.ok(&["vm", "set", &a, "--mem", "96"]);
    let xa = inactive(&a);
    assert!(xa.contains("<memory unit='KiB'>98304</memory>"), "{xa}");
    assert_eq!(virsh_ok(&["domuuid", &a]).trim(), uuid);

    // A running VM is not removed from under libvirt.
    let out = cl.k.run(&["vm", "remove", &a]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is running"));
    virsh_ok(&["destroy", &a]);
    cl.k.ok(&["vm", "remove", &a]);
    assert!(
        !virsh(&["dominfo", &a]).status.success(),
        "{a} still defined"
    );
    assert!(cl.k.run(&["vm", "show", &a]).status.code() == Some(1));
}

#[test]
fn a_vm_not_yet_defined_is_left_to_define() {
    if !libvirtd_available("a_vm_not_yet_defined_is_left_to_define") {
        return;
    }
    let p = prefix("undefined");
    let vm = format!("{p}-x");
    let _guard = Domains(vec![vm.clone()]);
    let (cl, host) = Cluster::local();
    cl.k.ok(&["vm", "add", &vm, "--container", &host, "--mem", "64"]);
    // Changing a VM libvirt does not have defines nothing.
    cl.k.ok(&["vm", "set", &vm, "--mem", "80"]);
    assert!(!virsh(&["dominfo", &vm]).status.success());
}
