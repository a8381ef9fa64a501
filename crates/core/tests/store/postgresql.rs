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

#[test]
fn the_containers_role_reads_records_and_moves_vms_only() {
    let Some(db) = TestDb::create("role") else {
        return;
    };
    let mut admin_store = open(&db.location, OpenMode::Create).unwrap();
    admin_store
        .update(&mut |_| {
            Ok(vec![
                Change::AddHost(Host::new("a", "vm-container")),
                Change::AddHost(Host::new("b", "vm-container")),
                Change::AddVm(vm("v", "a")),
            ])
        })
        .unwrap();
    let role = format!("kvmroll_ct_{}", std::process::id());
    admin_store
        .grant_container_role(&role, Some("ct-secret"))
        .unwrap();
    // Again: harmless.
    admin_store.grant_container_role(&role, None).unwrap();
    let loc = db.as_user(&role, Some("ct-secret"));
    let mut ct = open(&loc, OpenMode::ReadWriteFast).unwrap_or_else(|e| panic!("{}", one_line(&e)));
    assert_eq!(
        ct.vm_brief("v").unwrap().unwrap().container.as_deref(),
        Some("a")
    );
    ct.record_events(&[event("v", 1)]).unwrap();
    // The hook records the images it made; a plugin asks a disk to grow.
    ct.record_disk_work("v", "a", &["/d/v.img".into()], &[])
        .unwrap_or_else(|e| panic!("{}", one_line(&e)));
    // An allocate plugin relocates the VM and sets one of its attributes.
    ct.update(&mut |c| {
        let mut v = c.vm("v").unwrap().clone();
        v.container = Some("b".into());
        v.disks
            .push(kvmroll_core::Disk::parse("raw:/d/x,vdb,virtio").unwrap());
        Ok(vec![
            Change::SetVm(v),
            Change::SetAttr {
                scope: Scope::Host("v".into()),
                name: "kvm_autostart".into(),
                value: "true".into(),
            },
        ])
    })
    .unwrap_or_else(|e| panic!("{}", one_line(&e)));
    ct.grow_disk("v", "vdb", 3)
        .unwrap_or_else(|e| panic!("{}", one_line(&e)));
    ct.record_disk_work("v", "b", &[], &["/d/x".into()])
        .unwrap_or_else(|e| panic!("{}", one_line(&e)));
    ct.update(&mut |_| {
        Ok(vec![Change::RemoveAttr {
            scope: Scope::Host("v".into()),
            name: "kvm_autostart".into(),
        }])
    })
    .unwrap_or_else(|e| panic!("{}", one_line(&e)));
    let after = admin_store.snapshot().unwrap();
    assert_eq!(after.vm("v").unwrap().container.as_deref(), Some("b"));
    // What containers may not do, each refused in one line, nothing written.
    let refused: Vec<(&str, Change)> = vec![
        (
            "a global attribute",
            Change::SetAttr {
                scope: Scope::Global,
                name: "kvm_reinstall_command".into(),
                value: "rm -rf /".into(),
            },
        ),
        (
            "a container's attribute",
            Change::SetAttr {
                scope: Scope::Host("a".into()),
                name: "x".into(),
                value: "y".into(),
            },
        ),
        ("a new host", Change::AddHost(Host::new("h", "compute"))),
        ("a new VM", Change::AddVm(vm("w", "a"))),
        ("a removed VM", Change::RemoveVm("v".into())),
    ];
    for (what, change) in refused {
        let err = ct.update(&mut |_| Ok(vec![change.clone()])).unwrap_err();
        let line = one_line(&err);
        assert!(matches!(err, StoreError::Sql { .. }), "{what}: {line}");
        assert!(
            line.contains("permission denied") || line.contains("row-level security"),
            "{what}: {line}"
        );
        assert!(
            !line.contains("INSERT") && !line.contains("UPDATE"),
            "SQL in {line}"
        );
    }
    assert!(ct.prune_events(None, Some(0)).is_err());
    assert_eq!(admin_store.snapshot().unwrap(), after);
    assert_eq!(
        admin_store.events(&EventFilter::default()).unwrap().len(),
        1
    );
    // The role is the server's, not the database's: drop it here.
    drop(ct);
    let mut server = client(db.server());
    drop(admin_store);
    drop(db);
    server
        .batch_execute(&format!("DROP ROLE \"{role}\""))
        .unwrap();
}

/// TLS: the test server is switched to `ssl=on` with a certificate for
/// `localhost` signed by a CA the test makes, written into its data folder.
mod tls {
    use super::*;
    use std::sync::OnceLock;

    /// The CA file, once the server speaks TLS.
    fn ca_file(db: &TestDb) -> PathBuf {
        static CA: OnceLock<PathBuf> = OnceLock::new();
        CA.get_or_init(|| enable_tls(db)).clone()
    }

