//! A stop killed or interrupted halfway loses no VM and starts none twice;
//! and the service refuses to run beside libvirt-guests or libvirt's own
//! auto-shutdown.

use super::*;

// size: one scenario against real daemons, each step on the state the last one left; kept whole
#[test]
fn a_stop_killed_halfway_loses_no_vm_and_starts_none_twice() {
    let _serial = serial();
    let t = "a_stop_killed_halfway_loses_no_vm_and_starts_none_twice";
    if !libvirtd_available(t) {
        return;
    }
    let mut rig = Rig::new("guests-killed", &[("kvm_guests_parallel", "2")]);
    let vms = rig.guests(&[("a", true), ("b", true), ("c", true), ("d", true)]);
    rig.wait_alone();

    // Kill the stop with SIGKILL once a save is under way in libvirtd (the
    // journal says "saving" and libvirt has paused the VM to write it out):
    // a save in flight, which libvirtd goes on with after its client is
    // gone, and others not yet begun.
    let spawned = Instant::now();
    let mut child = rig.spawn(&["stop"]);
    let mut in_flight = None;
    let mut ended = None;
    wait_for(Duration::from_secs(30), || {
        in_flight = rig
            .journal_states()
            .into_iter()
            .filter(|(_, s)| s == "saving")
            .map(|(n, _)| n)
            .find(|n| status_state(n).as_deref() == Some("paused"));
        ended = child.try_wait().unwrap();
        in_flight.is_some() || ended.is_some()
    });
    let Some(in_flight) = in_flight else {
        // Say why: the stop ended early, or never got a save going.
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        panic!(
            "no save was seen under way (journal \"saving\", VM paused); stop {}: {}; \
             journal: {:?}; libvirt: {:?}",
            if ended.is_some() {
                "ended first"
            } else {
                "still ran after 30 s"
            },
            stderr(&out),
            rig.journal_states(),
            vms.iter()
                .map(|v| (v.as_str(), domstate(v)))
                .collect::<Vec<_>>()
        );
    };
    child.kill().unwrap();
    let killed_after = spawned.elapsed();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&out.status),
        Some(9),
        "stop ended before the kill: {}",
        stderr(&out)
    );
    // Then at once `start` (the journal is only read: no delay).
    let at_kill = rig.journal_states();
    let (out, start_took) = rig.run(&["start"]);
    assert!(
        matches!(out.status.code(), Some(0 | 3)),
        "start: {:?}: {}",
        out.status.code(),
        stderr(&out)
    );
    let after_start = rig.journal_states();
    eprintln!(
        "stop killed after {:.2}s while {in_flight} was being saved; journal then: {at_kill:?}; \
         after start: {after_start:?}; libvirt now: {:?}",
        killed_after.as_secs_f64(),
        vms.iter()
            .map(|v| (v.as_str(), domstate(v), image(v).exists()))
            .collect::<Vec<_>>()
    );
    let check = |when: &str| {
        let listed = virsh_ok(&["list", "--state-running", "--name"]);
        for vm in &vms {
            assert_eq!(
                domstate(vm),
                "running",
                "{vm} {when}; start's journal says {:?}; it has a saved image: {}",
                after_start.get(vm),
                image(vm).exists()
            );
            assert_eq!(
                listed.lines().filter(|l| l.trim() == vm).count(),
                1,
                "{vm} listed once as running {when}: {listed}"
            );
            qemu_of(vm);
        }
    };
    check("right after start");
    if out.status.code() == Some(3) {
        let err = stderr(&out);
        assert!(
            err.contains("not where they should be"),
            "start exited 3 without a report: {err}"
        );
    }
    // A save cut off with its client may still run in libvirtd, and would
    // pause its VM and then stop it: for longer than any of these saves
    // takes, no VM may leave the running state, even for a moment.
    let watch_until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < watch_until {
        for vm in &vms {
            let state = status_state(vm);
            assert_eq!(state.as_deref(), Some("running"), "{vm} after start");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    check("4 s after start");
    for vm in &vms {
        assert!(!image(vm).exists(), "{vm}: a saved image is left over");
    }
    eprintln!(
        "timings: killed after {:.2}s, start {:.2}s",
        killed_after.as_secs_f64(),
        start_took.as_secs_f64()
    );
}

#[test]
fn sigterm_during_stop_lets_the_save_in_flight_finish() {
    let _serial = serial();
    let t = "sigterm_during_stop_lets_the_save_in_flight_finish";
    if !libvirtd_available(t) {
        return;
    }
    let mut rig = Rig::new("guests-term", &[("kvm_guests_parallel", "1")]);
    let vms = rig.guests(&[("a", true), ("b", true), ("c", true)]);
    rig.wait_alone();

    let spawned = Instant::now();
    let child = rig.spawn(&["stop"]);
    let mut first = None;
    wait_for(Duration::from_secs(30), || {
        first = rig
            .journal_states()
            .into_iter()
            .find(|(_, s)| s == "saving")
            .map(|(n, _)| n);
        first.is_some()
    });
    let first = first.expect("the journal never showed a save under way");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let signalled = Instant::now();
    let signalled_after = spawned.elapsed();
    let out = child.wait_with_output().unwrap();
    let exit_after_term = signalled.elapsed();
    let err = stderr(&out);
    eprintln!(
        "SIGTERM after {:.2}s while {first} was saving; stop exited {:?} {:.2}s later\n{}",
        signalled_after.as_secs_f64(),
        out.status.code(),
        exit_after_term.as_secs_f64(),
        err.trim_end()
    );
    assert_eq!(out.status.code(), Some(3), "stop: {err}");

    // The save in flight completed.
    assert_saved(&first);
    assert_eq!(rig.journal_state(&first), "saved");
    // The others were never begun: reported, and still running.
    let rest: Vec<&String> = vms.iter().filter(|v| **v != first).collect();
    assert_eq!(rest.len(), 2);
    let report = err
        .lines()
        .find(|l| l.contains("not saved"))
        .unwrap_or_else(|| panic!("no line reports the VMs not saved: {err}"));
    for vm in &rest {
        assert!(report.contains(vm.as_str()), "{vm} not in {report:?}");
        assert_eq!(rig.journal_state(vm), "not-saved", "{vm}");
        assert_runs(vm, false);
        assert!(!image(vm).exists(), "{vm} has an image");
    }
    assert!(
        !report.contains(&format!("{first},")) && !report.ends_with(first.as_str()),
        "{first} was saved but is reported not saved: {report:?}"
    );
    let (st, _) = rig.status();
    assert_eq!(st.at("phase").str(), Some("stopped"));
}

#[test]
fn it_refuses_to_run_beside_libvirt_guests_or_libvirt_auto_shutdown() {
    let _serial = serial();
    // No VMs, no libvirtd needed: the refusal comes before either is used.
    // Should it not, the container's libvirt is one that is not there, so a
    // broken check cannot save or stop this machine's domains.
    let rig = Rig::bare("guests-refuse");
    rig.kvmroll(&[
        "attr",
        "set",
        &rig.host,
        "libvirt_uri",
        "qemu+unix:///system?socket=/nonexistent/libvirt-sock",
    ]);
    let root = tempfile::tempdir().unwrap();
    let r = root.path();

    // An enabled libvirt-guests unit (a dangling link is enough: systemd's
    // enablement is the link).
    let wants = r.join("etc/systemd/system/multi-user.target.wants");
    std::fs::create_dir_all(&wants).unwrap();
    std::os::unix::fs::symlink(
        "/lib/systemd/system/libvirt-guests.service",
        wants.join("libvirt-guests.service"),
    )
    .unwrap();
    refused(&rig, r, &["systemctl disable", "libvirt-guests"]);
    std::fs::remove_file(wants.join("libvirt-guests.service")).unwrap();

    // The same under sysvinit.
    let rc2 = r.join("etc/rc2.d");
    std::fs::create_dir_all(&rc2).unwrap();
    std::os::unix::fs::symlink("../init.d/libvirt-guests", rc2.join("S01libvirt-guests")).unwrap();
    refused(&rig, r, &["update-rc.d libvirt-guests disable"]);
    std::fs::remove_file(rc2.join("S01libvirt-guests")).unwrap();

    // libvirt's own auto-shutdown.
    std::fs::create_dir_all(r.join("etc/libvirt")).unwrap();
    std::fs::write(
        r.join("etc/libvirt/qemu.conf"),
        "user = \"root\"\nauto_shutdown_try_save = \"all\"\n",
    )
    .unwrap();
    refused(&rig, r, &["auto_shutdown_try_save", "\"none\""]);
}

/// `start` and `stop` under `--root ROOT` exit 1 with one stderr line that
/// holds each of `says`, having touched nothing (no journal).
fn refused(rig: &Rig, root: &Path, says: &[&str]) {
    for cmd in ["start", "stop"] {
        let out = rig
            .service(&["--root", root.to_str().unwrap(), cmd])
            .output()
            .unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{cmd}: {err}");
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{cmd}: one line: {err}");
        for s in says {
            assert!(lines[0].contains(s), "{cmd}: {s:?} not in {:?}", lines[0]);
        }
        assert!(
            !rig.state_dir().join("journal.json").exists(),
            "{cmd} wrote a journal though it refused to run"
        );
    }
}
