//! `stop`: who is saved, who is shut down, how, and what the journal says.

use super::*;
use crate::journal::Phase;
use kvmroll_virt::fake::Fault;
use std::sync::atomic::Ordering;
use std::time::Instant;

#[test]
fn running_autostart_vms_are_saved_and_every_other_running_domain_shut_down() {
    let rig = Rig::new(&[
        ("keep", true),
        ("paused", true),
        ("off", true),
        ("other", false),
        ("other-off", false),
    ]);
    rig.fake
        .add("keep", RUNNING)
        .add("paused", PAUSED)
        .add("off", OFF)
        .add("other", RUNNING)
        .add("other-off", OFF)
        .add("not-kvmrolls", RUNNING);
    assert_eq!(rig.stop(), Placement::AllInPlace);

    for vm in ["keep", "paused"] {
        assert_eq!(rig.calls_on(vm), [format!("save {vm}")]);
        assert_eq!(rig.fake.state(vm), Some(OFF));
        assert!(rig.fake.has_managed_save(vm));
        let size = std::fs::metadata(rig.image(vm)).unwrap().len();
        let j = rig.journal();
        let e = &j.vms[vm];
        assert_eq!(
            (e.state, e.autostart, e.was_running),
            (VmState::Saved, true, true)
        );
        assert_eq!(e.image_size, Some(size), "the size checked at start");
    }
    for vm in ["other", "not-kvmrolls"] {
        assert_eq!(rig.calls_on(vm), [format!("shutdown {vm}")]);
        assert_eq!(rig.state_of(vm), VmState::ShutDown);
        assert!(!rig.journal().vms[vm].autostart);
    }
    for vm in ["off", "other-off"] {
        assert!(rig.calls_on(vm).is_empty(), "{vm} was off");
        assert!(!rig.journal().vms.contains_key(vm));
    }
    assert_eq!(rig.journal().phase, Phase::Stopped);
}

#[test]
fn saves_go_in_listing_order_one_at_a_time_with_parallel_one() {
    let mut rig = Rig::new(&[("c", true), ("a", true), ("b", true)]);
    rig.settings(|s| s.parallel = 1);
    for vm in ["c", "a", "b"] {
        rig.fake
            .add(vm, RUNNING)
            .save_takes(vm, Duration::from_millis(30));
    }
    rig.stop();
    assert_eq!(rig.calls_of("save"), ["save a", "save b", "save c"]);
    assert_eq!(rig.fake.most_saves_at_once(), 1);
}

#[test]
fn no_more_than_kvm_guests_parallel_saves_run_at_once_each_on_its_connection() {
    let names = ["a", "b", "c", "d", "e"];
    let mut rig = Rig::new(&names.map(|n| (n, true)));
    rig.settings(|s| s.parallel = 2);
    for vm in names {
        rig.fake
            .add(vm, RUNNING)
            .save_takes(vm, Duration::from_millis(150));
    }
    assert_eq!(rig.stop(), Placement::AllInPlace);
    assert_eq!(rig.fake.most_saves_at_once(), 2);
    // The monitor's connection and one per worker.
    assert_eq!(rig.connects(), 3);
}

#[test]
fn saves_bypass_the_page_cache_only_when_asked() {
    let mut rig = Rig::new(&[("a", true)]);
    rig.fake.add("a", RUNNING);
    rig.settings(|s| s.bypass_cache = true);
    rig.stop();
    assert_eq!(rig.calls_on("a"), ["save a bypass-cache"]);
}

#[test]
fn a_failed_save_falls_back_to_a_shutdown() {
    let rig = Rig::new(&[("a", true)]);
    // Each step takes long enough to be seen in the journal.
    rig.fake
        .add("a", RUNNING)
        .fault("a", Fault::SaveFails)
        .save_takes("a", Duration::from_millis(100))
        .shutdown_takes("a", Duration::from_millis(100));
    let states = rig.states_during("a", || rig.stop());
    assert_eq!(rig.calls_on("a"), ["save a", "shutdown a"]);
    assert_eq!(
        states,
        [
            VmState::Planned,
            VmState::Saving,
            VmState::SaveFailed,
            VmState::ShutDown
        ]
    );
    let (_, note) = rig.said_of("a");
    assert!(
        note.starts_with("after a failed save: cannot save domain a"),
        "{note}"
    );
    assert!(!rig.fake.has_managed_save("a"));
}

#[test]
fn a_save_past_its_limit_is_aborted_and_the_vm_shut_down() {
    let mut rig = Rig::new(&[("a", true)]);
    rig.settings(|s| s.save_timeout = Duration::from_millis(300));
    rig.fake.add("a", RUNNING).fault("a", Fault::SaveHangs);
    let t = Instant::now();
    assert_eq!(rig.stop(), Placement::AllInPlace);
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert_eq!(rig.calls_on("a"), ["save a", "abort a", "shutdown a"]);
    assert_eq!(rig.state_of("a"), VmState::ShutDown);
}

#[test]
fn a_guest_that_ignores_its_shutdown_is_left_running_unless_destroy_is_asked() {
    let rig = Rig::new(&[("d", false)]);
    rig.fake
        .add("d", RUNNING)
        .fault("d", Fault::ShutdownIgnored);
    let states = rig.states_during("d", || rig.stop());
    assert_eq!(rig.calls_on("d"), ["shutdown d"]);
    // (Planned too, but only until its shutdown begins, before any call.)
    assert_eq!(states, [VmState::ShuttingDown, VmState::LeftRunning]);
    assert_eq!(missed(&rig.stop()), ["d (left-running)"]);
    assert_eq!(rig.fake.state("d"), Some(RUNNING));

    let mut rig = Rig::new(&[("d", false)]);
    rig.settings(|s| s.destroy_on_timeout = true);
    rig.fake
        .add("d", RUNNING)
        .fault("d", Fault::ShutdownIgnored);
    assert_eq!(rig.stop(), Placement::AllInPlace);
    assert_eq!(rig.calls_on("d"), ["shutdown d", "destroy d"]);
    assert_eq!(rig.state_of("d"), VmState::Destroyed);
}

