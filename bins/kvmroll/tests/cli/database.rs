//! The database itself: where it is, what makes one, init, status, upgrades,
//! and files that are not kvmroll databases.

use std::process::{Command, Output};

use crate::common::*;
use crate::fixture::*;

on_both_engines!(
    a_newer_database_is_refused_untouched,
    read_only_mode_refuses_every_write,
    an_impossible_schema_version_is_one_line_not_an_abort,
    a_failed_upgrade_is_one_line,
    db_status_shows_engine_location_schema_and_counts,
    the_database_is_the_flag_then_kvmroll_db_then_kvmroll_conf,
);

#[test]
fn a_foreign_file_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, vec![b'x'; 4096]).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kvmroll"))
        .arg("--db")
        .arg(&junk)
        .args(["host", "list"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        err.trim(),
        format!("kvmroll: {} is not a kvmroll database", junk.display())
    );
    assert_eq!(std::fs::read(&junk).unwrap(), vec![b'x'; 4096]);
}

fn a_newer_database_is_refused_untouched(e: Engine) {
    let f = Fixture::on(e);
    f.set_schema_version(99);
    f.refused(
        &["host", "list"],
        "has schema version 99, newer than this kvmroll knows",
    );
    f.refused(&["host", "add", "x"], "newer than this kvmroll knows");
}

fn read_only_mode_refuses_every_write(e: Engine) {
    let f = Fixture::on(e);
    let before = f.state();
    let out = f
        .cmd()
        .env("KVMROLL_DB_READONLY", "1")
        .args(["attr", "set", "hosted-vm-0-0-0", "x", "y"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("open read-only"));
    assert!(f.state() == before);
    let out = f
        .cmd()
        .env("KVMROLL_DB_READONLY", "1")
        .args(["vm", "list"])
        .output()
        .unwrap();
    assert!(out.status.success());
}

#[test]
fn db_path_from_environment_and_folder_created_by_a_first_write() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("deep/er/k.db");
    let kvmroll = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_kvmroll"))
            .env("KVMROLL_DB", &db)
            .env_remove("KVMROLL_DB_READONLY")
            .args(args)
            .output()
            .unwrap()
    };
    let out = kvmroll(&["appliance", "add", "login"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = kvmroll(&["appliance", "list", "--no-header"]);
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "compute\nfrontend\nhosted-vm\nlogin\nvm-container\n"
    );
}

/// Regression: `kvmroll --db /tmp/typo/x.db host list` made /tmp/typo/x.db
/// (and its folder) and printed an empty cluster. Reads, and writes that
/// need something to exist, make nothing.
#[test]
fn a_read_never_makes_a_database_or_a_folder() {
    let dir = tempfile::tempdir().unwrap();
    let typo = dir.path().join("typo");
    let db = typo.join("x.db");
    for args in [
        &["host", "list"][..],
        &["vm", "list"],
        &["vm", "show", "v"],
        &["attr", "get", "h", "kvm"],
        &["appliance", "list"],
        &["events"],
        &["db", "status"],
        &["vm", "set", "v", "--mem", "512"],
        &["vm", "add", "v", "--container", "c"],
        &["attr", "rm", "--global", "x"],
        &["events", "prune", "--keep", "1"],
    ] {
        assert_refused(
            &kvmroll_at(&db, args),
            &format!(
                "database {} does not exist; `kvmroll db init` creates it",
                db.display()
            ),
        );
        assert!(!typo.exists(), "kvmroll {args:?} made {}", typo.display());
    }
}

