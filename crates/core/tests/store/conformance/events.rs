//! Events: recorded at once, from the hooks in a burst, or from a spool exactly
//! once; filtered and pruned.

use crate::common::{event, one_line, Engine};
use kvmroll_core::events::{EventFilter, EventOutcome};
use kvmroll_core::{OpenMode, StoreError};

on_both_engines!(
    events_round_trip_filter_and_prune,
    sixty_four_hook_events_at_once_are_all_recorded,
    spooled_events_are_recorded_once_by_origin,
);

fn events_round_trip_filter_and_prune(e: &dyn Engine) {
    let mut s = e.init();
    let mut hook = e.open(OpenMode::ReadWriteFast).unwrap();
    let mut odd = event("w", 2);
    odd.plugin = None;
    odd.outcome = EventOutcome::PassThrough;
    odd.status = None;
    odd.message = String::new();
    hook.record_events(&[event("v", 1), odd.clone(), event("v", 3)])
        .unwrap();
    s.record_events(&(4..=10).map(|t| event("v", t)).collect::<Vec<_>>())
        .unwrap();
    let all = s.events(&EventFilter::default()).unwrap();
    assert_eq!(
        all.iter().map(|e| e.time_ms).collect::<Vec<_>>(),
        (1..=10).collect::<Vec<_>>()
    );
    assert!(all.windows(2).all(|w| w[0].id < w[1].id));
    let mut want = odd;
    want.id = all[1].id;
    assert_eq!(all[1], want);
    let mut first = event("v", 1);
    first.id = all[0].id;
    assert_eq!(all[0], first);
    // The newest N of one VM, oldest first.
    let newest = s
        .events(&EventFilter {
            vm: Some("v".into()),
            limit: Some(2),
            container: None,
        })
        .unwrap();
    assert_eq!(
        newest.iter().map(|e| e.time_ms).collect::<Vec<_>>(),
        vec![9, 10]
    );
    let w = s
        .events(&EventFilter {
            vm: Some("w".into()),
            limit: None,
            container: None,
        })
        .unwrap();
    assert_eq!(w.len(), 1);
    // Pruning: older than a time, then all but the newest N.
    let times = |s: &dyn kvmroll_core::Store| -> Vec<i64> {
        s.events(&EventFilter::default())
            .unwrap()
            .iter()
            .map(|e| e.time_ms)
            .collect()
    };
    assert_eq!(s.prune_events(Some(4), None).unwrap(), 3);
    assert_eq!(times(&*s), (4..=10).collect::<Vec<_>>());
    assert_eq!(s.prune_events(None, Some(2)).unwrap(), 5);
    assert_eq!(times(&*s), vec![9, 10]);
    assert_eq!(s.prune_events(Some(0), Some(100)).unwrap(), 0);
    assert_eq!(times(&*e.open(OpenMode::ReadOnly).unwrap()), vec![9, 10]);
}

fn sixty_four_hook_events_at_once_are_all_recorded(e: &dyn Engine) {
    const HOOKS: usize = 64;
    e.init();
    let barrier = std::sync::Barrier::new(HOOKS);
    std::thread::scope(|t| {
        for i in 0..HOOKS {
            let barrier = &barrier;
            t.spawn(move || {
                // Each its own connection, as each hook is its own process;
                // every thread reaches the barrier, even one that failed.
                let opened = e.open(OpenMode::ReadWriteFast);
                barrier.wait();
                let mut s = opened.unwrap_or_else(|err| panic!("hook {i}: {}", one_line(&err)));
                s.record_events(&[event(&format!("vm-{i}"), i as i64)])
                    .unwrap_or_else(|err| panic!("hook {i}: {}", one_line(&err)));
            });
        }
    });
    let all = e
        .open(OpenMode::ReadOnly)
        .unwrap()
        .events(&EventFilter::default())
        .unwrap();
    let mut vms: Vec<String> = all.into_iter().map(|e| e.vm).collect();
    vms.sort();
    let mut want: Vec<String> = (0..HOOKS).map(|i| format!("vm-{i}")).collect();
    want.sort();
    assert_eq!(vms, want);
}

/// A spool file handed over twice (its forwarder killed between the commit
/// and the unlink) adds its events once; events of another origin are
/// added, in order; the container filter picks them out; events recorded
/// at once (no origin) never conflict.
fn spooled_events_are_recorded_once_by_origin(e: &dyn Engine) {
    use kvmroll_core::spool::Spooled;
    let mut s = e.init();
    let mut hook = e.open(OpenMode::ReadWriteFast).unwrap();
    let spooled = |origin: &str, time_ms: i64, container: &str| {
        let mut ev = event("v", time_ms);
        ev.container = Some(container.into());
        Spooled {
            origin: origin.into(),
            event: ev,
        }
    };
    let file = [
        spooled("c0/1.events#0", 1, "c0"),
        spooled("c0/1.events#1", 2, "c0"),
    ];
    assert_eq!(hook.record_spooled(&file).unwrap(), 2);
    assert_eq!(s.record_spooled(&file).unwrap(), 0);
    let next = [
        spooled("c0/1.events#1", 2, "c0"),
        spooled("c1/2.events#0", 3, "c1"),
    ];
    assert_eq!(s.record_spooled(&next).unwrap(), 1);
    s.record_events(&[event("v", 4), event("v", 4)]).unwrap();
    let all = s.events(&EventFilter::default()).unwrap();
    assert_eq!(
        all.iter().map(|e| e.time_ms).collect::<Vec<_>>(),
        [1, 2, 3, 4, 4]
    );
    let on_c1 = s
        .events(&EventFilter {
            container: Some("c1".into()),
            ..EventFilter::default()
        })
        .unwrap();
    assert_eq!(on_c1.len(), 1);
    assert_eq!(on_c1[0].container.as_deref(), Some("c1"));
    let mut ro = e.open(OpenMode::ReadOnly).unwrap();
    assert!(matches!(
        ro.record_spooled(&file),
        Err(StoreError::ReadOnly)
    ));
}
