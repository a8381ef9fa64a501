//! Bad input refused, one line and nothing changed: names, specs,
//! booleans, MACs, placement.

use crate::fixture::*;

on_both_engines!(
    unknown_host_or_vm,
    duplicate_names,
    hostile_vm_names,
    relative_or_hostile_cdrom_path,
    booleans,
    bad_disk_and_nic_specs,
    duplicate_mac,
    container_must_be_a_kvm_host,
    vm_uuid_is_kept_and_macs_are_unique,
);

fn unknown_host_or_vm(e: Engine) {
    let f = Fixture::on(e);
    f.refused(&["host", "remove", "nosuch"], "unknown host \"nosuch\"");
    f.refused(&["host", "show", "nosuch"], "unknown host");
    f.refused(&["vm", "show", "nosuch"], "unknown VM \"nosuch\"");
    f.refused(&["vm", "set", "nosuch", "--mem", "10"], "unknown VM");
    f.refused(&["vm", "remove", "nosuch"], "unknown VM");
    f.refused(&["vm", "cdrom", "nosuch", "/a.iso"], "unknown VM");
    f.refused(&["attr", "set", "nosuch", "x", "y"], "unknown host");
    f.refused(&["attr", "list", "nosuch"], "unknown host");
    f.refused(
        &["attr", "set", "--appliance", "nosuch", "x", "y"],
        "unknown appliance",
    );
    f.refused(&["vm", "list", "--container", "nosuch"], "unknown host");
    // A bad name among good ones is refused before libvirt sees any.
    f.refused(&["vm", "sync", "hosted-vm-0-0-0", "nosuch"], "unknown VM");
    f.refused(&["vm", "define", "hosted-vm-0-0-0", "nosuch"], "unknown VM");
}

fn duplicate_names(e: Engine) {
    let f = Fixture::on(e);
    f.refused(
        &["host", "add", "compute-0-0"],
        "host \"compute-0-0\" already exists",
    );
    f.refused(
        &[
            "vm",
            "add",
            "hosted-vm-0-0-0",
            "--container",
            "vm-container-0-0",
        ],
        "already exists",
    );
    f.refused(
        &[
            "vm",
            "add",
            "compute-0-0",
            "--container",
            "vm-container-0-0",
        ],
        "already exists",
    );
}

fn hostile_vm_names(e: Engine) {
    let f = Fixture::on(e);
    for (name, why) in [
        ("a/b", "contains '/'"),
        ("../etc", "contains '/'"),
        ("..", "contains '..'"),
        ("a..b", "contains '..'"),
        ("a b", "white space"),
        ("a\tb", "white space"),
        ("a\u{1}b", "control characters"),
        ("_rf", "start with a letter or digit"),
    ] {
        f.refused(&["vm", "add", name, "--container", "vm-container-0-0"], why);
        f.refused(&["host", "add", name], why);
    }
}

fn relative_or_hostile_cdrom_path(e: Engine) {
    let f = Fixture::on(e);
    f.refused(
        &["vm", "cdrom", "hosted-vm-0-0-0", "rescue.iso"],
        "must be absolute",
    );
    f.refused(
        &["vm", "cdrom", "hosted-vm-0-0-0", "/isos/../etc/shadow"],
        "'..'",
    );
    f.refused(
        &["vm", "cdrom", "hosted-vm-0-0-0", "/isos/a\nb.iso"],
        "control characters",
    );
}

fn booleans(e: Engine) {
    let f = Fixture::on(e);
    f.refused(
        &[
            "attr",
            "set",
            "hosted-vm-0-0-0",
            "kvm_autostart",
            "sometimes",
        ],
        "is not a boolean",
    );
    f.refused(
        &["attr", "set", "compute-0-0", "kvm", "yes please"],
        "is not a boolean",
    );
    f.ok(&["attr", "set", "hosted-vm-0-0-0", "kvm_autostart", "yes"]);
    assert_eq!(
        f.ok(&["attr", "get", "hosted-vm-0-0-0", "kvm_autostart"]),
        "true\n"
    );
}

fn bad_disk_and_nic_specs(e: Engine) {
    let f = Fixture::on(e);
    for spec in [
        "file:relative.img,vda,virtio",
        "nfs:/a,vda,virtio",
        "file:/a,vda",
        "file:/a,vda,virtio,0",
    ] {
        f.refused(
            &[
                "vm",
                "add",
                "new",
                "--container",
                "vm-container-0-0",
                "--disk",
                spec,
            ],
            "invalid disk spec",
        );
        f.refused(
            &["vm", "disk", "add", "hosted-vm-0-0-0", spec],
            "invalid disk spec",
        );
    }
    for spec in [
        "br0",
        "bridge:",
        "bridge:br0,vlan=9999",
        "bridge:br0,mac=01:02:03:04:05:06",
        "bridge:br0,x=1",
    ] {
        f.refused(
            &[
                "vm",
                "add",
                "new",
                "--container",
                "vm-container-0-0",
                "--nic",
                spec,
            ],
            "invalid nic spec",
        );
    }
}

