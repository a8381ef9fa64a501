//! Unit tests of [`super`] (sqlite), kept beside it so the module reads
//! on its own.

use super::schema::migrate;
use super::*;
use crate::cluster::tests::vm;

fn fresh() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(&dir.path().join("sub/k.db"), OpenMode::Create).unwrap();
    (dir, s)
}

#[test]
fn a_new_database_is_seeded_and_in_wal_mode() {
    let (_d, s) = fresh();
    let c = s.snapshot().unwrap();
    assert!(c.appliances.contains("vm-container"));
    assert_eq!(
        c.attrs[&Scope::Appliance("vm-container".into())]["kvm"],
        "true"
    );
    let mode: String = s
        .conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

/// Run by `events_survive_a_second_connection_in_the_hooks_process` in a
/// child process: opens the database as kvmroll's CLI does and closes it,
/// which checkpoints and deletes the WAL if it believes itself the last
/// connection.
#[test]
#[ignore = "a helper run in a child process"]
fn child_opens_and_closes() {
    if let Some(db) = std::env::var_os("KVMROLL_TEST_CHILD_DB") {
        let s = SqliteStore::open(Path::new(&db), OpenMode::ReadWrite).unwrap();
        s.snapshot().unwrap();
    }
}

/// Regression: opening a second connection must not drop the first
/// one's POSIX locks (closing any descriptor of the file does), or another
/// process deletes the WAL the first still writes its events to.
/// A successful `prepare begin` event of `vm` at `time_ms`.
fn ok_event(vm: &str, time_ms: i64) -> Event {
    Event {
        id: 0,
        time_ms,
        vm: vm.into(),
        stage: "allocate".into(),
        op: "prepare".into(),
        subop: "begin".into(),
        plugin: None,
        outcome: EventOutcome::Ok,
        status: None,
        duration_ms: 1,
        message: String::new(),
        container: None,
    }
}

#[test]
fn only_create_makes_a_database() {
    let d = tempfile::tempdir().unwrap();
    let db = d.path().join("sub/k.db");
    for mode in [
        OpenMode::ReadWriteFast,
        OpenMode::ReadOnly,
        OpenMode::ReadWrite,
    ] {
        let err = SqliteStore::open(&db, mode).unwrap_err();
        assert!(matches!(err, StoreError::Missing { .. }), "{mode:?}: {err}");
        assert!(err.to_string().contains("`kvmroll db init` creates it"));
        assert!(!d.path().join("sub").exists(), "{mode:?} made something");
    }
    SqliteStore::open(&db, OpenMode::Create).unwrap();
    assert!(db.exists());
    // Made whole in a temporary beside it, which is gone.
    let names: Vec<_> = std::fs::read_dir(d.path().join("sub"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| !n.starts_with("k.db"))
        .collect();
    assert!(names.is_empty(), "{names:?}");
}

const EVERY_MODE: [OpenMode; 4] = [
    OpenMode::Create,
    OpenMode::ReadWrite,
    OpenMode::ReadOnly,
    OpenMode::ReadWriteFast,
];

/// Regression: a database truncated to 0 bytes (its -wal and -shm gone)
/// was taken for a new one and rebuilt empty, by the hook at `prepare
/// begin` and by `kvmroll vm list`.
#[test]
fn an_empty_database_file_is_refused_and_left_empty() {
    let d = tempfile::tempdir().unwrap();
    let db = d.path().join("k.db");
    std::fs::write(&db, b"").unwrap();
    for mode in EVERY_MODE {
        let err = SqliteStore::open(&db, mode).unwrap_err();
        assert!(matches!(err, StoreError::Empty { .. }), "{mode:?}: {err}");
        assert_eq!(std::fs::metadata(&db).unwrap().len(), 0, "{mode:?}");
    }
    assert!(matches!(
        SqliteStore::init(&db),
        Err(StoreError::Empty { .. })
    ));
    assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    // A SQLite file holding nothing is no kvmroll database either.
    let bare = d.path().join("bare.db");
    Connection::open(&bare)
        .unwrap()
        .query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))
        .unwrap();
    assert!(matches!(
        SqliteStore::open(&bare, OpenMode::Create),
        Err(StoreError::Empty { .. })
    ));
}

/// Regression: `PRAGMA user_version = -1` made every open panic (index
/// out of bounds in migrate), the CLI's and the hook's alike.
#[test]
fn an_impossible_schema_version_is_refused_not_a_panic() {
    for version in [-1, 0, i64::from(i32::MIN)] {
        let (d, s) = fresh();
        drop(s);
        let db = d.path().join("sub/k.db");
        Connection::open(&db)
            .unwrap()
            .pragma_update(None, "user_version", version)
            .unwrap();
        for mode in EVERY_MODE {
            let err = SqliteStore::open(&db, mode).unwrap_err();
            assert!(
                matches!(err, StoreError::UnknownSchema { found, .. } if found == version),
                "{version} {mode:?}: {err}"
            );
        }
        // migrate itself never indexes its steps unchecked either.
        let conn = Connection::open(&db).unwrap();
        if version != 0 {
            assert!(matches!(
                migrate(&conn, &db, Duration::from_secs(1)),
                Err(StoreError::UnknownSchema { .. })
            ));
        }
    }
}

