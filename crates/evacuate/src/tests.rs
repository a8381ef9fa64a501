//! The evacuation on a fake cluster: what it moves, how many at once, and
//! what it says of each VM.

use crate::fake::{vm, FakeCluster};
use crate::{evacuate, Options, Outcome, Probe, Report, SurveyError};
use kvmroll_core::{Change, Cluster, Host};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const GIB: u64 = 1 << 30;
const ASK: Duration = Duration::from_millis(300);

/// Containers a (8 CPUs) and b (`b_cpus`), c (4 CPUs) when `with_c`, and
/// 128 MiB one-vCPU VMs on a.
fn cluster(b_cpus: u32, with_c: bool, vms: &[&str]) -> Cluster {
    let mut hosts = vec![("a", 8), ("b", b_cpus)];
    if with_c {
        hosts.push(("c", 4));
    }
    let vms: Vec<_> = vms.iter().map(|n| vm(n, "a", 1, 128)).collect();
    crate::fake::cluster(&hosts, &vms)
}

fn opts(parallel: usize) -> Options {
    Options {
        parallel,
        limit: None,
        deadline: None,
        ask: ASK,
    }
}

/// Evacuates a; the report and the lines said as it went.
fn go(
    c: &Cluster,
    fake: &Arc<FakeCluster>,
    opts: &Options,
) -> (Result<Report, SurveyError>, Vec<String>) {
    let said = Mutex::new(Vec::new());
    let probe: Arc<dyn Probe> = fake.clone();
    let stop = AtomicBool::new(false);
    let r = evacuate(c, "a", &probe, fake.as_ref(), opts, &stop, &|o| {
        said.lock().unwrap().push(o.line());
    });
    (r, said.into_inner().unwrap())
}

#[test]
fn three_vms_with_room_all_move_and_each_is_said() {
    let c = cluster(4, false, &["v1", "v2", "v3"]);
    let fake = Arc::new(FakeCluster::new(
        &[("a", &["v1", "v2", "v3"])],
        &[("a", GIB), ("b", 8 * GIB)],
    ));
    let (r, said) = go(&c, &fake, &opts(2));
    let r = r.unwrap();
    assert!(r.all_moved(), "{:?}", r.outcomes);
    for vm in ["v1", "v2", "v3"] {
        assert_eq!(fake.where_is(vm).as_deref(), Some("b"), "{vm}");
        assert!(
            said.iter()
                .any(|l| l.starts_with(&format!("VM {vm} moved to b ("))),
            "{said:?}"
        );
    }
    assert_eq!(said.len(), 3);
}

#[test]
fn room_for_two_moves_two_and_says_why_the_third_stays() {
    let c = cluster(2, false, &["v1", "v2", "v3"]);
    let fake = Arc::new(FakeCluster::new(
        &[("a", &["v1", "v2", "v3"])],
        &[("a", GIB), ("b", 8 * GIB)],
    ));
    let (r, said) = go(&c, &fake, &opts(4));
    let r = r.unwrap();
    assert!(!r.all_moved());
    let stayed: Vec<&str> = r.not_moved().map(Outcome::vm).collect();
    assert_eq!(stayed, ["v3"]);
    assert_eq!(fake.where_is("v3").as_deref(), Some("a"));
    assert_eq!(fake.asked.lock().unwrap().len(), 2, "v3 was not even tried");
    assert!(
        said.contains(
            &"VM v3 not moved: no container has room (b: 0 CPU(s) free, 1 needed)".to_string()
        ),
        "{said:?}"
    );
}

#[test]
fn a_source_that_does_not_answer_is_one_error_and_nothing_moves() {
    let c = cluster(4, false, &["v1"]);
    for hang in [false, true] {
        let mut fake = FakeCluster::new(&[("a", &["v1"])], &[("b", GIB)]);
        if hang {
            fake.hanging.insert("a".into());
        } else {
            fake.failing.insert("a".into());
        }
        let fake = Arc::new(fake);
        let t = Instant::now();
        let (r, said) = go(&c, &fake, &opts(2));
        let e = r.unwrap_err().to_string();
        let expect = if hang {
            "container a does not answer: no answer within 0.3 s"
        } else {
            "container a does not answer: cannot connect to a"
        };
        assert_eq!(e, expect);
        assert!(said.is_empty() && fake.asked.lock().unwrap().is_empty());
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    }
}

#[test]
fn a_destination_that_does_not_answer_is_passed_over() {
    let c = cluster(4, true, &["v1", "v2"]);
    let mut fake = FakeCluster::new(&[("a", &["v1", "v2"])], &[("b", GIB), ("c", GIB)]);
    fake.hanging.insert("b".into());
    let fake = Arc::new(fake);
    let (r, _) = go(&c, &fake, &opts(2));
    let r = r.unwrap();
    assert!(r.all_moved());
    assert_eq!(fake.where_is("v1").as_deref(), Some("c"));
    assert_eq!(fake.where_is("v2").as_deref(), Some("c"));
    assert_eq!(
        r.silent,
        [("b".to_string(), "no answer within 0.3 s".to_string())]
    );
}

#[test]
fn only_the_databases_running_vms_of_the_source_move() {
    // v2 is off; "hand" runs on a but is not kvmroll's.
    let c = cluster(4, false, &["v1", "v2"]);
    let fake = Arc::new(FakeCluster::new(&[("a", &["v1", "hand"])], &[("b", GIB)]));
    let (r, _) = go(&c, &fake, &opts(2));
    let r = r.unwrap();
    let vms: Vec<&str> = r.outcomes.iter().map(Outcome::vm).collect();
    assert_eq!(vms, ["v1"]);
    assert_eq!(fake.where_is("hand").as_deref(), Some("a"));
}