/// A first write that a new database refuses makes none.
#[test]
fn a_refused_first_write_makes_no_database() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("new/k.db");
    assert_refused(
        &kvmroll_at(&db, &["host", "add", "h", "--appliance", "nope"]),
        "unknown appliance",
    );
    assert_refused(&kvmroll_at(&db, &["attr", "set", "h", "x", "1"]), "h");
    assert!(!dir.path().join("new").exists());
    let out = kvmroll_at(&db, &["attr", "set", "--global", "x", "1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(db.exists());
}

/// Regression: a database truncated to 0 bytes (its -wal and -shm gone)
/// was rebuilt empty by `kvmroll vm list`, which showed an empty cluster.
#[test]
fn an_empty_database_file_is_refused_by_reads_writes_and_init() {
    let f = Fixture::on(Engine::Sqlite);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", f.db));
    }
    std::fs::write(&f.db, b"").unwrap();
    for args in [
        &["vm", "list"][..],
        &["host", "add", "h"],
        &["attr", "set", "--global", "x", "1"],
        &["db", "init"],
        &["db", "status"],
    ] {
        f.refused(args, "is empty, not a kvmroll database");
        assert_eq!(std::fs::metadata(&f.db).unwrap().len(), 0, "{args:?}");
    }
}

/// Regression: `PRAGMA user_version=-1` made `kvmroll vm list` abort (exit
/// 134, an index out of bounds in the store's upgrade).
fn an_impossible_schema_version_is_one_line_not_an_abort(e: Engine) {
    let f = Fixture::on(e);
    f.set_schema_version(-1);
    for args in [&["vm", "list"][..], &["host", "add", "h"], &["db", "init"]] {
        f.refused(args, "schema version -1 is one no kvmroll writes");
    }
}

/// Regression: a failed schema upgrade printed its whole CREATE TABLE
/// script, 59 lines.
fn a_failed_upgrade_is_one_line(e: Engine) {
    let f = Fixture::on(e);
    // Schema 1 on paper while step 2's table is there: step 2 fails.
    f.set_schema_version(1);
    let exists = match e {
        Engine::Sqlite => "table events already exists",
        Engine::Postgres => "relation \"events\" already exists",
    };
    f.refused(
        &["host", "add", "h"],
        &format!("upgrading the schema from version 1 to 2 failed: {exists}"),
    );
    f.refused(&["vm", "list"], "`kvmroll db init` upgrades it");
}

#[test]
fn db_init_makes_upgrades_or_leaves_a_database_and_refuses_a_foreign_file() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("a/b/k.db");
    let said = |out: Output| {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    assert!(said(kvmroll_at(&db, &["db", "init"])).starts_with("created "));
    let bytes = std::fs::read(&db).unwrap();
    assert!(said(kvmroll_at(&db, &["db", "init"])).contains("nothing to do"));
    assert_eq!(std::fs::read(&db).unwrap(), bytes);
    // Back to schema 1: init upgrades it.
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch(
            "DROP TABLE events; DROP TABLE made_images; DROP TABLE disk_grows;
             ALTER TABLE vms DROP COLUMN generation;
             PRAGMA user_version = 1;",
        )
        .unwrap();
    assert!(said(kvmroll_at(&db, &["db", "init"])).contains("schema 1 to 4"));
    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, vec![b'x'; 4096]).unwrap();
    assert_refused(
        &kvmroll_at(&junk, &["db", "init"]),
        "is not a kvmroll database",
    );
    assert_eq!(std::fs::read(&junk).unwrap(), vec![b'x'; 4096]);
    let out = Command::new(env!("CARGO_BIN_EXE_kvmroll"))
        .arg("--db")
        .arg(dir.path().join("ro.db"))
        .args(["db", "init"])
        .env("KVMROLL_DB_READONLY", "1")
        .output()
        .unwrap();
    assert_refused(&out, "open read-only");
    assert!(!dir.path().join("ro.db").exists());
}

fn db_status_shows_engine_location_schema_and_counts(e: Engine) {
    let f = Fixture::on(e);
    let text = f.ok(&["db", "status"]);
    let engine = match e {
        Engine::Sqlite => "sqlite",
        Engine::Postgres => "postgresql",
    };
    for want in [
        format!("engine    {engine}"),
        format!("location  {}", f.shown()),
        "schema    4".into(),
        "hosts     2".into(),
        "vms       1".into(),
        "events    0".into(),
    ] {
        assert!(text.lines().any(|l| l == want), "{want:?} not in {text}");
    }
    let json: serde_json::Value = serde_json::from_str(&f.ok(&["db", "status", "--json"])).unwrap();
    assert_eq!(json["engine"], engine);
    assert_eq!(json["vms"], 1);
    assert_eq!(json["hosts"], 2);
}

