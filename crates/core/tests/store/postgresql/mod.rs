//! PostgreSQL alone: what users meet when the server is away, a password is
//! wrong or exposed, the database is not kvmroll's or is newer; upgrades
//! racing; a deadlock retried; TLS by sslmode; and the containers' role.

use crate::common::{client, event, one_line, vm, TestDb};
use kvmroll_core::events::EventFilter;
use kvmroll_core::location::{Location, PgHost, PgLocation, SslMode};
use kvmroll_core::pg::{PgEnv, PgStore, SCHEMA_VERSION};
use kvmroll_core::{Change, Host, OpenMode, Scope, Store, StoreError};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

mod role;
mod tls;

/// No password from the environment or a file: only what a test gives.
fn bare_env() -> PgEnv {
    PgEnv {
        os_user: Some("root".into()),
        ..PgEnv::default()
    }
}

fn open(loc: &PgLocation, mode: OpenMode) -> Result<PgStore, StoreError> {
    PgStore::open(loc, mode, &bare_env())
}

fn tcp_port(loc: &PgLocation) -> (String, u16) {
    match &loc.host {
        Some(PgHost::Tcp(h)) => (h.clone(), loc.port.unwrap_or(5432)),
        other => panic!("KVMROLL_TEST_PG must name a TCP host, not {other:?}"),
    }
}

#[test]
fn a_stopped_server_is_named_by_host_and_port() {
    let Some(db) = TestDb::create("stopped") else {
        return;
    };
    // A port that nothing listens on, as a stopped server's.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut loc = db.location.clone();
    loc.host = Some(PgHost::Tcp("127.0.0.1".into()));
    loc.port = Some(port);
    let err = open(&loc, OpenMode::Create).unwrap_err();
    let line = one_line(&err);
    assert!(matches!(err, StoreError::Unreachable { .. }), "{line}");
    assert!(line.contains(&format!("127.0.0.1 port {port}")), "{line}");
    assert!(line.contains("refused"), "{line}");
}

#[test]
fn a_server_that_never_answers_is_given_up_at_the_time_limit() {
    let Some(db) = TestDb::create("silent") else {
        return;
    };
    // Accepts the connection, then says nothing.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let mut loc = db.location.clone();
    loc.host = Some(PgHost::Tcp("127.0.0.1".into()));
    loc.port = Some(port);
    loc.connect_timeout = Some(Duration::from_secs(2));
    let started = Instant::now();
    let err = open(&loc, OpenMode::ReadWriteFast).unwrap_err();
    let took = started.elapsed();
    let line = one_line(&err);
    assert!(matches!(err, StoreError::Unreachable { .. }), "{line}");
    assert!(line.contains(&format!("port {port}")), "{line}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    drop(silent);
}

#[test]
fn a_wrong_or_missing_password_is_said_so() {
    let Some(db) = TestDb::create("password") else {
        return;
    };
    let mut loc = db.location.clone();
    let (host, _) = tcp_port(&loc);
    loc.password = Some("not-the-password".into());
    let err = open(&loc, OpenMode::Create).unwrap_err();
    let line = one_line(&err);
    assert!(matches!(err, StoreError::Auth { .. }), "{line}");
    assert!(line.contains("refused the password of user"), "{line}");
    assert!(
        line.contains(&host) && !line.contains("not-the-password"),
        "{line}"
    );
    loc.password = None;
    let err = open(&loc, OpenMode::Create).unwrap_err();
    assert!(
        matches!(err, StoreError::NoPassword { .. }),
        "{}",
        one_line(&err)
    );
    // PGPASSWORD serves where the URL has none.
    let env = PgEnv {
        password: db.location.password.clone(),
        ..bare_env()
    };
    PgStore::open(&loc, OpenMode::Create, &env).unwrap();
}

#[test]
fn a_password_file_others_can_read_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let Some(db) = TestDb::create("passfile") else {
        return;
    };
    let (host, port) = tcp_port(&db.location);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pgpass");
    let password = db.location.password.clone().unwrap_or_default();
    std::fs::write(&file, format!("{host}:{port}:*:*:{password}\n")).unwrap();
    let mut loc = db.location.clone();
    loc.password = None;
    let env = PgEnv {
        passfile: Some(file.clone()),
        ..bare_env()
    };
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = PgStore::open(&loc, OpenMode::Create, &env).unwrap_err();
    let line = one_line(&err);
    assert!(matches!(err, StoreError::PassfileReadable { .. }), "{line}");
    assert!(line.contains(&file.display().to_string()), "{line}");
    assert!(!db
        .location
        .password
        .as_ref()
        .is_some_and(|p| line.contains(p.as_str())));
    // Made private, the same file serves.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    PgStore::open(&loc, OpenMode::Create, &env).unwrap();
    // So does ~/.pgpass, and `passfile=` in the URL.
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    std::fs::rename(&file, home.join(".pgpass")).unwrap();
    let env = PgEnv {
        home: Some(home.clone()),
        ..bare_env()
    };
    PgStore::open(&loc, OpenMode::ReadOnly, &env).unwrap();
    loc.passfile = Some(home.join(".pgpass"));
    open(&loc, OpenMode::ReadOnly).unwrap();
}