#[test]
fn a_destroy_that_fails_leaves_the_vm_running_and_said() {
    let mut rig = Rig::new(&[("a", true)]);
    rig.settings(|s| s.destroy_on_timeout = true);
    rig.fake
        .add("a", RUNNING)
        .fault("a", Fault::SaveFails)
        .fault("a", Fault::ShutdownIgnored)
        .fault("a", Fault::DestroyFails);
    assert_eq!(missed(&rig.stop()), ["a (left-running)"]);
    assert_eq!(rig.calls_on("a"), ["save a", "shutdown a", "destroy a"]);
    assert_eq!(rig.fake.state("a"), Some(RUNNING));
}

/// libvirt said the save succeeded but left no image: the stop can only
/// believe it (no size to check later), and the next start cold-boots.
#[test]
fn a_lost_save_is_journaled_saved_and_the_vm_cold_booted_at_start() {
    let rig = Rig::new(&[("a", true)]);
    rig.fake.add("a", RUNNING).fault("a", Fault::SaveLost);
    assert_eq!(rig.stop(), Placement::AllInPlace);
    let j = rig.journal();
    assert_eq!(
        (j.vms["a"].state, j.vms["a"].image_size),
        (VmState::Saved, None)
    );
    assert_eq!(rig.start(), Placement::AllInPlace);
    assert_eq!(rig.state_of("a"), VmState::Booted);
    assert_eq!(rig.calls_on("a"), ["save a", "start a"]);
}

#[test]
fn an_interrupted_stop_finishes_the_saves_in_flight_and_begins_no_more() {
    let mut rig = Rig::new(&[("a", true), ("b", true), ("c", true)]);
    rig.settings(|s| s.parallel = 1);
    for vm in ["a", "b", "c"] {
        rig.fake
            .add(vm, RUNNING)
            .save_takes(vm, Duration::from_millis(300));
    }
    let interrupted = AtomicBool::new(false);
    let placement = std::thread::scope(|s| {
        let stop = s.spawn(|| rig.stop_until(&interrupted));
        let t = Instant::now();
        while rig.fake.most_saves_at_once() == 0 && t.elapsed() < Duration::from_secs(2) {
            std::thread::sleep(Duration::from_millis(5));
        }
        interrupted.store(true, Ordering::SeqCst);
        stop.join().unwrap()
    });
    assert_eq!(missed(&placement), ["b (not-saved)", "c (not-saved)"]);
    assert_eq!(rig.state_of("a"), VmState::Saved);
    let (state, note) = rig.said_of("b");
    assert_eq!(state, VmState::NotSaved);
    assert_eq!(note, "stop was interrupted before its save began");
    assert!(rig.calls_on("b").is_empty() && rig.calls_on("c").is_empty());
}

#[test]
fn workers_that_cannot_connect_leave_their_vms_said() {
    let rig = Rig::new(&[("a", true), ("d", false)]);
    rig.fake.add("a", RUNNING).add("d", RUNNING);
    // The monitor's connection opens; the worker's and the shutdown's not.
    rig.fake.refuse_connects_from(1);
    let placement = rig.stop();
    assert_eq!(missed(&placement), ["a (not-saved)", "d (shutting-down)"]);
    assert_eq!(rig.fake.state("a"), Some(RUNNING));
}

#[test]
fn no_libvirt_no_stop_and_no_journal() {
    let rig = Rig::new(&[("a", true)]);
    rig.fake.add("a", RUNNING).refuse_connects_from(0);
    let err = super::super::stop(&rig.svc, &rig.fake, &AtomicBool::new(false)).unwrap_err();
    assert_eq!(err.to_string(), "cannot connect to fake:///system");
    assert!(!rig.svc.journal_path().exists());
}

/// A stop killed mid-save leaves its journal saying `saving`, and libvirtd
/// finishing the save on its own; the next stop waits for that save and
/// does not begin a second one.
#[test]
fn the_stop_after_a_killed_one_waits_for_the_save_libvirtd_finishes() {
    let rig = Rig::new(&[("a", true)]);
    rig.killed_mid_save("a", Duration::from_millis(300));
    assert_eq!(rig.stop(), Placement::AllInPlace);
    assert!(rig.calls_on("a").is_empty(), "{:?}", rig.fake.said());
    assert_eq!(rig.state_of("a"), VmState::Saved);
    assert!(rig.image("a").exists());
}

/// VMs already off keep what the last run said of them (an image from an
/// interrupted stop), and this stop does not answer for them.
#[test]
fn vms_already_off_keep_their_journal_entry() {
    let rig = Rig::new(&[("a", true), ("b", true)]);
    let mut last = Journal::new("c0", Phase::Stopping);
    last.set("a", VmState::Saved, "1.0s");
    last.set("b", VmState::LeftRunning, "");
    for e in last.vms.values_mut() {
        e.was_running = true;
        e.image_size = Some(7);
    }
    last.save(&rig.svc.journal_path()).unwrap();
    rig.fake.add("a", OFF).add("b", OFF);
    assert_eq!(rig.stop(), Placement::AllInPlace);
    let j = rig.journal();
    assert_eq!(
        (j.vms["a"].state, j.vms["a"].image_size),
        (VmState::Saved, Some(7))
    );
    assert_eq!(j.vms["b"].state, VmState::LeftRunning);
    assert!(!j.vms["a"].was_running && !j.vms["b"].was_running);
}
