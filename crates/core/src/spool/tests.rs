//! Unit tests of [`super`] (spool), kept beside it so the module reads
//! on its own.

use super::*;
use crate::events::EventOutcome;

fn event(vm: &str, n: i64) -> Event {
    Event {
        id: 0,
        time_ms: n,
        vm: vm.into(),
        stage: "allocate".into(),
        op: "prepare".into(),
        subop: "begin".into(),
        plugin: None,
        outcome: EventOutcome::Ok,
        status: Some(0),
        duration_ms: 1,
        message: "a \"quoted\"\nline".into(),
        container: Some("c".into()),
    }
}

#[test]
fn events_come_back_in_order_with_origins_and_files_go() {
    let t = tempfile::tempdir().unwrap();
    let spool = Spool::new(t.path().join("spool"), "vm-container-0-0");
    spool.write(&[event("a", 1), event("a", 2)]).unwrap();
    spool.write(&[event("b", 3)]).unwrap();
    let mut got = Vec::new();
    let done = spool
        .forward(&mut |s| {
            got.extend(s.iter().cloned());
            Ok(())
        })
        .unwrap();
    assert_eq!((done.files, done.events, done.left), (2, 3, 0));
    let times: Vec<i64> = got.iter().map(|s| s.event.time_ms).collect();
    assert_eq!(times, [1, 2, 3]);
    assert_eq!(got[0].event, event("a", 1));
    assert!(got[1].origin.starts_with("vm-container-0-0/") && got[1].origin.ends_with("#1"));
    assert!(spool.pending().unwrap().is_empty());
    // The folder is root's alone.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(spool.dir()).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
}

#[test]
fn a_refusing_database_keeps_the_files_and_stops_the_round() {
    let t = tempfile::tempdir().unwrap();
    let spool = Spool::new(t.path(), "c");
    for n in 0..3 {
        spool.write(&[event("a", n)]).unwrap();
    }
    let done = spool
        .forward(&mut |_| Err("database unreachable".into()))
        .unwrap();
    assert_eq!((done.files, done.left), (0, 3));
    assert_eq!(spool.pending().unwrap().len(), 3);
    // Delivered twice (a kill between commit and unlink): same origins.
    let first: Vec<String> = {
        let mut o = Vec::new();
        spool
            .forward(&mut |s| {
                o.extend(s.iter().map(|s| s.origin.clone()));
                Err("again".into())
            })
            .unwrap();
        o
    };
    let mut second = Vec::new();
    spool
        .forward(&mut |s| {
            second.extend(s.iter().map(|s| s.origin.clone()));
            Ok(())
        })
        .unwrap();
    assert_eq!(first[0], second[0]);
}

/// A burst of events is one transaction (one commit and one sync of
/// the database), not one per hook call; a spool larger than a batch
/// goes in several, in order, and a refused batch leaves its files and
/// those after it.
#[test]
fn spool_files_go_to_the_database_in_batches() {
    let t = tempfile::tempdir().unwrap();
    let spool = Spool::new(t.path(), "c");
    let n = 2 * BATCH + 1;
    for i in 0..n {
        spool.write(&[event("a", i as i64)]).unwrap();
    }
    let mut calls = Vec::new();
    let done = spool
        .forward(&mut |s| {
            calls.push(s.len());
            if calls.len() == 2 {
                return Err("gone".into());
            }
            Ok(())
        })
        .unwrap();
    assert_eq!(calls, [BATCH, BATCH]);
    assert_eq!((done.files, done.left), (BATCH, BATCH + 1));
    let mut times = Vec::new();
    let done = spool
        .forward(&mut |s| {
            times.extend(s.iter().map(|s| s.event.time_ms));
            Ok(())
        })
        .unwrap();
    assert_eq!(
        (done.files, done.events, done.left),
        (BATCH + 1, BATCH + 1, 0)
    );
    assert_eq!(times, (BATCH as i64..n as i64).collect::<Vec<_>>());
}

#[test]
fn torn_files_are_set_aside_and_temporaries_ignored() {
    let t = tempfile::tempdir().unwrap();
    let spool = Spool::new(t.path(), "c");
    spool.write(&[event("a", 1)]).unwrap();
    std::fs::write(
        t.path().join("000000000000000000000001-0000000001.events"),
        "",
    )
    .unwrap();
    std::fs::write(
        t.path().join("000000000000000000000002-0000000001.events"),
        "{\"id\":0,\"time",
    )
    .unwrap();
    std::fs::write(t.path().join(".000000000000000000000003-1.events"), "half").unwrap();
    let mut n = 0;
    let done = spool
        .forward(&mut |s| {
            n += s.len();
            Ok(())
        })
        .unwrap();
    assert_eq!((done.files, done.bad, n), (1, 2, 1));
    assert_eq!(std::fs::read_dir(t.path().join("bad")).unwrap().count(), 2);
}

/// The store is opened once for all files; one that cannot be opened
/// leaves every file for the next round, which opens it afresh; the
/// database then holds each event once.
#[test]
fn forwarding_to_a_store_keeps_files_until_it_answers() {
    use crate::sqlite::SqliteStore;
    use crate::store::OpenMode;
    let t = tempfile::tempdir().unwrap();
    let db = t.path().join("k.db");
    let spool = Spool::new(t.path().join("spool"), "c");
    for n in 0..3 {
        spool.write(&[event("a", n), event("a", n + 10)]).unwrap();
    }
    let held = spool.lock().unwrap().unwrap();
    assert!(spool.busy());
    let mut store = None;
    let mut opens = 0;
    let mut open = || -> Result<Box<dyn Store>, StoreError> {
        opens += 1;
        Ok(Box::new(SqliteStore::open(&db, OpenMode::ReadWrite)?))
    };
    let done = spool.forward_to(&held, &mut store, &mut open).unwrap();
    assert_eq!((done.files, done.left), (0, 3));
    assert!(done.waiting.unwrap().contains("does not exist"));
    drop(SqliteStore::open(&db, OpenMode::Create).unwrap());
    let done = spool.forward_to(&held, &mut store, &mut open).unwrap();
    assert_eq!((done.files, done.events, done.left), (3, 6, 0));
    assert_eq!(opens, 2);
    drop(held);
    assert!(!spool.busy());
    let times: Vec<i64> = SqliteStore::open(&db, OpenMode::ReadOnly)
        .unwrap()
        .events(&crate::EventFilter::default())
        .unwrap()
        .iter()
        .map(|e| e.time_ms)
        .collect();
    assert_eq!(times, [0, 10, 1, 11, 2, 12]);
}

#[test]
fn a_second_forwarder_waits_for_the_first() {
    let t = tempfile::tempdir().unwrap();
    let spool = Spool::new(t.path(), "c");
    spool.write(&[event("a", 1)]).unwrap();
    let held = spool.lock().unwrap().expect("free");
    let done = spool.forward(&mut |_| Ok(())).unwrap();
    assert!(done.busy);
    drop(held);
    assert_eq!(spool.forward(&mut |_| Ok(())).unwrap().files, 1);
}
