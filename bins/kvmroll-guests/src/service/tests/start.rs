//! `start`: which VMs come back, restored or cold-booted, and what is done
//! with a saved image that cannot be trusted.

use super::*;
use crate::journal::Phase;
use kvmroll_virt::fake::Fault;
use std::time::Instant;

/// A rig whose VM `a` (autostart) was saved by a stop that completed.
fn saved_a() -> Rig {
    let rig = Rig::new(&[("a", true)]);
    rig.fake.add("a", RUNNING);
    assert_eq!(rig.stop(), Placement::AllInPlace);
    assert!(rig.image("a").exists());
    rig
}

/// What the quarantine folder holds.
fn quarantined(rig: &Rig) -> Vec<String> {
    let dir = rig.svc.state_dir.join("quarantine");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return vec![];
    };
    entries
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn saved_vms_are_restored_others_cold_booted_and_the_rest_left_off() {
    let rig = Rig::new(&[("saved", true), ("fresh", true), ("other", false)]);
    rig.fake
        .add("saved", OFF)
        .give_managed_save("saved")
        .add("fresh", OFF)
        .add("other", OFF)
        .add("not-kvmrolls", OFF);
    assert_eq!(rig.start(), Placement::AllInPlace);
    assert_eq!(rig.state_of("saved"), VmState::Restored);
    assert_eq!(rig.state_of("fresh"), VmState::Booted);
    assert_eq!(rig.calls_on("saved"), ["start saved"]);
    assert_eq!(rig.calls_on("fresh"), ["start fresh"]);
    assert!(
        !rig.image("saved").exists(),
        "libvirt removes it on restore"
    );
    for vm in ["other", "not-kvmrolls"] {
        assert!(rig.calls_on(vm).is_empty(), "{vm} was started");
        assert_eq!(rig.fake.state(vm), Some(OFF));
    }
    let j = rig.journal();
    assert_eq!(j.phase, Phase::Started);
    assert!(j.vms["saved"].autostart && !j.vms.contains_key("other"));
}

#[test]
fn running_or_paused_vms_are_left_as_they_are() {
    let rig = Rig::new(&[("a", true), ("p", true)]);
    rig.fake.add("a", RUNNING).add("p", PAUSED);
    assert_eq!(rig.start(), Placement::AllInPlace);
    assert_eq!(rig.state_of("a"), VmState::AlreadyRunning);
    assert_eq!(rig.state_of("p"), VmState::AlreadyRunning);
    assert!(rig.calls_on("a").is_empty() && rig.calls_on("p").is_empty());
    assert_eq!(
        rig.fake.state("p"),
        Some(PAUSED),
        "not this service's to resume"
    );
}

#[test]
fn a_stop_then_a_start_restores_what_was_saved() {
    let rig = saved_a();
    let states = rig.states_during("a", || rig.start());
    // What the stop left, then this start's plan and what it did.
    assert_eq!(states[..2], [VmState::Saved, VmState::Planned]);
    assert_eq!(states.last(), Some(&VmState::Restored));
    assert_eq!(rig.calls_on("a"), ["save a", "start a"]);
    assert_eq!(rig.fake.state("a"), Some(RUNNING));
}

#[test]
fn an_unusable_image_is_quarantined_and_the_vm_cold_booted() {
    let rig = saved_a();
    std::fs::write(rig.image("a"), b"LibvirtQemudPart and nothing more").unwrap();
    assert_eq!(rig.start(), Placement::AllInPlace);
    let (state, note) = rig.said_of("a");
    assert_eq!(state, VmState::Quarantined);
    assert!(note.contains("shorter than a save header"), "{note}");
    assert_eq!(rig.calls_on("a"), ["save a", "force-boot a"]);
    assert!(!rig.image("a").exists());
    let kept = quarantined(&rig);
    assert!(kept.len() == 1 && kept[0].starts_with("a."), "{kept:?}");
}

#[test]
fn an_image_of_another_size_than_its_save_left_is_quarantined() {
    let rig = saved_a();
    let mut bytes = std::fs::read(rig.image("a")).unwrap();
    bytes.extend(b"more");
    std::fs::write(rig.image("a"), &bytes).unwrap();
    assert_eq!(rig.start(), Placement::AllInPlace);
    let (state, note) = rig.said_of("a");
    assert_eq!(state, VmState::Quarantined);
    assert!(note.contains("the save that wrote it left"), "{note}");
}