#[test]
fn a_newer_schema_is_refused_and_left_alone() {
    let Some(db) = TestDb::create("newer") else {
        return;
    };
    open(&db.location, OpenMode::Create).unwrap();
    let newer = (SCHEMA_VERSION + 1).to_string();
    let mut admin = db.admin();
    admin
        .execute(
            "UPDATE kvmroll_meta SET value = $1 WHERE key = 'schema_version'",
            &[&newer],
        )
        .unwrap();
    for mode in [
        OpenMode::Create,
        OpenMode::ReadWrite,
        OpenMode::ReadWriteFast,
        OpenMode::ReadOnly,
    ] {
        let err = open(&db.location, mode).unwrap_err();
        let line = one_line(&err);
        assert!(matches!(err, StoreError::NewerSchema { .. }), "{line}");
        assert!(line.contains("upgrade kvmroll"), "{line}");
    }
    let kept: String = admin
        .query_one(
            "SELECT value FROM kvmroll_meta WHERE key = 'schema_version'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(kept, newer);
}

#[test]
fn a_database_of_others_is_refused_untouched() {
    let Some(db) = TestDb::create("foreign") else {
        return;
    };
    let mut admin = db.admin();
    admin
        .batch_execute("CREATE TABLE invoices (id int); INSERT INTO invoices VALUES (1)")
        .unwrap();
    let err = open(&db.location, OpenMode::Create).unwrap_err();
    let line = one_line(&err);
    assert!(matches!(err, StoreError::NotKvmroll { .. }), "{line}");
    assert!(line.contains("is not a kvmroll database"), "{line}");
    let tables: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(tables, 1);
    // A kvmroll_meta that does not say kvmroll is foreign too.
    let Some(db) = TestDb::create("foreign_meta") else {
        return;
    };
    db.admin()
        .batch_execute(
            "CREATE TABLE kvmroll_meta (key text primary key, value text not null);
             INSERT INTO kvmroll_meta VALUES ('identity', 'other')",
        )
        .unwrap();
    let err = open(&db.location, OpenMode::Create).unwrap_err();
    assert!(
        matches!(err, StoreError::NotKvmroll { .. }),
        "{}",
        one_line(&err)
    );
}

#[test]
fn an_empty_database_asks_for_db_init_outside_the_cli() {
    let Some(db) = TestDb::create("noschema") else {
        return;
    };
    for mode in [
        OpenMode::ReadWrite,
        OpenMode::ReadWriteFast,
        OpenMode::ReadOnly,
    ] {
        let err = open(&db.location, mode).unwrap_err();
        let line = one_line(&err);
        assert!(matches!(err, StoreError::NoSchema { .. }), "{line}");
        assert!(line.contains("kvmroll db init"), "{line}");
    }
    let tables: i64 = db
        .admin()
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(tables, 0);
}

#[test]
fn processes_upgrading_at_once_take_turns() {
    let Some(db) = TestDb::create("upgrades") else {
        return;
    };
    let barrier = std::sync::Barrier::new(8);
    std::thread::scope(|t| {
        for _ in 0..8 {
            t.spawn(|| {
                barrier.wait();
                open(&db.location, OpenMode::Create).unwrap_or_else(|e| panic!("{}", one_line(&e)));
            });
        }
    });
    let mut admin = db.admin();
    let version: String = admin
        .query_one(
            "SELECT value FROM kvmroll_meta WHERE key = 'schema_version'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(version, SCHEMA_VERSION.to_string());
    // Seeded once, not once per process.
    let seeded = kvmroll_core::Cluster::seeded().appliances.len() as i64;
    let appliances: i64 = admin
        .query_one("SELECT count(*) FROM appliances", &[])
        .unwrap()
        .get(0);
    assert_eq!(appliances, seeded);
}

#[test]
fn an_older_schema_is_upgraded_by_a_writer_and_not_by_a_reader() {
    let Some(db) = TestDb::create("older") else {
        return;
    };
    open(&db.location, OpenMode::Create).unwrap();
    // Back to version 1: no events table.
    db.admin()
        .batch_execute(
            "DROP TABLE events, made_images, disk_grows;
             ALTER TABLE vms DROP COLUMN generation;
             UPDATE kvmroll_meta SET value = '1' WHERE key = 'schema_version'",
        )
        .unwrap();
    let err = open(&db.location, OpenMode::ReadOnly).unwrap_err();
    assert!(
        matches!(err, StoreError::NeedsUpgrade { .. }),
        "{}",
        one_line(&err)
    );
    let mut hook = open(&db.location, OpenMode::ReadWriteFast).unwrap();
    hook.record_events(&[event("v", 1)]).unwrap();
    assert_eq!(hook.events(&EventFilter::default()).unwrap().len(), 1);
}

/// A deadlock between an update and another session: PostgreSQL aborts the
/// update (it waited first, so its deadlock check runs first), which is
/// tried again, its closure called again, and succeeds.
#[test]
fn an_update_caught_in_a_deadlock_is_tried_again() {
    let Some(db) = TestDb::create("deadlock") else {
        return;
    };
    let mut s = open(&db.location, OpenMode::Create).unwrap();
    let mut other = db.admin();
    let mut tx = other.transaction().unwrap();
    // Reads of hosts pass; the update's insert into it waits.
    tx.batch_execute("LOCK TABLE hosts IN EXCLUSIVE MODE")
        .unwrap();
    let calls = std::sync::atomic::AtomicU32::new(0);
    std::thread::scope(|t| {
        let updater = t.spawn(|| {
            s.update(&mut |_| {
                calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Ok(vec![Change::AddHost(Host::new("h", "compute"))])
            })
        });
        // Once the update holds kvmroll's lock, has called its closure and
        // waits to write hosts, ask for
        // kvmroll's lock: a cycle.
        let mut watcher = db.admin();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let waiting: i64 = watcher
                .query_one(
                    "SELECT count(*) FROM pg_locks WHERE NOT granted
                     AND relation = 'hosts'::regclass",
                    &[],
                )
                .unwrap()
                .get(0);
            if waiting > 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the update never waited for hosts"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        tx.execute("SELECT pg_advisory_xact_lock(1802923378, 1)", &[])
            .expect("the other session was the one aborted");
        tx.commit().unwrap();
        let plan = updater.join().unwrap();
        plan.unwrap_or_else(|e| panic!("{}", one_line(&e)));
    });
    assert!(calls.into_inner() >= 2, "the closure was not called again");
    assert!(s.snapshot().unwrap().hosts.contains_key("h"));
}

#[test]
fn a_unix_socket_folder_is_reached_by_host_parameter() {
    let Some(db) = TestDb::create("socket") else {
        return;
    };
    let mut admin = db.admin();
    let dirs: String = admin
        .query_one("SHOW unix_socket_directories", &[])
        .unwrap()
        .get(0);
    let port: String = admin.query_one("SHOW port", &[]).unwrap().get(0);
    let dir = dirs.split(',').next().unwrap().trim().to_string();
    let url = format!(
        "postgresql:///{}?host={dir}&port={port}&user={}",
        db.location.dbname.as_deref().unwrap(),
        db.location.user.as_deref().unwrap_or("postgres")
    );
    let Location::Postgres(loc) = Location::parse(&url, Path::new("/")).unwrap() else {
        unreachable!()
    };
    assert_eq!(loc.host, Some(PgHost::Socket(PathBuf::from(&dir))));
    // sslmode applies to TCP only, as in libpq.
    let mut loc = loc;
    loc.sslmode = Some(SslMode::Require);
    let s = open(&loc, OpenMode::Create).unwrap_or_else(|e| panic!("{}", one_line(&e)));
    assert!(s.snapshot().unwrap().appliances.contains("compute"));
}
