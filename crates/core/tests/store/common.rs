//! What the store tests share: the two engines opened the same way, a
//! database of its own on the private PostgreSQL server for each test (from
//! `KVMROLL_TEST_PG`), and small builders of hosts, VMs and events.

use kvmroll_core::events::{Event, EventOutcome};
use kvmroll_core::location::{Location, PgHost, PgLocation};
use kvmroll_core::{OpenMode, Store, StoreError, Vm};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// The superuser location of the private server the tests use, or `None`
/// (said once on stderr) when there is none. Under `KVMROLL_E2E=1` a missing
/// server fails the test: CI provides one.
pub fn test_server() -> Option<PgLocation> {
    match std::env::var("KVMROLL_TEST_PG") {
        Ok(url) if !url.is_empty() => match Location::parse(&url, Path::new("/")) {
            Ok(Location::Postgres(pg)) => Some(pg),
            _ => panic!("KVMROLL_TEST_PG is not a postgresql:// URL"),
        },
        _ if std::env::var("KVMROLL_E2E").as_deref() == Ok("1") => panic!(
            "KVMROLL_TEST_PG is not set, and KVMROLL_E2E=1 requires the PostgreSQL tests \
             (scripts/pg-test-server.sh start DIR prints one)"
        ),
        _ => {
            eprintln!(
                "skipped: KVMROLL_TEST_PG is not set (the superuser URL of a private \
                 PostgreSQL server; scripts/pg-test-server.sh start DIR prints one)"
            );
            None
        }
    }
}

/// A plain connection for the tests' own SQL (no TLS: the test server's URL
/// is a superuser's on loopback).
pub fn client(loc: &PgLocation) -> postgres::Client {
    let mut c = postgres::Config::new();
    match loc.host.as_ref().expect("KVMROLL_TEST_PG names a host") {
        PgHost::Tcp(h) => c.host(h),
        PgHost::Socket(d) => c.host_path(d),
    };
    c.port(loc.port.unwrap_or(5432))
        .user(loc.user.as_deref().unwrap_or("postgres"))
        .dbname(loc.dbname.as_deref().unwrap_or("postgres"));
    if let Some(p) = &loc.password {
        c.password(p);
    }
    c.connect(postgres::NoTls)
        .expect("connecting to KVMROLL_TEST_PG")
}

/// A database of one test's own, dropped when it ends.
pub struct TestDb {
    /// The test database, as the superuser.
    pub location: PgLocation,
    server: PgLocation,
    name: String,
}

impl TestDb {
    pub fn create(tag: &str) -> Option<TestDb> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let server = test_server()?;
        let name = format!(
            "kvmroll_t{}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            tag.chars().take(30).collect::<String>()
        );
        client(&server)
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .unwrap();
        let mut location = server.clone();
        location.dbname = Some(name.clone());
        // Sixty-four logins at once on a loaded 2-core machine may take
        // longer than the default limit; the limit has a test of its own.
        if location.connect_timeout.is_none() {
            location.connect_timeout = Some(std::time::Duration::from_secs(60));
        }
        Some(TestDb {
            location,
            server,
            name,
        })
    }

    /// A superuser's connection to the test database.
    pub fn admin(&self) -> postgres::Client {
        client(&self.location)
    }

    /// The test database as `user` with `password`.
    pub fn as_user(&self, user: &str, password: Option<&str>) -> PgLocation {
        let mut l = self.location.clone();
        l.user = Some(user.into());
        l.password = password.map(Into::into);
        l
    }

    pub fn server(&self) -> &PgLocation {
        &self.server
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let dropped = client(&self.server).batch_execute(&format!(
            "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
            self.name
        ));
        if let Err(e) = dropped {
            eprintln!("could not drop test database {}: {e}", self.name);
        }
    }
}

/// One engine, opened as the binaries open it.
pub trait Engine: Sync {
    fn location(&self) -> Location;

    fn open(&self, mode: OpenMode) -> Result<Box<dyn Store>, StoreError> {
        kvmroll_core::location::open(&self.location(), mode)
    }

    /// The database made, as `kvmroll db init` makes it, and open.
    fn init(&self) -> Box<dyn Store> {
        kvmroll_core::location::init(&self.location()).unwrap().0
    }

    /// Whether there is a kvmroll database yet (something made one).
    fn made(&self) -> bool;

    /// How many rows `table` holds, read behind the store's back.
    fn rows(&self, table: &str) -> i64;
}

pub struct Sqlite {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

pub fn sqlite() -> Sqlite {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/kvmroll.db");
    Sqlite { _dir: dir, path }
}

impl Sqlite {
    /// The database file (made by the first write or `init`).
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Engine for Sqlite {
    fn location(&self) -> Location {
        Location::Sqlite(self.path.clone())
    }

    fn made(&self) -> bool {
        self.path.exists()
    }

    fn rows(&self, table: &str) -> i64 {
        rusqlite::Connection::open(&self.path)
            .unwrap()
            .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .unwrap()
    }
}

pub struct Postgres(pub TestDb);

pub fn postgres(tag: &str) -> Option<Postgres> {
    TestDb::create(tag).map(Postgres)
}

impl Engine for Postgres {
    fn location(&self) -> Location {
        Location::Postgres(self.0.location.clone())
    }

    fn made(&self) -> bool {
        self.0
            .admin()
            .query_one("SELECT to_regclass('kvmroll_meta') IS NOT NULL", &[])
            .unwrap()
            .get(0)
    }

    fn rows(&self, table: &str) -> i64 {
        self.0
            .admin()
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .unwrap()
            .get(0)
    }
}

/// A VM of `container` with a UUID of its name.
pub fn vm(name: &str, container: &str) -> Vm {
    let n = name
        .bytes()
        .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    Vm {
        id: 0,
        name: name.into(),
        container: Some(container.into()),
        memory_mib: 1024,
        vcpus: 1,
        uuid: format!("00000000-0000-4000-8000-{:012x}", n & 0xffff_ffff_ffff),
        cdrom: None,
        virt_type: "kvm".into(),
        disks: vec![],
        nics: vec![],
        stale: false,
        generation: 0,
    }
}

/// A plugin run of `vm` at `time_ms`.
pub fn event(vm: &str, time_ms: i64) -> Event {
    Event {
        id: 0,
        time_ms,
        vm: vm.into(),
        stage: "allocate".into(),
        op: "prepare".into(),
        subop: "begin".into(),
        plugin: Some("/etc/kvmroll/plugins/allocate.d/10-x".into()),
        outcome: EventOutcome::Failed,
        status: Some(3),
        duration_ms: 12,
        message: "first line\nsecond line".into(),
        container: Some("vm-container-0-0".into()),
    }
}

/// The error as the binaries print it, which must be one line.
pub fn one_line(e: &StoreError) -> String {
    let line = kvmroll_core::error_chain(e);
    assert!(!line.contains('\n'), "more than one line: {line}");
    line
}
