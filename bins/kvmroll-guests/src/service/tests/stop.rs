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
    rig.parallel(1);
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
    rig.parallel(2);
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
            // (save-failed too, but only until the fallback takes it, before
            // the next call.)
            VmState::ShuttingDown,
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

/// libvirt said the save succeeded but left no image: the stop says so
/// (`save-lost`, a VM it missed) rather than `saved`, and the next start
/// cold-boots it.
#[test]
fn a_save_that_left_no_image_is_journaled_save_lost_not_saved() {
    let rig = Rig::new(&[("a", true)]);
    rig.fake.add("a", RUNNING).fault("a", Fault::SaveLost);
    assert_eq!(missed(&rig.stop()), ["a (save-lost)"]);
    let (state, note) = rig.said_of("a");
    assert_eq!(state, VmState::SaveLost);
    assert!(note.contains("left no image"), "{note}");
    assert_eq!(rig.start(), Placement::AllInPlace);
    assert_eq!(rig.state_of("a"), VmState::Booted);
    assert_eq!(rig.calls_on("a"), ["save a", "start a"]);
}

#[test]
fn an_interrupted_stop_finishes_the_saves_in_flight_and_begins_no_more() {
    let mut rig = Rig::new(&[("a", true), ("b", true), ("c", true)]);
    rig.parallel(1);
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
    assert_eq!(missed(&placement), ["a (not-saved)", "d (left-running)"]);
    assert_eq!(rig.fake.state("a"), Some(RUNNING));
}

