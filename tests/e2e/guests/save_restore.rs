//! A clean stop and start: the autostart VMs saved and restored, cold
//! boots after a power loss, and a damaged image moved aside.

use super::*;

// size: one scenario against real daemons, each step on the state the last one left; kept whole
#[test]
fn a_clean_stop_saves_the_autostart_vms_and_start_restores_them() {
    let _serial = serial();
    let t = "a_clean_stop_saves_the_autostart_vms_and_start_restores_them";
    if !libvirtd_available(t) {
        return;
    }
    let mut rig = Rig::new("guests-clean", &[]);
    let vms = rig.guests(&[
        ("a", true),
        ("b", true),
        ("c", true),
        ("d", true),
        ("e", false),
    ]);
    let (saved, other) = (&vms[..4], &vms[4]);
    rig.wait_alone();

    let (out, stop_took) = rig.run(&["stop"]);
    assert_eq!(out.status.code(), Some(0), "stop: {}", stderr(&out));
    let mut sizes = BTreeMap::new();
    for vm in saved {
        sizes.insert(vm.clone(), assert_saved(vm));
        assert_eq!(rig.journal_state(vm), "saved", "{vm}");
    }
    // The fifth ignored its shutdown request and was destroyed at the limit.
    assert_eq!(domstate(other), "shut off");
    assert!(!image(other).exists(), "{other} was saved");
    assert_eq!(rig.journal_state(other), "destroyed");
    let (st, rows) = rig.status();
    assert_eq!(st.at("phase").str(), Some("stopped"));
    assert_eq!(st.at("host").str(), Some(rig.host.as_str()));
    for vm in saved {
        let row = &rows[vm];
        assert_eq!(row.at("autostart"), &Value::Bool(true), "{vm}");
        assert_eq!(row.at("state").str(), Some("shutoff"), "{vm}");
        assert_eq!(
            row.at("saved_image").str(),
            Some(image(vm).to_str().unwrap()),
            "{vm}"
        );
        assert_eq!(row.at("image_size").num(), Some(sizes[vm] as f64), "{vm}");
        let journal = row.at("journal");
        assert_eq!(journal.at("state").str(), Some("saved"), "{vm}");
        assert_eq!(journal.at("was_running"), &Value::Bool(true), "{vm}");
    }
    assert_eq!(rows[other].at("autostart"), &Value::Bool(false));
    assert_eq!(rows[other].at("saved_image"), &Value::Null);
    assert_eq!(
        rows[other].at("journal").at("state").str(),
        Some("destroyed")
    );

    // The reboot: libvirtd comes up again and finds the images.
    let restart_took = restart_libvirtd();
    for vm in saved {
        assert_eq!(assert_saved(vm), sizes[vm], "{vm}: image changed");
    }

    let (out, start_took) = rig.run(&["start"]);
    assert_eq!(out.status.code(), Some(0), "start: {}", stderr(&out));
    for vm in saved {
        assert_runs(vm, true);
        assert!(!image(vm).exists(), "{vm}: image left after its restore");
        assert_eq!(rig.journal_state(vm), "restored", "{vm}");
    }
    assert_eq!(domstate(other), "shut off", "{other} was started");
    assert!(qemu_pids(other).is_empty());
    let (st, rows) = rig.status();
    assert_eq!(st.at("phase").str(), Some("started"));
    for vm in saved {
        assert_eq!(rows[vm].at("state").str(), Some("running"), "{vm}");
        assert_eq!(rows[vm].at("saved_image"), &Value::Null, "{vm}");
        assert_eq!(
            rows[vm].at("journal").at("state").str(),
            Some("restored"),
            "{vm}"
        );
    }
    assert_eq!(rows[other].at("state").str(), Some("shutoff"));
    assert_eq!(
        rows[other].at("journal").at("state").str(),
        Some("destroyed")
    );
    eprintln!(
        "timings: stop {:.2}s (4 saves, 1 shutdown limit of 2s), libvirtd restart {:.2}s, start {:.2}s",
        stop_took.as_secs_f64(),
        restart_took.as_secs_f64(),
        start_took.as_secs_f64()
    );

    // The admin turns one off; the next stop answers only for the VMs it
    // found running, not for what the journal says of the last run.
    virsh_ok(&["destroy", &saved[0]]);
    let (out, _) = rig.run(&["stop"]);
    assert_eq!(out.status.code(), Some(0), "second stop: {}", stderr(&out));
    for vm in &saved[1..] {
        assert_saved(vm);
    }
    assert_eq!(rig.journal_state(&saved[0]), "restored");
}