    fn enable_tls(db: &TestDb) -> PathBuf {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let mut admin = client(db.server());
        let data: String = admin.query_one("SHOW data_directory", &[]).unwrap().get(0);
        let data = PathBuf::from(data);
        let owner = std::fs::metadata(&data)
            .expect("KVMROLL_TEST_PG must be a server on this machine")
            .uid();
        let folder = data.join("kvmroll-test-tls");
        if !folder.join("ca.crt").exists() {
            // Made aside and renamed, so that a concurrent test process
            // uses one whole set or the other.
            let tmp = data.join(format!("kvmroll-test-tls.{}", std::process::id()));
            std::fs::create_dir_all(&tmp).unwrap();
            let (ca, ca_key) = make_ca("kvmroll test CA");
            let key = rcgen::KeyPair::generate().unwrap();
            let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
                .unwrap()
                .signed_by(&key, &ca, &ca_key)
                .unwrap();
            std::fs::write(tmp.join("ca.crt"), ca.pem()).unwrap();
            std::fs::write(tmp.join("server.crt"), cert.pem()).unwrap();
            std::fs::write(tmp.join("server.key"), key.serialize_pem()).unwrap();
            for f in ["ca.crt", "server.crt", "server.key"] {
                let p = tmp.join(f);
                std::os::unix::fs::chown(&p, Some(owner), None).unwrap();
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
            }
            std::os::unix::fs::chown(&tmp, Some(owner), None).unwrap();
            if std::fs::rename(&tmp, &folder).is_err() {
                std::fs::remove_dir_all(&tmp).unwrap();
            }
        }
        for (name, value) in [
            ("ssl_cert_file", folder.join("server.crt")),
            ("ssl_key_file", folder.join("server.key")),
        ] {
            let sql: String = admin
                .query_one(
                    "SELECT format('ALTER SYSTEM SET %I = %L', $1::text, $2::text)",
                    &[&name, &value.display().to_string()],
                )
                .unwrap()
                .get(0);
            admin.batch_execute(&sql).unwrap();
        }
        // One statement each: several make one transaction, which ALTER
        // SYSTEM refuses.
        admin.batch_execute("ALTER SYSTEM SET ssl = on").unwrap();
        admin.batch_execute("SELECT pg_reload_conf()").unwrap();
        // The reload is asynchronous: wait until a new connection gets TLS.
        let ca = folder.join("ca.crt");
        let mut loc = db.location.clone();
        loc.sslmode = Some(SslMode::Require);
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Err(e) = open(&loc, OpenMode::Create) {
            assert!(Instant::now() < deadline, "no TLS: {}", one_line(&e));
            std::thread::sleep(Duration::from_millis(100));
        }
        ca
    }

    fn make_ca(name: &str) -> (rcgen::Certificate, rcgen::KeyPair) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        (params.self_signed(&key).unwrap(), key)
    }

    fn at(db: &TestDb, host: &str, mode: SslMode, ca: Option<&Path>) -> PgLocation {
        let mut loc = db.location.clone();
        loc.host = Some(PgHost::Tcp(host.into()));
        loc.sslmode = Some(mode);
        loc.sslrootcert = ca.map(Path::to_path_buf);
        loc
    }

    /// Whether the store's own connection is encrypted, as the server sees it.
    fn encrypted(db: &TestDb, app: &str) -> bool {
        db.admin()
            .query_one(
                "SELECT coalesce(bool_or(s.ssl), false) FROM pg_stat_ssl s
                 JOIN pg_stat_activity a ON a.pid = s.pid WHERE a.application_name = $1",
                &[&app],
            )
            .unwrap()
            .get(0)
    }

    #[test]
    fn sslmode_require_encrypts() {
        let Some(db) = TestDb::create("tls_require") else {
            return;
        };
        ca_file(&db);
        let mut loc = at(&db, "127.0.0.1", SslMode::Require, None);
        loc.application_name = Some("kvmroll-tls-require".into());
        let s = open(&loc, OpenMode::Create).unwrap_or_else(|e| panic!("{}", one_line(&e)));
        s.snapshot().unwrap();
        assert!(encrypted(&db, "kvmroll-tls-require"));
        // And disable does not.
        loc.sslmode = Some(SslMode::Disable);
        loc.application_name = Some("kvmroll-tls-disable".into());
        let plain = open(&loc, OpenMode::Create).unwrap();
        plain.snapshot().unwrap();
        assert!(!encrypted(&db, "kvmroll-tls-disable"));
    }

    #[test]
    fn verify_full_checks_the_ca_and_the_name() {
        let Some(db) = TestDb::create("tls_verify") else {
            return;
        };
        let ca = ca_file(&db);
        // The certificate names localhost.
        let loc = at(&db, "localhost", SslMode::VerifyFull, Some(&ca));
        open(&loc, OpenMode::Create).unwrap_or_else(|e| panic!("{}", one_line(&e)));
        // 127.0.0.1 is not the name it holds: verify-full refuses,
        // verify-ca (chain only) accepts.
        let by_ip = at(&db, "127.0.0.1", SslMode::VerifyFull, Some(&ca));
        let err = open(&by_ip, OpenMode::Create).unwrap_err();
        let line = one_line(&err);
        assert!(line.contains("setting up TLS"), "{line}");
        open(
            &at(&db, "127.0.0.1", SslMode::VerifyCa, Some(&ca)),
            OpenMode::ReadWrite,
        )
        .unwrap_or_else(|e| panic!("{}", one_line(&e)));
        // Another CA: refused, by verify-ca and by require with a CA file.
        let dir = tempfile::tempdir().unwrap();
        let other = dir.path().join("other.crt");
        std::fs::write(&other, make_ca("another CA").0.pem()).unwrap();
        for mode in [SslMode::VerifyFull, SslMode::VerifyCa, SslMode::Require] {
            let err = open(
                &at(&db, "localhost", mode, Some(&other)),
                OpenMode::ReadWrite,
            )
            .unwrap_err();
            let line = one_line(&err);
            assert!(line.contains("setting up TLS"), "{mode:?}: {line}");
        }
        // verify-full with no CA at all says what it needs.
        let err = open(
            &at(&db, "localhost", SslMode::VerifyFull, None),
            OpenMode::ReadWrite,
        )
        .unwrap_err();
        assert!(one_line(&err).contains("sslrootcert"), "{}", one_line(&err));
    }
}