#[test]
fn no_libvirt_no_stop_and_no_journal() {
    let rig = Rig::new(&[("a", true)]);
    rig.fake.add("a", RUNNING).refuse_connects_from(0);
    let err = super::super::stop(
        &rig.svc,
        &rig.fake,
        &AtomicBool::new(false),
        &Notifier::default(),
        None,
    )
    .unwrap_err();
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

/// Eight VMs, two at once, in a budget with room for two rounds: the first
/// four (listing order) are saved, the other four are shut down from the
/// start, beside the saves, and the journal says which and why.
#[test]
fn a_budget_too_small_for_all_saves_what_fits_and_shuts_the_rest_down_at_once() {
    let names = ["a", "b", "c", "d", "e", "f", "g", "h"];
    let mut rig = Rig::new(&names.map(|n| (n, true)));
    // 4.3 s less 0.3 s kept for shutdowns: two rounds of 2 s (the save limit).
    rig.parallel(2)
        .settings(|s| s.stop_budget = Duration::from_millis(4300));
    for vm in names {
        rig.fake
            .add(vm, RUNNING)
            .save_takes(vm, Duration::from_millis(100));
    }
    assert_eq!(rig.stop(), Placement::AllInPlace);
    for vm in ["a", "b", "c", "d"] {
        assert_eq!(rig.said_of(vm), (VmState::Saved, rig.said_of(vm).1));
        assert!(rig.fake.has_managed_save(vm));
    }
    for vm in ["e", "f", "g", "h"] {
        assert_eq!(
            rig.said_of(vm),
            (
                VmState::ShutDown,
                "no room for its save in the stop budget of 4.3s".into()
            )
        );
        assert_eq!(rig.calls_on(vm), [format!("shutdown {vm}")]);
    }
    // Early: the fallbacks began before the second round of saves.
    let said = rig.fake.said();
    let at = |c: &str| said.iter().position(|s| s == c).unwrap();
    assert!(at("shutdown e") < at("save c"), "{said:?}");
}

#[test]
fn each_vm_is_planned_its_share_of_the_budget_before_its_save() {
    let names = ["a", "b", "c", "d"];
    let mut rig = Rig::new(&names.map(|n| (n, true)));
    rig.parallel(2).settings(|s| {
        s.stop_budget = Duration::from_millis(24_300);
        s.save_timeout = Duration::from_secs(60);
    });
    for vm in names {
        rig.fake.add(vm, RUNNING);
    }
    let notes: Arc<Mutex<Vec<String>>> = Arc::default();
    let (path, into) = (rig.svc.journal_path(), notes.clone());
    rig.fake.on_call(move |_| {
        if let Some(j) = Journal::load(&path).ok().flatten() {
            if j.vms["d"].state == VmState::Planned {
                into.lock().unwrap().push(j.vms["d"].note.clone());
            }
        }
    });
    rig.stop();
    // 24.3 s less 0.3 s, two rounds: 12 s each, under the 60 s save limit.
    assert_eq!(notes.lock().unwrap().first().unwrap(), "save within 12.0s");
    assert_eq!(rig.state_of("d"), VmState::Saved);
}

/// A save that hangs is cut at its share of the budget, not at its own
/// (longer) save limit, and the whole stop ends within the budget.
#[test]
fn a_hanging_save_is_cut_at_its_share_and_the_stop_ends_within_the_budget() {
    let names = ["a", "b", "c", "d"];
    let mut rig = Rig::new(&names.map(|n| (n, true)));
    rig.parallel(2).settings(|s| {
        s.stop_budget = Duration::from_millis(2300);
        s.save_timeout = Duration::from_secs(1);
        s.destroy_on_timeout = true;
    });
    for vm in names {
        rig.fake.add(vm, RUNNING);
    }
    rig.fake
        .fault("a", Fault::SaveHangs)
        .fault("a", Fault::ShutdownIgnored);
    let t = Instant::now();
    assert_eq!(rig.stop(), Placement::AllInPlace);
    let took = t.elapsed();
    assert!(took < Duration::from_millis(2300 + 300), "{took:?}");
    assert!(
        took >= Duration::from_secs(1),
        "a's share was 1 s: {took:?}"
    );
    assert_eq!(
        rig.calls_on("a"),
        ["save a", "abort a", "shutdown a", "destroy a"]
    );
    assert_eq!(rig.state_of("a"), VmState::Destroyed);
    for vm in ["b", "c", "d"] {
        assert_eq!(rig.state_of(vm), VmState::Saved);
    }
}

/// What is left of the budget, not the plan alone: a save whose turn comes
/// after the cutoff (the saves before it ran long) is not begun.
#[test]
fn a_save_whose_turn_comes_too_late_gets_its_fallback_instead() {
    let mut rig = Rig::new(&[("a", true), ("b", true)]);
    // One at a time, two rounds of 1 s in 2.3 s less 0.3 s.
    rig.parallel(1).settings(|s| {
        s.stop_budget = Duration::from_millis(2300);
        s.save_timeout = Duration::from_secs(1);
    });
    rig.fake.add("a", RUNNING).add("b", RUNNING);
    // a's save outlives its abort (stuck in I/O): it fails after 1.5 s.
    rig.fake
        .fault("a", Fault::SaveFails)
        .fault("a", Fault::AbortIgnored)
        .save_takes("a", Duration::from_millis(1500));
    assert_eq!(rig.stop(), Placement::AllInPlace);
    assert!(rig.calls_on("b").iter().all(|c| !c.starts_with("save")));
    assert_eq!(
        rig.said_of("b"),
        (
            VmState::ShutDown,
            "no time left for its save in the stop budget".into()
        )
    );
}

/// With a notification socket of its own (as systemd's NOTIFY_SOCKET), a
/// long stop is heard extending its limit while it goes, and no extension
/// reaches past the stop's budget.
#[test]
fn systemd_hears_extend_timeout_usec_during_a_long_stop_never_past_the_budget() {
    use std::os::unix::net::UnixDatagram;
    let names = ["a", "b", "c", "d"];
    let mut rig = Rig::new(&names.map(|n| (n, true)));
    let budget = Duration::from_millis(3300);
    rig.parallel(2).settings(|s| {
        s.stop_budget = budget;
        s.save_timeout = Duration::from_millis(1500);
        s.destroy_on_timeout = true;
    });
    for vm in names {
        rig.fake
            .add(vm, RUNNING)
            .save_takes(vm, Duration::from_millis(600));
    }
    // d hangs until cut at its share (1.5 s), then ignores its shutdown.
    rig.fake
        .fault("d", Fault::SaveHangs)
        .fault("d", Fault::ShutdownIgnored);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let notifier = Notifier::from_var(Some(path.as_os_str()));
    let done = AtomicBool::new(false);
    let t0 = Instant::now();
    let heard = std::thread::scope(|s| {
        let listener = s.spawn(|| {
            let mut heard = Vec::new();
            let mut buf = [0u8; 256];
            while !done.load(Ordering::SeqCst) {
                if let Ok(n) = sock.recv(&mut buf) {
                    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                    heard.push((Instant::now(), text));
                }
            }
            heard
        });
        rig.stop_telling(&AtomicBool::new(false), &notifier);
        done.store(true, Ordering::SeqCst);
        listener.join().unwrap()
    });
    let ended = t0.elapsed();
    assert!(
        ended > Duration::from_millis(1500),
        "a long stop: {ended:?}"
    );
    let extensions: Vec<(Instant, Duration)> = heard
        .iter()
        .map(|(t, m)| {
            let usec = m
                .strip_prefix("EXTEND_TIMEOUT_USEC=")
                .unwrap_or_else(|| panic!("{m:?}"));
            (*t, Duration::from_micros(usec.parse().unwrap()))
        })
        .collect();
    // Heard all along: at the start, and still in the last half second.
    assert!(extensions.len() >= 5, "{heard:?}");
    assert!(extensions[0].0 - t0 < Duration::from_millis(300));
    let last = extensions.last().unwrap().0 - t0;
    assert!(
        last + Duration::from_millis(600) > ended,
        "{last:?} {ended:?}"
    );
    for (t, by) in &extensions {
        assert!(
            *t + *by <= t0 + budget + Duration::from_millis(100),
            "an extension to {:?} past the budget",
            (*t + *by) - t0
        );
    }
}