fn duplicate_mac(e: Engine) {
    let f = Fixture::on(e);
    f.ok(&[
        "vm",
        "nic",
        "add",
        "hosted-vm-0-0-0",
        "bridge:br0,mac=52:54:00:aa:00:01",
    ]);
    f.refused(
        &[
            "vm",
            "add",
            "new",
            "--container",
            "vm-container-0-0",
            "--nic",
            "bridge:br0,mac=52:54:00:AA:00:01",
        ],
        "MAC 52:54:00:aa:00:01 is already used",
    );
    f.refused(
        &[
            "vm",
            "nic",
            "add",
            "hosted-vm-0-0-0",
            "bridge:br1,mac=52:54:00:aa:00:01",
        ],
        "already used",
    );
}

fn container_must_be_a_kvm_host(e: Engine) {
    let f = Fixture::on(e);
    f.refused(
        &["vm", "add", "new", "--container", "nowhere"],
        "unknown host \"nowhere\"",
    );
    f.refused(
        &["vm", "add", "new", "--container", "compute-0-0"],
        "is not a VM container",
    );
    f.refused(
        &["vm", "add", "new", "--container", "hosted-vm-0-0-0"],
        "is not a VM container",
    );
    f.refused(
        &["vm", "set", "hosted-vm-0-0-0", "--container", "compute-0-0"],
        "is not a VM container",
    );
    // kvm=true on a compute host makes it a container, as in Rocks.
    f.ok(&["attr", "set", "compute-0-0", "kvm", "true"]);
    f.ok(&["vm", "add", "new", "--container", "compute-0-0"]);
    f.refused(
        &["attr", "set", "compute-0-0", "kvm", "false"],
        "still holds 1 VM",
    );
    f.refused(&["host", "remove", "vm-container-0-0"], "still holds 1 VM");
    f.refused(&["host", "remove", "hosted-vm-0-0-0"], "is a VM");
}

fn vm_uuid_is_kept_and_macs_are_unique(e: Engine) {
    let f = Fixture::on(e);
    let show = |f: &Fixture| -> serde_json::Value {
        serde_json::from_str(&f.ok(&["vm", "show", "hosted-vm-0-0-0", "--json"])).unwrap()
    };
    let uuid = show(&f)["uuid"].as_str().unwrap().to_string();
    assert_eq!(uuid.len(), 36);
    f.ok(&[
        "vm",
        "set",
        "hosted-vm-0-0-0",
        "--mem",
        "4096",
        "--cpus",
        "3",
    ]);
    f.ok(&["vm", "cdrom", "hosted-vm-0-0-0", "/isos/a.iso"]);
    let v = show(&f);
    assert_eq!(v["uuid"], uuid.as_str());
    assert_eq!(
        (v["memory_mib"].as_u64(), v["vcpus"].as_u64()),
        (Some(4096), Some(3))
    );
    assert_eq!(v["cdrom"], "/isos/a.iso");
    f.ok(&["vm", "cdrom", "hosted-vm-0-0-0", "none"]);
    assert!(show(&f)["cdrom"].is_null());
    f.ok(&[
        "vm",
        "add",
        "many",
        "--container",
        "vm-container-0-0",
        "--nic",
        "bridge:br0",
        "--nic",
        "bridge:br1",
        "--nic",
        "direct:eth0,vlan=5",
    ]);
    let list: serde_json::Value = serde_json::from_str(&f.ok(&["vm", "list", "--json"])).unwrap();
    let shown: Vec<serde_json::Value> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            let name = v["name"].as_str().unwrap();
            serde_json::from_str(&f.ok(&["vm", "show", name, "--json"])).unwrap()
        })
        .collect();
    let macs: Vec<&str> = shown
        .iter()
        .flat_map(|v| v["nics"].as_array().unwrap())
        .map(|n| n["mac"].as_str().unwrap())
        .collect();
    assert_eq!(macs.len(), 3);
    let unique: std::collections::BTreeSet<_> = macs.iter().collect();
    assert_eq!(unique.len(), 3);
    assert!(macs.iter().all(|m| m.starts_with("52:54:00:")));
}
