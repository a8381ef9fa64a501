//! VMs of the cluster on their containers: defined from the frontend, run
//! with their container's plugins, moved by an allocate plugin, saved and
//! restored by `kvmroll-guests`, and their disks made where they run.

use super::*;

#[test]
fn vms_defined_from_the_frontend_run_their_containers_plugins_there() {
    const TEST: &str = "vms_defined_from_the_frontend_run_their_containers_plugins_there";
    let Some((f, _turn)) = frontend(TEST) else {
        return;
    };
    let (a, b) = (f.node(A), f.node(B));
    let va = f.vm("va", A, &[]);
    let vb = f.vm("vb", B, &[]);
    let t = Instant::now();
    f.k.ok(&["vm", "define", &va.name, &vb.name]);
    assert!(defined(a, &va.name) && !defined(b, &va.name));
    assert!(defined(b, &vb.name) && !defined(a, &vb.name));
    for (node, vm) in [(a, &va.name), (b, &vb.name)] {
        virsh_ok_in(node, &["start", vm]);
        assert_eq!(domstate(node, vm), "running");
        virsh_ok_in(node, &["destroy", vm]);
    }
    eprintln!(
        "{TEST}: two VMs defined, started and destroyed in {:.1?}",
        t.elapsed()
    );

    // Each container ran its own plugins, for its own VM only.
    let stages = ["allocate", "preboot", "shutdown"];
    for (node, mine, other) in [(a, &va.name, &vb.name), (b, &vb.name, &va.name)] {
        let want: Vec<String> = stages
            .iter()
            .map(|s| format!("{} {s}", node.name()))
            .collect();
        let ran = wait_for(EVENTS_WAIT, || plugin_runs(node, mine) == want);
        assert!(ran, "{}: {:?}", node.name(), plugin_runs(node, mine));
        assert!(
            plugin_runs(node, other).is_empty(),
            "{} ran {other}'s",
            node.name()
        );
    }
    // The frontend sees both containers' events.
    for vm in [&va.name, &vb.name] {
        assert!(
            f.wait_plugin_events(vm, &stages),
            "{vm}: {:?}",
            f.events(vm)
        );
        let seen = f.events(vm);
        for event in ["prepare begin", "start begin", "release end"] {
            assert!(
                seen.iter().any(|(_, e, _)| e == event),
                "{vm}: no {event} in {seen:?}"
            );
        }
    }
    let all = f.k.ok(&["events", "--limit", "500"]);
    assert!(all.contains(&va.name) && all.contains(&vb.name), "{all}");
}