/// Regression: a failed upgrade printed the whole script of its step
/// (59 lines of CREATE TABLE), in the CLI and in the hook's refusal.
#[test]
fn a_failed_upgrade_is_one_line_naming_its_step() {
    let (d, s) = fresh();
    drop(s);
    let db = d.path().join("sub/k.db");
    // Schema 1 on paper, yet step 2's table is there: step 2 fails.
    Connection::open(&db)
        .unwrap()
        .pragma_update(None, "user_version", 1)
        .unwrap();
    let err = SqliteStore::open(&db, OpenMode::ReadWrite).unwrap_err();
    let said = crate::sys::error_chain(&err);
    assert!(
        matches!(err, StoreError::Upgrade { from: 1, to: 2, .. }),
        "{said}"
    );
    assert_eq!(said.lines().count(), 1, "{said}");
    assert!(said.contains("table events already exists"), "{said}");
    assert!(!said.contains("CREATE"), "{said}");
    // Nothing of the failed step stayed.
    let version: i64 = Connection::open(&db)
        .unwrap()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 1);
}

/// Step 4 on a database of schema 3 that holds a VM and events: they
/// stay, the VM at generation 0 (its definition carries none), the
/// events with no origin or container.
#[test]
fn schema_3_upgrades_to_origins_containers_and_generations() {
    let (d, mut s) = fresh();
    s.update(&mut |_| {
        Ok(vec![
            Change::AddHost(Host::new("c", "vm-container")),
            Change::AddVm(vm("v", "c", 1)),
        ])
    })
    .unwrap();
    s.record_events(&[ok_event("v", 1)]).unwrap();
    drop(s);
    let db = d.path().join("sub/k.db");
    Connection::open(&db)
        .unwrap()
        .execute_batch(
            "DROP INDEX events_origin;
             ALTER TABLE events DROP COLUMN origin;
             ALTER TABLE events DROP COLUMN container;
             ALTER TABLE vms DROP COLUMN generation;
             PRAGMA user_version = 3;",
        )
        .unwrap();
    let (mut s, init) = SqliteStore::init(&db).unwrap();
    assert_eq!(init, Init::Upgraded { from: 3 });
    assert_eq!(s.vm_brief("v").unwrap().unwrap().generation, 0);
    let old = s.events(&EventFilter::default()).unwrap();
    assert_eq!((old.len(), old[0].container.as_deref()), (1, None));
    let one = [Spooled {
        origin: "c/1.events#0".into(),
        event: ok_event("v", 2),
    }];
    assert_eq!(s.record_spooled(&one).unwrap(), 1);
    assert_eq!(s.record_spooled(&one).unwrap(), 0);
}

#[test]
fn init_says_whether_it_created_upgraded_or_found_the_database() {
    let d = tempfile::tempdir().unwrap();
    let db = d.path().join("k.db");
    assert_eq!(SqliteStore::init(&db).unwrap().1, Init::Created);
    assert_eq!(SqliteStore::init(&db).unwrap().1, Init::Current);
    // Back to schema 1: step 2 makes the events table, step 3 the disk
    // records, step 4 adds to the events and the VMs.
    let conn = Connection::open(&db).unwrap();
    conn.execute_batch(
        "DROP TABLE events; DROP TABLE made_images; DROP TABLE disk_grows;
         ALTER TABLE vms DROP COLUMN generation;
         PRAGMA user_version = 1;",
    )
    .unwrap();
    drop(conn);
    let (s, init) = SqliteStore::init(&db).unwrap();
    assert_eq!(init, Init::Upgraded { from: 1 });
    assert_eq!(s.status().unwrap().schema_version, SCHEMA_VERSION);
    let junk = d.path().join("junk");
    std::fs::write(&junk, vec![b'x'; 4096]).unwrap();
    assert!(matches!(
        SqliteStore::init(&junk),
        Err(StoreError::NotKvmroll { .. })
    ));
}

#[test]
fn many_first_writers_make_one_database() {
    let d = tempfile::tempdir().unwrap();
    let db = d.path().join("k.db");
    let inits: Vec<Init> = std::thread::scope(|scope| {
        let all: Vec<_> = (0..8)
            .map(|_| scope.spawn(|| SqliteStore::init(&db).map(|(_, i)| i)))
            .collect();
        all.into_iter()
            .map(|t| t.join().unwrap().unwrap())
            .collect()
    });
    assert_eq!(inits.iter().filter(|i| **i == Init::Created).count(), 1);
    assert!(inits
        .iter()
        .all(|i| matches!(i, Init::Created | Init::Current)));
}