#[test]
fn a_failed_migration_is_said_with_its_reason_and_the_others_go_on() {
    let c = cluster(4, false, &["v1", "v2"]);
    let mut fake = FakeCluster::new(&[("a", &["v1", "v2"])], &[("b", GIB)]);
    fake.refuse
        .insert("v1".into(), "allocate plugin refused: no licence".into());
    let fake = Arc::new(fake);
    let (r, said) = go(&c, &fake, &opts(1));
    assert!(said.contains(
        &"VM v1 not moved: migration to b failed: allocate plugin refused: no licence".to_string()
    ));
    assert_eq!(fake.where_is("v2").as_deref(), Some("b"));
    assert!(!r.unwrap().all_moved());
}

#[test]
fn parallel_migrations_run_at_once_and_no_more() {
    let names = ["v1", "v2", "v3", "v4", "v5"];
    let c = cluster(8, false, &names);
    let mut fake = FakeCluster::new(&[("a", &names)], &[("b", 8 * GIB)]);
    fake.delay = Duration::from_millis(200);
    let fake = Arc::new(fake);
    let t = Instant::now();
    let (r, _) = go(&c, &fake, &opts(2));
    assert!(r.unwrap().all_moved());
    assert_eq!(fake.most.load(std::sync::atomic::Ordering::SeqCst), 2);
    // Three rounds of 200 ms, not five.
    assert!(
        t.elapsed() < Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );
}

#[test]
fn migrations_are_limited_by_the_deadline_and_none_begins_too_close_to_it() {
    let c = cluster(4, false, &["v1", "v2"]);
    let fake = Arc::new(FakeCluster::new(&[("a", &["v1", "v2"])], &[("b", GIB)]));
    let o = Options {
        deadline: Some(Instant::now() + Duration::from_secs(60)),
        ..opts(2)
    };
    let (r, _) = go(&c, &fake, &o);
    assert!(r.unwrap().all_moved());
    for (vm, _, limit) in fake.asked.lock().unwrap().iter() {
        assert!(*limit <= Duration::from_secs(60), "{vm}: {limit:?}");
        assert!(*limit > Duration::from_secs(50), "{vm}: {limit:?}");
    }
    let fake = Arc::new(FakeCluster::new(&[("a", &["v1"])], &[("b", GIB)]));
    let o = Options {
        deadline: Some(Instant::now() + Duration::from_secs(1)),
        ..opts(2)
    };
    let (r, said) = go(&c, &fake, &o);
    assert!(!r.unwrap().all_moved());
    assert!(fake.asked.lock().unwrap().is_empty());
    assert!(
        said[0].starts_with("VM v1 not moved: no time left for its migration to b"),
        "{said:?}"
    );
}

#[test]
fn an_interrupted_evacuation_begins_no_migration() {
    let c = cluster(4, false, &["v1"]);
    let fake = Arc::new(FakeCluster::new(&[("a", &["v1"])], &[("b", GIB)]));
    let probe: Arc<dyn Probe> = fake.clone();
    let stop = AtomicBool::new(true);
    let r = evacuate(&c, "a", &probe, fake.as_ref(), &opts(2), &stop, &|_| {}).unwrap();
    assert_eq!(
        r.outcomes,
        [Outcome::NotMoved {
            vm: "v1".into(),
            why: "interrupted before its migration began".into()
        }]
    );
    assert!(fake.asked.lock().unwrap().is_empty());
}

#[test]
fn a_host_that_is_not_a_container_is_refused() {
    let mut c = cluster(4, false, &["v1"]);
    c.apply(&Change::AddHost(Host::new("login", "compute")))
        .unwrap();
    let fake = Arc::new(FakeCluster::new(&[], &[]));
    let probe: Arc<dyn Probe> = fake.clone();
    for host in ["login", "v1", "nowhere"] {
        let e = evacuate(
            &c,
            host,
            &probe,
            fake.as_ref(),
            &opts(1),
            &AtomicBool::new(false),
            &|_| {},
        )
        .unwrap_err();
        assert_eq!(e.to_string(), format!("{host} is not a VM container"));
    }
}

#[test]
fn each_vm_migrates_within_its_own_kvm_migrate_timeout_unless_one_is_given() {
    let mut c = cluster(4, false, &["v1", "v2"]);
    c.apply(&Change::SetAttr {
        scope: kvmroll_core::Scope::Host("v1".into()),
        name: "kvm_migrate_timeout".into(),
        value: "45".into(),
    })
    .unwrap();
    let limits = |o: &Options| {
        let fake = Arc::new(FakeCluster::new(&[("a", &["v1", "v2"])], &[("b", GIB)]));
        let (r, _) = go(&c, &fake, o);
        assert!(r.unwrap().all_moved());
        let mut asked: Vec<(String, Duration)> = fake
            .asked
            .lock()
            .unwrap()
            .iter()
            .map(|(vm, _, limit)| (vm.clone(), *limit))
            .collect();
        asked.sort();
        asked
    };
    let secs = |s| Duration::from_secs(s);
    assert_eq!(
        limits(&opts(2)),
        [("v1".into(), secs(45)), ("v2".into(), secs(600))]
    );
    let given = Options {
        limit: Some(secs(20)),
        ..opts(2)
    };
    assert_eq!(
        limits(&given),
        [("v1".into(), secs(20)), ("v2".into(), secs(20))]
    );
}