#[test]
fn an_allocate_plugin_moves_a_vm_and_its_definition_follows() {
    const TEST: &str = "an_allocate_plugin_moves_a_vm_and_its_definition_follows";
    let Some((f, _turn)) = frontend(TEST) else {
        return;
    };
    let (a, b) = (f.node(A), f.node(B));
    let vm = f.vm("moved", A, &[]);
    f.k.ok(&["vm", "define", &vm.name]);
    // This VM's own allocate plugin on A sends it to B, through the
    // cluster database, as the container's role.
    let mover = format!("/etc/kvmroll/vms/{}/allocate.d/20-move", vm.name);
    let script = "#!/bin/sh\nexec kvmroll vm set \"$KVMROLL_VM\" --container node-b\n";
    a.write(&mover, script, 0o755).unwrap();

    let t = Instant::now();
    let out = virsh_in(a, &["start", &vm.name]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started on A");
    assert!(
        err.contains(&format!("VM {} was moved to container node-b", vm.name)),
        "{err}"
    );
    let show = f.k.ok(&["vm", "show", &vm.name, "--json"]);
    assert_eq!(json::parse(&show).unwrap().at("container").str(), Some(B));

    // Its definition leaves A for B by itself, once libvirt on A is done.
    let moved = wait_for(Duration::from_secs(20), || {
        !defined(a, &vm.name) && defined(b, &vm.name)
    });
    assert!(
        moved,
        "defined on A: {}, on B: {}",
        defined(a, &vm.name),
        defined(b, &vm.name)
    );
    eprintln!(
        "{TEST}: refused on A and defined on B in {:.1?}",
        t.elapsed()
    );
    virsh_ok_in(b, &["start", &vm.name]);
    assert_eq!(domstate(b, &vm.name), "running");
    assert_eq!(
        plugin_runs(a, &vm.name).first().map(String::as_str),
        Some("node-a allocate")
    );
    let on_b = plugin_runs(b, &vm.name);
    assert_eq!(on_b, ["node-b allocate", "node-b preboot"], "{on_b:?}");
    virsh_ok_in(b, &["destroy", &vm.name]);
}

#[test]
fn kvmroll_guests_saves_and_restores_a_containers_vms_and_leaves_the_others() {
    const TEST: &str = "kvmroll_guests_saves_and_restores_a_containers_vms_and_leaves_the_others";
    let Some((f, _turn)) = frontend(TEST) else {
        return;
    };
    let (a, b) = (f.node(A), f.node(B));
    let saved = f.vm("saved", A, &[("kvm_autostart", "true")]);
    let other = f.vm("other", B, &[("kvm_autostart", "true")]);
    f.k.ok(&["vm", "define", &saved.name, &other.name]);
    virsh_ok_in(a, &["start", &saved.name]);
    virsh_ok_in(b, &["start", &other.name]);
    let b_pid =
        || std::fs::read_to_string(b.outside(format!("/run/libvirt/qemu/{}.pid", other.name)));
    let b_before = b_pid().expect("the QEMU pid of B's VM");

    let t = Instant::now();
    let stop = in_node(a, "kvmroll-guests", &["stop"]);
    ok(stop, "kvmroll-guests stop on node-a");
    assert_eq!(domstate(a, &saved.name), "shut off");
    let info = virsh_ok_in(a, &["dominfo", &saved.name]);
    assert!(
        info.lines()
            .any(|l| l.starts_with("Managed save:") && l.ends_with("yes")),
        "{info}"
    );
    a.restart_libvirtd()
        .unwrap_or_else(|e| panic!("{}", rig::chain(&e)));
    let start = in_node(a, "kvmroll-guests", &["start"]);
    ok(start, "kvmroll-guests start on node-a");
    eprintln!(
        "{TEST}: stop, libvirtd restart and start on A in {:.1?}",
        t.elapsed()
    );
    assert_eq!(domstate(a, &saved.name), "running");
    // Restored from its image: QEMU was given the saved state.
    let pid = std::fs::read_to_string(a.outside(format!("/run/libvirt/qemu/{}.pid", saved.name)))
        .unwrap();
    // The pid is the node's: its /proc is read inside it.
    let cmdline = a
        .command("cat")
        .arg(format!("/proc/{}/cmdline", pid.trim()))
        .output()
        .unwrap()
        .stdout;
    assert!(
        String::from_utf8_lossy(&cmdline).contains("-incoming"),
        "not restored: {}",
        String::from_utf8_lossy(&cmdline).replace('\0', " ")
    );
    let status = in_node(a, "kvmroll-guests", &["status", "--json"]);
    let status = json::parse(&ok(status, "kvmroll-guests status")).unwrap();
    let names: Vec<&str> = status
        .at("vms")
        .arr()
        .iter()
        .filter_map(|v| v.at("name").str())
        .collect();
    assert!(
        names.contains(&saved.name.as_str()) && !names.contains(&other.name.as_str()),
        "{names:?}"
    );

    // B's VM ran on, the same QEMU all along.
    assert_eq!(domstate(b, &other.name), "running");
    assert_eq!(b_pid().unwrap(), b_before);
    virsh_ok_in(a, &["destroy", &saved.name]);
    virsh_ok_in(b, &["destroy", &other.name]);
}

/// Issue 17's last check: on the rig, where each container's disk root is
/// its own, a VM defined from the frontend gets its disk made on its
/// container at its first start, not on the frontend nor on the other.
#[test]
fn a_missing_disk_is_made_on_its_container_not_on_the_frontend() {
    const TEST: &str = "a_missing_disk_is_made_on_its_container_not_on_the_frontend";
    let Some((f, _turn)) = frontend(TEST) else {
        return;
    };
    let (a, b) = (f.node(A), f.node(B));
    let vm = f.vm("disk", B, &[("kvm_disk_roots", DISK_ROOT)]);
    let image = format!("{DISK_ROOT}/{}.qcow2", vm.name);
    f.k.ok(&[
        "vm",
        "disk",
        "add",
        &vm.name,
        &format!("qcow2:{image},vda,virtio,1"),
    ]);
    f.k.ok(&["vm", "define", &vm.name]);
    assert!(!b.outside(&image).exists());
    virsh_ok_in(b, &["start", &vm.name]);
    assert_eq!(domstate(b, &vm.name), "running");
    let made = b.outside(&image);
    assert!(made.exists(), "no {image} on node-b");
    let info = Command::new("qemu-img")
        .args(["info", "--output=json", "-U"])
        .arg(&made)
        .output()
        .unwrap();
    let info = json::parse(&ok(info, "qemu-img info")).unwrap();
    assert_eq!(info.at("format").str(), Some("qcow2"));
    assert_eq!(info.at("virtual-size").num(), Some((1u64 << 30) as f64));
    assert!(!Path::new(&image).exists(), "made on the frontend");
    assert!(!a.outside(&image).exists(), "made on node-a");
    virsh_ok_in(b, &["destroy", &vm.name]);
    // The database knows the image was made there.
    let out = f.k.run(&["vm", "remove", &vm.name]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(&format!("images stay on node-b: {image}")),
        "{err}"
    );
}