/// Regression: a database SQLite could not open for what the file system
/// refused said "unable to open database file", with no cause and no fix.
#[test]
fn a_refusing_file_system_is_named_with_what_to_do() {
    let f = Fixture::on(Engine::Sqlite);
    let dir = f.dir.path();
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let kvmroll = env!("CARGO_BIN_EXE_kvmroll");
    let db = &f.db;
    // The folder made read-only, in a mount namespace of the test's own.
    let script = format!(
        "mount --bind {d} {d} && mount -o remount,ro,bind {d} || exit 77
         {kvmroll} --db {db} vm list; {kvmroll} --db {db} host add h",
        d = dir.display()
    );
    let out = Command::new("unshare")
        .args(["--mount", "sh", "-c", &script])
        .env_remove("KVMROLL_DB_READONLY")
        .output()
        .unwrap();
    if out.status.code() == Some(77) || out.stderr.starts_with(b"unshare:") {
        eprintln!(
            "skipped: no mount namespace here: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 2, "{err}");
        assert!(lines[0].contains("is on a read-only file system"), "{err}");
        assert!(lines[0].contains("-wal and -shm"), "{err}");
        assert!(
            lines[1].contains("it is on a read-only file system: remount"),
            "{err}"
        );
    }
    // Another user: may not write the file, nor make the -shm beside it.
    let as_nobody = |args: &[&str]| {
        use std::os::unix::process::CommandExt;
        Command::new(kvmroll)
            .arg("--db")
            .arg(&f.db)
            .args(args)
            .env_remove("KVMROLL_DB_READONLY")
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap()
    };
    if nix::unistd::geteuid().is_root() {
        assert_refused(
            &as_nobody(&["vm", "list"]),
            "no permission to make files in its folder",
        );
        assert_refused(
            &as_nobody(&["host", "add", "h"]),
            "no permission to write it",
        );
    } else {
        eprintln!("skipped: another user's view needs root");
    }
}

fn the_database_is_the_flag_then_kvmroll_db_then_kvmroll_conf(e: Engine) {
    let f = Fixture::on(e);
    let dir = f.dir.path();
    let conf = dir.join("kvmroll.conf");
    std::fs::write(&conf, format!("# test\ndb = {}\n", f.db)).unwrap();
    let bare = |bin: &str| {
        let mut c = Command::new(bin);
        c.env_remove("KVMROLL_DB")
            .env_remove("KVMROLL_DB_READONLY")
            .env_remove("KVMROLL_STAGE")
            .env("KVMROLL_CONF", &conf);
        c
    };
    // The conf's db line, with neither --db nor KVMROLL_DB.
    let out = bare(env!("CARGO_BIN_EXE_kvmroll"))
        .args(["vm", "list"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("hosted-vm-0-0-0"));
    // KVMROLL_DB comes before the file, --db before both: a database that
    // does not exist is reported, so the one asked for is the one opened.
    let elsewhere = dir.join("elsewhere.db");
    for args in [
        vec!["vm".to_string(), "list".into()],
        vec![
            "--db".to_string(),
            elsewhere.display().to_string(),
            "vm".into(),
            "list".into(),
        ],
    ] {
        let mut c = bare(env!("CARGO_BIN_EXE_kvmroll"));
        if args.len() == 2 {
            c.env("KVMROLL_DB", &elsewhere);
        } else {
            c.env("KVMROLL_DB", &f.db);
        }
        let out = c.args(&args).output().unwrap();
        let listed = String::from_utf8_lossy(&out.stdout).contains("hosted-vm-0-0-0");
        assert!(!listed, "{args:?} read the wrong database");
    }
    // A fault in the file is one line and a failure, not the default path.
    std::fs::write(&conf, "db = relative.db\n").unwrap();
    let out = bare(env!("CARGO_BIN_EXE_kvmroll"))
        .args(["vm", "list"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("kvmroll.conf:1: db must be an absolute path"),
        "{err}"
    );
}