/// A writer that holds the lock past the wait is said as such, with the
/// wait, not as a bare "database is locked".
#[test]
fn a_lock_held_past_the_wait_is_said_with_the_wait() {
    let (d, s) = fresh();
    drop(s);
    let db = d.path().join("sub/k.db");
    let mut hook = SqliteStore::open(&db, OpenMode::ReadWriteFast).unwrap();
    hook.wait = Duration::from_secs(1);
    hook.conn.busy_timeout(hook.wait).unwrap();
    let holder = Connection::open(&db).unwrap();
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();
    let err = hook.record_events(&[ok_event("v", 1)]).unwrap_err();
    assert!(matches!(err, StoreError::Busy { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("was locked by another writer for 1 s"),
        "{err}"
    );
}

#[test]
fn upkeep_empties_the_hooks_wal_and_keeps_every_event() {
    let (d, s) = fresh();
    drop(s);
    let db = d.path().join("sub/k.db");
    let mut hook = SqliteStore::open(&db, OpenMode::ReadWriteFast).unwrap();
    assert!(!hook.upkeep_due());
    for t in 0..40 {
        hook.record_events(&[ok_event("v", t)]).unwrap();
    }
    assert!(hook.upkeep_due(), "{} frames", hook.wal_frames());
    // The CLI's connections never ask for it: they checkpoint at close.
    assert!(!SqliteStore::open(&db, OpenMode::ReadWrite)
        .unwrap()
        .upkeep_due());
    hook.upkeep(Duration::from_secs(1)).unwrap();
    assert_eq!(hook.wal_frames(), 0);
    assert!(!hook.upkeep_due());
    drop(hook);
    let all = SqliteStore::open(&db, OpenMode::ReadOnly)
        .unwrap()
        .events(&EventFilter::default())
        .unwrap();
    assert_eq!(all.len(), 40);
}

#[test]
fn events_survive_a_second_connection_in_the_hooks_process() {
    let (dir, mut s) = fresh();
    let db = dir.path().join("sub/k.db");
    s.update(&mut |_| {
        Ok(vec![
            Change::AddHost(Host::new("c", "vm-container")),
            Change::AddVm(vm("v", "c", 1)),
        ])
    })
    .unwrap();
    drop(s);
    // A connection, then a second one in the same process.
    let mut hook = SqliteStore::open(&db, OpenMode::ReadWriteFast).unwrap();
    hook.vm_brief("v").unwrap();
    let second = SqliteStore::open(&db, OpenMode::ReadOnly).unwrap();
    second.snapshot().unwrap();
    drop(second);
    // Another process comes and goes.
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "sqlite::tests::child_opens_and_closes",
        ])
        .env("KVMROLL_TEST_CHILD_DB", &db)
        .output()
        .unwrap();
    // A filter that matched nothing would pass having run nothing.
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && said.contains("1 passed"), "{said}");
    hook.record_events(&[ok_event("v", 1)]).unwrap();
    drop(hook);
    let fresh = SqliteStore::open(&db, OpenMode::ReadOnly).unwrap();
    assert_eq!(
        fresh.events(&EventFilter::default()).unwrap().len(),
        1,
        "the event vanished"
    );
}

#[test]
fn read_only_refuses_writes() {
    let (dir, _s) = fresh();
    let mut ro = SqliteStore::open(&dir.path().join("sub/k.db"), OpenMode::ReadOnly).unwrap();
    assert!(matches!(
        ro.update(&mut |_| Ok(vec![])),
        Err(StoreError::ReadOnly)
    ));
    assert!(matches!(
        SqliteStore::open(&dir.path().join("none.db"), OpenMode::ReadOnly),
        Err(StoreError::Missing { .. })
    ));
}

#[test]
fn foreign_and_newer_files_are_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.db");
    std::fs::write(
        &junk,
        b"not a database at all, just text that is long enough to fill a header ......",
    )
    .unwrap();
    let bytes = std::fs::read(&junk).unwrap();
    assert!(matches!(
        SqliteStore::open(&junk, OpenMode::ReadWrite),
        Err(StoreError::NotKvmroll { .. })
    ));
    assert_eq!(std::fs::read(&junk).unwrap(), bytes);

    let other = dir.path().join("other.db");
    Connection::open(&other)
        .unwrap()
        .execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
        .unwrap();
    let bytes = std::fs::read(&other).unwrap();
    assert!(matches!(
        SqliteStore::open(&other, OpenMode::ReadWrite),
        Err(StoreError::NotKvmroll { .. })
    ));
    assert_eq!(std::fs::read(&other).unwrap(), bytes);

    let newer = dir.path().join("newer.db");
    drop(SqliteStore::open(&newer, OpenMode::Create).unwrap());
    Connection::open(&newer)
        .unwrap()
        .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .unwrap();
    assert!(matches!(
        SqliteStore::open(&newer, OpenMode::ReadWrite),
        Err(StoreError::NewerSchema { .. })
    ));
}
