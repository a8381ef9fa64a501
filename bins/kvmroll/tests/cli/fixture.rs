//! The fixture every CLI test runs on: a fresh database per test, on
//! SQLite or on the private PostgreSQL server, and the real binary.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// The engine a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Engine {
    Sqlite,
    Postgres,
}

/// The superuser URL of the private PostgreSQL test server, or `None`
/// (said on stderr) when there is none; under `KVMROLL_E2E=1` a missing
/// server fails the test.
pub(crate) fn pg_server() -> Option<String> {
    match std::env::var("KVMROLL_TEST_PG") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var("KVMROLL_E2E").as_deref() == Ok("1") => panic!(
            "KVMROLL_TEST_PG is not set, and KVMROLL_E2E=1 requires the PostgreSQL runs \
             (scripts/pg-test-server.sh start DIR prints one)"
        ),
        _ => {
            eprintln!("skipped on PostgreSQL: KVMROLL_TEST_PG is not set");
            None
        }
    }
}

/// `url` naming the database `name` instead of its own.
pub(crate) fn with_dbname(url: &str, name: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a postgresql:// URL");
    let (netloc, query) = match rest.split_once('?') {
        Some((before, q)) => (before, Some(q)),
        None => (rest, None),
    };
    let netloc = netloc.split('/').next().unwrap_or_default();
    match query {
        Some(q) => format!("{scheme}://{netloc}/{name}?{q}"),
        None => format!("{scheme}://{netloc}/{name}"),
    }
}

/// A superuser connection to `url`.
pub(crate) fn pg_client(url: &str) -> postgres::Client {
    postgres::Client::connect(url, postgres::NoTls).expect("connecting to KVMROLL_TEST_PG")
}

/// A database of one test's own on the test server, dropped with it.
pub(crate) struct PgDb {
    pub(crate) server: String,
    pub(crate) name: String,
}

impl PgDb {
    pub(crate) fn create() -> PgDb {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let server = pg_server().expect("KVMROLL_TEST_PG");
        let name = format!(
            "kvmroll_cli_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        pg_client(&server)
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .unwrap();
        PgDb { server, name }
    }

    pub(crate) fn url(&self) -> String {
        with_dbname(&self.server, &self.name)
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let dropped = pg_client(&self.server).batch_execute(&format!(
            "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
            self.name
        ));
        if let Err(e) = dropped {
            eprintln!("could not drop test database {}: {e}", self.name);
        }
    }
}

/// What a refused command must leave as it was: a SQLite file's bytes (its
/// WAL included), or every row of every table of a PostgreSQL database.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum State {
    Bytes(Vec<u8>),
    Rows(Vec<String>),
}

pub(crate) struct Fixture {
    pub(crate) engine: Engine,
    /// The test's own folder: the SQLite file, value files, configuration.
    pub(crate) dir: tempfile::TempDir,
    /// The database, as given to `--db`: a path, or a URL with the
    /// superuser's password.
    pub(crate) db: String,
    pub(crate) pg: Option<PgDb>,
}

impl Fixture {
    /// A container with 4 CPUs, a plain compute host and one VM; libvirt is
    /// libvirt's own test driver, which never has these VMs defined.
    pub(crate) fn on(engine: Engine) -> Fixture {
        let f = Fixture::empty(engine);
        f.ok(&[
            "host",
            "add",
            "vm-container-0-0",
            "--appliance",
            "vm-container",
            "--cpus",
            "4",
        ]);
        f.ok(&["host", "add", "compute-0-0"]);
        f.ok(&["attr", "set", "--global", "libvirt_uri", "test:///default"]);
        f.ok(&[
            "vm",
            "add",
            "hosted-vm-0-0-0",
            "--container",
            "vm-container-0-0",
            "--cpus",
            "2",
        ]);
        f
    }