/// The size is a check on the image of the save that recorded it: an
/// image written since by someone else is judged on its own.
#[test]
fn the_recorded_size_counts_only_for_an_image_the_stop_saved() {
    let rig = saved_a();
    let mut j = rig.journal();
    j.set("a", VmState::LeftRunning, "");
    j.save(&rig.svc.journal_path()).unwrap();
    let mut bytes = std::fs::read(rig.image("a")).unwrap();
    bytes.extend(b"more");
    std::fs::write(rig.image("a"), &bytes).unwrap();
    assert_eq!(rig.start(), Placement::AllInPlace);
    assert_eq!(rig.state_of("a"), VmState::Restored);
}

#[test]
fn a_failed_restore_quarantines_the_image_and_cold_boots() {
    let rig = saved_a();
    rig.fake.fault("a", Fault::RestoreFails);
    assert_eq!(rig.start(), Placement::AllInPlace);
    assert_eq!(rig.calls_on("a"), ["save a", "start a", "force-boot a"]);
    let (state, note) = rig.said_of("a");
    assert_eq!(state, VmState::Quarantined);
    assert!(note.starts_with("cannot start domain a"), "{note}");
    assert_eq!(quarantined(&rig).len(), 1);
    assert!(!rig.fake.has_managed_save("a"));
}

#[test]
fn a_vm_that_cannot_start_is_reported() {
    let rig = Rig::new(&[("a", true), ("b", true)]);
    rig.fake
        .add("a", OFF)
        .fault("a", Fault::StartFails)
        .add("b", OFF)
        .give_managed_save("b")
        .fault("b", Fault::StartFails);
    assert_eq!(missed(&rig.start()), ["a (failed)", "b (failed)"]);
    assert_eq!(rig.calls_on("b"), ["start b", "force-boot b"]);
}

#[test]
fn a_vm_libvirt_lacks_cannot_start_without_the_database() {
    let rig = Rig::new(&[("gone", true)]);
    assert_eq!(missed(&rig.start()), ["gone (failed)"]);
    let (_, note) = rig.said_of("gone");
    assert_eq!(
        note,
        "not defined in libvirt, and the database does not answer"
    );
}

/// A stop killed mid-save leaves libvirtd finishing the save; the start at
/// the next boot waits for it and restores from the image it leaves.
#[test]
fn the_start_after_a_killed_stop_waits_for_the_save_then_restores() {
    let rig = Rig::new(&[("a", true)]);
    rig.killed_mid_save("a", Duration::from_millis(300));
    assert_eq!(rig.start(), Placement::AllInPlace);
    assert_eq!(rig.state_of("a"), VmState::Restored);
    assert_eq!(rig.calls_on("a"), ["start a"]);
}

#[test]
fn vms_come_back_a_few_at_once_or_spaced_by_the_start_delay() {
    let names = ["a", "b", "c", "d", "e"];
    let mut rig = Rig::new(&names.map(|n| (n, true)));
    rig.parallel(3);
    for vm in names {
        rig.fake.add(vm, OFF);
    }
    rig.start();
    // The first connection defines nothing here; one per worker after.
    assert_eq!(rig.connects(), 1 + 3);

    let mut rig = Rig::new(&names[..3].iter().map(|&n| (n, true)).collect::<Vec<_>>());
    rig.settings(|s| s.start_delay = Duration::from_millis(150));
    for vm in &names[..3] {
        rig.fake.add(vm, OFF);
    }
    let t = Instant::now();
    assert_eq!(rig.start(), Placement::AllInPlace);
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(rig.connects(), 1 + 1);
    assert_eq!(rig.calls_of("start"), ["start a", "start b", "start c"]);
}

#[test]
fn no_libvirt_no_start() {
    let rig = Rig::new(&[("a", true)]);
    rig.fake.add("a", OFF).refuse_connects_from(0);
    let err = super::super::start(&rig.svc, &rig.fake, &Notifier::default()).unwrap_err();
    assert_eq!(err.to_string(), "cannot connect to fake:///system");
    assert_eq!(rig.fake.state("a"), Some(OFF));
}

/// The start too tells systemd to wait, as VMs come back.
#[test]
fn systemd_hears_the_start_extend_its_limit() {
    use std::os::unix::net::UnixDatagram;
    let rig = Rig::new(&[("a", true), ("b", true)]);
    rig.fake.add("a", OFF).add("b", OFF);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_nonblocking(true).unwrap();
    let notifier = Notifier::from_var(Some(path.as_os_str()));
    super::super::start(&rig.svc, &rig.fake, &notifier).unwrap();
    let mut buf = [0u8; 256];
    let n = sock.recv(&mut buf).expect("a notification");
    assert_eq!(&buf[..n], b"EXTEND_TIMEOUT_USEC=120000000");
    assert_eq!(rig.state_of("b"), VmState::Booted);
}
