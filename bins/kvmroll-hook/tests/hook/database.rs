//! A VM the database does not know, and databases that are missing,
//! corrupt, of an impossible schema, or held by another writer.

use crate::fixture::*;

#[test]
fn unknown_vm_passes_every_event_through() {
    let fx = Fx::new();
    fx.plugin(
        "plugins/allocate.d",
        "10-marker",
        &format!("touch {}", fx.marker("ran").display()),
    );
    for (op, subop) in [
        ("prepare", "begin"),
        ("start", "begin"),
        ("started", "begin"),
        ("restore", "begin"),
        ("stopped", "end"),
        ("release", "end"),
        ("reconnect", "begin"),
        ("no-such-op", "whatever"),
    ] {
        let out = fx.hook("stranger", op, subop, STRANGER);
        assert_eq!(out.status.code(), Some(0), "{op} {subop}: {}", stderr(&out));
        assert!(
            out.stdout.is_empty() && out.stderr.is_empty(),
            "{op} {subop}"
        );
    }
    assert!(!fx.marker("ran").exists(), "a plugin ran for an unknown VM");
    let events = fx.events("stranger");
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].outcome.as_str(), "pass-through");
    // A VM may be called "install": its events are events, not the
    // subcommand.
    let out = fx.hook(
        "install",
        "prepare",
        "begin",
        "<domain type='kvm'><name>install</name></domain>",
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(fx.events("install").len(), 1, "no pass-through recorded");
}

#[test]
fn a_missing_database_means_unknown_and_is_not_created() {
    let fx = Fx::new();
    std::fs::remove_file(fx.db()).unwrap();
    let out = fx.hook(VM, "prepare", "begin", STRANGER);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!fx.db().exists());
}

#[test]
fn a_corrupt_database_refuses_a_start_and_the_stop_side_still_runs() {
    let fx = Fx::new();
    fx.plugin(
        &format!("vms/{VM}/shutdown.d"),
        "10-release",
        &format!("touch {}", fx.marker("released").display()),
    );
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", fx.db().display()));
    }
    std::fs::write(fx.db(), vec![b'#'; 8192]).unwrap();
    let xml = "<domain type='kvm'><name>hosted-vm-0-0-0</name></domain>";
    let out = fx.hook(VM, "prepare", "begin", xml);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("is not a kvmroll database"), "{err}");
    let out = fx.hook(VM, "release", "end", xml);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        fx.marker("released").exists(),
        "the shutdown plugin did not run"
    );
}

/// Replaces the database with `bytes`, its -wal and -shm gone.
pub fn replace_db(fx: &Fx, bytes: &[u8]) {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", fx.db().display()));
    }
    std::fs::write(fx.db(), bytes).unwrap();
}

/// Runs `prepare begin` and `release end` of the VM over a database that
/// cannot be used: the start is refused with one line holding `expect`, and
/// the shutdown plugin still runs. Returns the refusal.
pub fn refuses_start_and_releases(fx: &Fx, expect: &str) -> String {
    fx.plugin(
        &format!("vms/{VM}/shutdown.d"),
        "10-release",
        &format!("touch {}", fx.marker("released").display()),
    );
    let xml = "<domain type='kvm'><name>hosted-vm-0-0-0</name></domain>";
    let out = fx.hook(VM, "prepare", "begin", xml);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains(expect), "{err:?} lacks {expect:?}");
    let out = fx.hook(VM, "release", "end", xml);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        fx.marker("released").exists(),
        "the shutdown plugin did not run"
    );
    err
}

/// Regression: over a database truncated to 0 bytes, `prepare begin`
/// rebuilt an empty schema, recorded a pass-through, and skipped the
/// allocate plugin that refuses this start.
#[test]
fn an_empty_database_file_refuses_a_start_and_is_left_empty() {
    let fx = Fx::new();
    fx.plugin(
        &format!("vms/{VM}/allocate.d"),
        "10-no",
        "echo no room for it >&2; exit 1",
    );
    replace_db(&fx, b"");
    refuses_start_and_releases(&fx, "is empty, not a kvmroll database");
    assert_eq!(std::fs::metadata(fx.db()).unwrap().len(), 0);
}

/// Regression: `PRAGMA user_version=-1` made the hook abort at every event,
/// the stop side included.
#[test]
fn an_impossible_schema_version_refuses_a_start_and_is_no_abort() {
    let fx = Fx::new();
    rusqlite::Connection::open(fx.db())
        .unwrap()
        .pragma_update(None, "user_version", -1)
        .unwrap();
    refuses_start_and_releases(&fx, "schema version -1 is one no kvmroll writes");
}

/// Regression: a failed schema upgrade made the hook's refusal the whole
/// CREATE TABLE script of the step.
#[test]
fn a_failed_upgrade_refuses_a_start_in_one_line() {
    let fx = Fx::new();
    // Schema 1 on paper while step 2's table is there: step 2 fails.
    rusqlite::Connection::open(fx.db())
        .unwrap()
        .pragma_update(None, "user_version", 1)
        .unwrap();
    let err = refuses_start_and_releases(&fx, "upgrading the schema from version 1 to 2 failed");
    assert!(!err.contains("CREATE"), "{err}");
}

/// Another writer holding the database (a long `kvmroll` change, a
/// migration) delays no VM event: the hook only reads it where it reads it
/// at all, and its events go to the spool, reaching the database once the
/// writer is done. (Before the spool, a start was refused after a 10 s
/// wait, so as not to go unrecorded.)
#[test]
fn a_database_locked_by_another_writer_delays_no_start() {
    let fx = Fx::new();
    fx.plugin(
        &format!("vms/{VM}/allocate.d"),
        "10-marker",
        &format!("touch {}", fx.marker("ran").display()),
    );
    let holder = rusqlite::Connection::open(fx.db()).unwrap();
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();
    let started = std::time::Instant::now();
    for xml in [fx.xml(), strip_metadata(&fx.xml())] {
        let out = fx.hook(VM, "prepare", "begin", &xml);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert!(fx.marker("ran").exists());
    assert_eq!(std::fs::read_dir(fx.spool()).unwrap().count(), 2);
    drop(holder);
    let ok: Vec<_> = fx
        .events(VM)
        .into_iter()
        .filter(|e| e.plugin.is_none() && e.outcome.as_str() == "ok")
        .collect();
    assert_eq!(ok.len(), 2, "{ok:?}");
}