    /// No database yet: a path where none is, or an empty PostgreSQL
    /// database.
    pub(crate) fn empty(engine: Engine) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let (db, pg) = match engine {
            Engine::Sqlite => (dir.path().join("kvmroll.db").display().to_string(), None),
            Engine::Postgres => {
                let pg = PgDb::create();
                (pg.url(), Some(pg))
            }
        };
        Fixture {
            engine,
            dir,
            db,
            pg,
        }
    }

    /// The database as kvmroll shows it: the path, or the URL without its
    /// password.
    pub(crate) fn shown(&self) -> String {
        match self.engine {
            Engine::Sqlite => self.db.clone(),
            Engine::Postgres => kvmroll_core::location::Location::parse(&self.db, Path::new("/"))
                .unwrap()
                .to_string(),
        }
    }

    /// A file in the test's folder.
    pub(crate) fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub(crate) fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_kvmroll"));
        c.arg("--db")
            .arg(&self.db)
            .env_remove("KVMROLL_DB")
            .env_remove("KVMROLL_DB_READONLY")
            .env_remove("KVMROLL_STAGE")
            .env_remove("PGPASSWORD");
        c
    }

    pub(crate) fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().unwrap()
    }

    pub(crate) fn run_stdin(&self, args: &[&str], input: &str) -> Output {
        let mut child = self
            .cmd()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    pub(crate) fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "kvmroll {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs SQL statements behind kvmroll's back.
    pub(crate) fn execute(&self, sql: &str) {
        match &self.pg {
            None => rusqlite::Connection::open(&self.db)
                .unwrap()
                .execute_batch(sql)
                .unwrap(),
            Some(pg) => pg_client(&pg.url()).batch_execute(sql).unwrap(),
        }
    }

    /// How many rows `table` holds, read behind kvmroll's back.
    pub(crate) fn count(&self, table: &str) -> i64 {
        let sql = format!("SELECT count(*) FROM {table}");
        match &self.pg {
            None => rusqlite::Connection::open(&self.db)
                .unwrap()
                .query_row(&sql, [], |r| r.get(0))
                .unwrap(),
            Some(pg) => pg_client(&pg.url()).query_one(&sql, &[]).unwrap().get(0),
        }
    }

    /// Writes `version` as the database's schema version, behind kvmroll's back.
    pub(crate) fn set_schema_version(&self, version: i64) {
        match self.engine {
            Engine::Sqlite => self.execute(&format!("PRAGMA user_version = {version}")),
            Engine::Postgres => self.execute(&format!(
                "UPDATE kvmroll_meta SET value = '{version}' WHERE key = 'schema_version'"
            )),
        }
    }

    /// `attr set VM NAME --value-file FILE`, `value` written to FILE first:
    /// for values larger than one argument may be (128 KiB).
    pub(crate) fn attr_from_file(&self, vm: &str, name: &str, value: &str) -> [String; 6] {
        let file = self.file(&format!("{name}.value"));
        std::fs::write(&file, value).unwrap();
        [
            "attr",
            "set",
            vm,
            name,
            "--value-file",
            file.to_str().unwrap(),
        ]
        .map(String::from)
    }

    /// The database as it stands: the file's bytes, or a dump of every
    /// row of every table (each row as text, sorted within its table).
    pub(crate) fn state(&self) -> State {
        match &self.pg {
            None => {
                let mut b = std::fs::read(&self.db).unwrap();
                if let Ok(w) = std::fs::read(format!("{}-wal", self.db)) {
                    b.extend(w);
                }
                State::Bytes(b)
            }
            Some(pg) => {
                let mut client = pg_client(&pg.url());
                let tables: Vec<String> = client
                    .query(
                        "SELECT tablename::text FROM pg_tables
                         WHERE schemaname = current_schema() ORDER BY 1",
                        &[],
                    )
                    .unwrap()
                    .iter()
                    .map(|r| r.get(0))
                    .collect();
                let mut dump = Vec::new();
                for t in tables {
                    let mut rows: Vec<String> = client
                        .query(&format!("SELECT t::text FROM \"{t}\" t"), &[])
                        .unwrap()
                        .iter()
                        .map(|r| format!("{t} {}", r.get::<_, String>(0)))
                        .collect();
                    rows.sort();
                    dump.push(format!("{t}: {} rows", rows.len()));
                    dump.extend(rows);
                }
                State::Rows(dump)
            }
        }
    }

    /// Runs a command that must be refused: status 1, one line naming
    /// `expect`, and no change to the database.
    pub(crate) fn refused(&self, args: &[&str], expect: &str) {
        let before = self.state();
        let out = self.run(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "kvmroll {args:?}: {err}");
        assert_eq!(
            err.lines().count(),
            1,
            "kvmroll {args:?}: not one line: {err}"
        );
        assert!(err.starts_with("kvmroll: "), "{err}");
        assert!(
            err.contains(expect),
            "kvmroll {args:?}: {err:?} lacks {expect:?}"
        );
        assert!(out.stdout.is_empty(), "kvmroll {args:?} printed to stdout");
        assert!(
            self.state() == before,
            "kvmroll {args:?} changed the database"
        );
    }
}