#[test]
fn after_a_power_loss_start_cold_boots_the_autostart_vms() {
    let _serial = serial();
    let t = "after_a_power_loss_start_cold_boots_the_autostart_vms";
    if !libvirtd_available(t) {
        return;
    }
    let mut rig = Rig::new("guests-power", &[]);
    let vms = rig.guests(&[("a", true), ("b", true), ("c", false)]);
    // Power lost: every QEMU gone without a save, the daemon restarted.
    for vm in &vms {
        virsh_ok(&["destroy", vm]);
        assert!(!image(vm).exists());
    }
    let restart_took = restart_libvirtd();

    let (out, start_took) = rig.run(&["start"]);
    assert_eq!(out.status.code(), Some(0), "start: {}", stderr(&out));
    for vm in &vms[..2] {
        assert_runs(vm, false);
        assert_eq!(rig.journal_state(vm), "booted", "{vm}");
    }
    assert_eq!(domstate(&vms[2]), "shut off", "{} was started", vms[2]);
    assert!(qemu_pids(&vms[2]).is_empty());
    eprintln!(
        "timings: libvirtd restart {:.2}s, start {:.2}s (2 cold boots)",
        restart_took.as_secs_f64(),
        start_took.as_secs_f64()
    );
}

#[test]
fn a_truncated_image_is_quarantined_and_its_vm_cold_booted() {
    let _serial = serial();
    let t = "a_truncated_image_is_quarantined_and_its_vm_cold_booted";
    if !libvirtd_available(t) {
        return;
    }
    let mut rig = Rig::new("guests-corrupt", &[]);
    let vms = rig.guests(&[("a", true), ("b", true), ("c", true)]);
    rig.wait_alone();
    let (out, stop_took) = rig.run(&["stop"]);
    assert_eq!(out.status.code(), Some(0), "stop: {}", stderr(&out));
    for vm in &vms {
        assert_saved(vm);
    }

    // b's image loses its second half.
    let bad = &vms[1];
    let full = std::fs::metadata(image(bad)).unwrap().len();
    let half = full / 2;
    std::fs::OpenOptions::new()
        .write(true)
        .open(image(bad))
        .unwrap()
        .set_len(half)
        .unwrap();

    let (out, start_took) = rig.run(&["start"]);
    assert_eq!(out.status.code(), Some(0), "start: {}", stderr(&out));
    assert_runs(bad, false);
    assert!(!image(bad).exists(), "{bad}: damaged image left in place");
    let quarantine = rig.state_dir().join("quarantine");
    let kept: Vec<(String, u64)> = std::fs::read_dir(&quarantine)
        .unwrap_or_else(|e| panic!("{}: {e}", quarantine.display()))
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().unwrap().len(),
            )
        })
        .collect();
    assert_eq!(kept.len(), 1, "one image quarantined: {kept:?}");
    assert!(
        kept[0].0.starts_with(&format!("{bad}.")),
        "quarantined image named for {bad}: {kept:?}"
    );
    assert_eq!(
        kept[0].1, half,
        "the quarantined image is the truncated one"
    );
    assert_eq!(rig.journal_state(bad), "quarantined");
    let err = stderr(&out);
    assert!(
        err.lines()
            .any(|l| l.contains(bad.as_str()) && l.contains("cold-boot")),
        "no log line says {bad} was cold-booted: {err}"
    );
    for vm in [&vms[0], &vms[2]] {
        assert_runs(vm, true);
        assert_eq!(rig.journal_state(vm), "restored", "{vm}");
    }
    eprintln!(
        "timings: stop {:.2}s (3 saves), start {:.2}s (2 restores, 1 quarantine and cold boot); \
         image {full} bytes cut to {half}",
        stop_took.as_secs_f64(),
        start_took.as_secs_f64()
    );
}
