//! Bringing libvirt in step: unreachable containers, libvirt errors, disks,
//! removal and moving definitions.

use crate::fixture::*;

on_both_engines!(
    unreachable_container_is_said_plainly_and_marks_the_vm_stale,
    a_huge_libvirt_error_is_cut_to_a_line,
    disk_paths_outside_kvm_disk_roots_are_refused_unless_forced,
    disks_grow_and_never_shrink,
    a_removed_vm_says_where_its_images_stay,
    sync_from_moves_a_definition_to_the_new_container,
);

fn unreachable_container_is_said_plainly_and_marks_the_vm_stale(e: Engine) {
    let f = Fixture::on(e);
    f.ok(&[
        "attr",
        "set",
        "vm-container-0-0",
        "libvirt_uri",
        "qemu+unix:///system?socket=/nonexistent/sock",
    ]);
    let out = f.run(&["vm", "set", "hosted-vm-0-0-0", "--mem", "512"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("was not refreshed") && err.contains("kvmroll vm define hosted-vm-0-0-0"),
        "{err}"
    );
    let v: serde_json::Value =
        serde_json::from_str(&f.ok(&["vm", "show", "hosted-vm-0-0-0", "--json"])).unwrap();
    assert_eq!(
        (v["memory_mib"].as_u64(), v["stale"].as_bool()),
        (Some(512), Some(true))
    );
    // Changes that leave the XML alone do not call libvirt at all.
    f.ok(&["attr", "set", "hosted-vm-0-0-0", "note", "unrelated"]);
}

/// Regression: a `vm define` that libvirt refused echoed libvirt's whole
/// error, 700 KB over many lines.
fn a_huge_libvirt_error_is_cut_to_a_line(e: Engine) {
    let f = Fixture::on(e);
    let vm = "hosted-vm-0-0-0";
    // libvirt quotes the model it does not know, newlines and all.
    let model = "A&#10;".repeat(120_000);
    let watchdog = format!("<watchdog model='{model}'/>");
    f.ok(&f
        .attr_from_file(vm, "kvm_device_0", &watchdog)
        .each_ref()
        .map(String::as_str));
    let out = f.run(&["vm", "define", vm]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.len() < 3 * kvmroll_core::text::MAX_BYTES,
        "{} bytes",
        err.len()
    );
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert!(lines[0].contains("unknown watchdog model"), "{err}");
    assert!(lines[0].ends_with("bytes in all)"), "{err}");
    assert_eq!(lines[1], "kvmroll: 1 of 1 VM(s) could not be defined");
}

fn disk_paths_outside_kvm_disk_roots_are_refused_unless_forced(e: Engine) {
    let f = Fixture::on(e);
    let add = |spec: &str, force: bool| -> Vec<String> {
        let mut a: Vec<String> = ["vm", "add", "nd-0", "--container", "vm-container-0-0"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        a.extend(["--disk".to_string(), spec.to_string()]);
        if force {
            a.push("--force".into());
        }
        a
    };
    fn args(a: &[String]) -> Vec<&str> {
        a.iter().map(String::as_str).collect()
    }
    // The first try: a path under /tmp.
    let spec = "qcow2:/tmp/nd/nd-0.qcow2,vda,virtio,2";
    f.refused(&args(&add(spec, false)), "kvm_disk_roots");
    f.refused(
        &["vm", "disk", "add", "hosted-vm-0-0-0", spec],
        "kvm_disk_roots",
    );
    // Lexically inside is not enough with `..`; that is refused as a path.
    f.refused(
        &args(&add(
            "qcow2:/var/lib/libvirt/images/../../x.qcow2,vda,virtio,2",
            false,
        )),
        "..",
    );
    // --force takes it, to be used as it is.
    f.ok(&args(&add(spec, true)));
    f.ok(&["vm", "remove", "nd-0"]);
    // The default roots, and block devices anywhere, are fine.
    f.ok(&args(&add(
        "qcow2:/var/lib/libvirt/images/nd-0.qcow2,vda,virtio,2",
        false,
    )));
    f.ok(&["vm", "disk", "add", "nd-0", "block:/dev/sdb,vdb,virtio"]);
    f.ok(&[
        "vm",
        "disk",
        "add",
        "nd-0",
        "raw:/state/partition1/kvm/disks/nd-0.img,vdc,virtio,1",
    ]);
    // A VM's own roots.
    f.refused(
        &["attr", "set", "nd-0", "kvm_disk_roots", "/"],
        "kvm_disk_roots",
    );
    f.refused(
        &["attr", "set", "nd-0", "kvm_disk_roots", "srv/vm"],
        "kvm_disk_roots",
    );
    f.ok(&["attr", "set", "nd-0", "kvm_disk_roots", "/srv/vm"]);
    f.ok(&[
        "vm",
        "disk",
        "add",
        "nd-0",
        "raw:/srv/vm/nd-0.img,vdd,virtio,1",
    ]);
    f.refused(
        &[
            "vm",
            "disk",
            "add",
            "nd-0",
            "raw:/var/lib/libvirt/images/x.img,vde,virtio,1",
        ],
        "/srv/vm",
    );
}

fn disks_grow_and_never_shrink(e: Engine) {
    let f = Fixture::on(e);
    f.ok(&[
        "vm",
        "disk",
        "add",
        "hosted-vm-0-0-0",
        "qcow2:/var/lib/libvirt/images/g.qcow2,vda,virtio,2",
    ]);
    f.ok(&[
        "vm",
        "disk",
        "add",
        "hosted-vm-0-0-0",
        "block:/dev/sdb,vdb,virtio",
    ]);
    f.ok(&[
        "vm",
        "disk",
        "add",
        "hosted-vm-0-0-0",
        "raw:/tmp/forced.img,vdc,virtio,1",
        "--force",
    ]);
    f.refused(
        &["vm", "disk", "resize", "hosted-vm-0-0-0", "vda", "1"],
        "never shrinks",
    );
    f.refused(
        &["vm", "disk", "resize", "hosted-vm-0-0-0", "vdb", "10"],
        "block device",
    );
    f.refused(
        &["vm", "disk", "resize", "hosted-vm-0-0-0", "vdc", "10"],
        "kvm_disk_roots",
    );
    f.refused(
        &["vm", "disk", "resize", "hosted-vm-0-0-0", "vdz", "10"],
        "no disk vdz",
    );
    f.refused(&["vm", "disk", "resize", "nobody", "vda", "10"], "nobody");
    // The test driver has no such domain running: it grows at its next start.
    let out = f.run(&["vm", "disk", "resize", "hosted-vm-0-0-0", "vda", "5"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("grows to 5 GiB at its next start"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let show = f.ok(&["vm", "show", "hosted-vm-0-0-0"]);
    assert!(
        show.contains("qcow2:/var/lib/libvirt/images/g.qcow2,vda,virtio,5"),
        "{show}"
    );
    // The grow waits for the next start; a disk removed takes it along, so
    // the same path added again is not grown unasked.
    let grows = || f.count("disk_grows");
    assert_eq!(grows(), 1);
    f.ok(&["vm", "disk", "remove", "hosted-vm-0-0-0", "vda"]);
    assert_eq!(grows(), 0);
}

fn a_removed_vm_says_where_its_images_stay(e: Engine) {
    let f = Fixture::on(e);
    f.ok(&[
        "vm",
        "disk",
        "add",
        "hosted-vm-0-0-0",
        "qcow2:/var/lib/libvirt/images/r.qcow2,vda,virtio,2",
    ]);
    f.refused(
        &[
            "--no-sync",
            "vm",
            "remove",
            "hosted-vm-0-0-0",
            "--delete-disks",
        ],
        "--delete-disks",
    );
    let out = f.run(&["vm", "remove", "hosted-vm-0-0-0"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("images stay on vm-container-0-0: /var/lib/libvirt/images/r.qcow2"),
        "{err}"
    );
}

/// A libvirt test-driver node file holding `vm`, running or shut off.
fn test_node(f: &Fixture, file: &str, vm: &str, running: bool) -> String {
    let state = if running { 1 } else { 5 };
    let path = f.file(file);
    std::fs::write(
        &path,
        format!(
            "<node><domain type='test' xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>\
             <name>{vm}</name><memory>65536</memory><os><type>hvm</type></os>\
             <test:runstate>{state}</test:runstate></domain></node>"
        ),
    )
    .unwrap();
    format!("test://{}", path.display())
}

/// `vm sync VM --from OLD` (the hook's refresh after an allocate plugin
/// moved a VM): the definition goes from OLD's libvirt to the VM's new
/// container; a VM running on OLD stays there, said in one line.
fn sync_from_moves_a_definition_to_the_new_container(e: Engine) {
    let f = Fixture::on(e);
    let vm = "hosted-vm-0-0-0";
    f.ok(&[
        "host",
        "add",
        "vm-container-0-1",
        "--appliance",
        "vm-container",
        "--cpus",
        "4",
    ]);
    f.ok(&[
        "--no-sync",
        "vm",
        "set",
        vm,
        "--container",
        "vm-container-0-1",
    ]);
    let old = test_node(&f, "old.xml", vm, false);
    f.ok(&["attr", "set", "vm-container-0-0", "libvirt_uri", &old]);
    let out = f.run(&["vm", "sync", vm, "--from", "vm-container-0-0"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(
        err.trim(),
        format!(
            "kvmroll: VM {vm}: moved from vm-container-0-0 to vm-container-0-1 (test:///default)"
        )
    );
    let old = test_node(&f, "old.xml", vm, true);
    f.ok(&["attr", "set", "vm-container-0-0", "libvirt_uri", &old]);
    let out = f.run(&["vm", "sync", vm, "--from", "vm-container-0-0"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.lines().next().unwrap_or_default().ends_with(
            "cannot move it from vm-container-0-0 to vm-container-0-1: it runs on vm-container-0-0"
        ),
        "{err}"
    );
    // Where the old container does not have it, a plain sync; an unknown
    // container is refused.
    f.ok(&[
        "attr",
        "set",
        "vm-container-0-0",
        "libvirt_uri",
        "test:///default",
    ]);
    let out = f.run(&["vm", "sync", vm, "--from", "vm-container-0-0"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not defined in libvirt"));
    f.refused(
        &["vm", "sync", vm, "--from", "nosuch"],
        "unknown host \"nosuch\"",
    );
}
