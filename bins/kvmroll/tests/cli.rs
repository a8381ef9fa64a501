//! Runs the real `kvmroll` binary against a fresh database per test, as a
//! user would: every bad input exits non-zero with one line on stderr and
//! leaves the database as it was (byte for byte on SQLite, row for row on
//! PostgreSQL).
//!
//! Each test of a cluster runs on both engines ([`on_both_engines!`]): on
//! SQLite in a file of its own, and on PostgreSQL in a database of its own
//! on the private server that `KVMROLL_TEST_PG` names (its superuser URL;
//! `scripts/pg-test-server.sh start DIR` starts one and prints it). Without
//! it the PostgreSQL runs skip with a message, except under `KVMROLL_E2E=1`,
//! where they fail. The tests about SQLite files themselves run on SQLite
//! only.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// The engine a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Engine {
    Sqlite,
    Postgres,
}

/// Each test becomes one per engine: `on_sqlite::NAME` and
/// `on_postgresql::NAME`.
macro_rules! on_both_engines {
    ($($test:ident),* $(,)?) => {
        mod on_sqlite {
            $(#[test] fn $test() { super::$test(super::Engine::Sqlite) })*
        }
        mod on_postgresql {
            $(#[test] fn $test() {
                if super::pg_server().is_some() {
                    super::$test(super::Engine::Postgres)
                }
            })*
        }
    };
}

/// The superuser URL of the private PostgreSQL test server, or `None`
/// (said on stderr) when there is none; under `KVMROLL_E2E=1` a missing
/// server fails the test.
fn pg_server() -> Option<String> {
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
fn with_dbname(url: &str, name: &str) -> String {
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
fn pg_client(url: &str) -> postgres::Client {
    postgres::Client::connect(url, postgres::NoTls).expect("connecting to KVMROLL_TEST_PG")
}

/// A database of one test's own on the test server, dropped with it.
struct PgDb {
    server: String,
    name: String,
}

impl PgDb {
    fn create() -> PgDb {
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

    fn url(&self) -> String {
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
enum State {
    Bytes(Vec<u8>),
    Rows(Vec<String>),
}

struct Fixture {
    engine: Engine,
    /// The test's own folder: the SQLite file, value files, configuration.
    dir: tempfile::TempDir,
    /// The database, as given to `--db`: a path, or a URL with the
    /// superuser's password.
    db: String,
    pg: Option<PgDb>,
}

impl Fixture {
    /// A container with 4 CPUs, a plain compute host and one VM; libvirt is
    /// libvirt's own test driver, which never has these VMs defined.
    fn on(engine: Engine) -> Fixture {
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
    fn empty(engine: Engine) -> Fixture {
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
    fn shown(&self) -> String {
        match self.engine {
            Engine::Sqlite => self.db.clone(),
            Engine::Postgres => kvmroll_core::location::Location::parse(&self.db, Path::new("/"))
                .unwrap()
                .to_string(),
        }
    }

    /// A file in the test's folder.
    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_kvmroll"));
        c.arg("--db")
            .arg(&self.db)
            .env_remove("KVMROLL_DB")
            .env_remove("KVMROLL_DB_READONLY")
            .env_remove("KVMROLL_STAGE")
            .env_remove("PGPASSWORD");
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().unwrap()
    }

    fn run_stdin(&self, args: &[&str], input: &str) -> Output {
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

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "kvmroll {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs SQL statements behind kvmroll's back.
    fn execute(&self, sql: &str) {
        match &self.pg {
            None => rusqlite::Connection::open(&self.db)
                .unwrap()
                .execute_batch(sql)
                .unwrap(),
            Some(pg) => pg_client(&pg.url()).batch_execute(sql).unwrap(),
        }
    }

    /// How many rows `table` holds, read behind kvmroll's back.
    fn count(&self, table: &str) -> i64 {
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
    fn set_schema_version(&self, version: i64) {
        match self.engine {
            Engine::Sqlite => self.execute(&format!("PRAGMA user_version = {version}")),
            Engine::Postgres => self.execute(&format!(
                "UPDATE kvmroll_meta SET value = '{version}' WHERE key = 'schema_version'"
            )),
        }
    }

    /// `attr set VM NAME --value-file FILE`, `value` written to FILE first:
    /// for values larger than one argument may be (128 KiB).
    fn attr_from_file(&self, vm: &str, name: &str, value: &str) -> [String; 6] {
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
    fn state(&self) -> State {
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
    fn refused(&self, args: &[&str], expect: &str) {
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

on_both_engines!(
    unknown_host_or_vm,
    duplicate_names,
    hostile_vm_names,
    relative_or_hostile_cdrom_path,
    malformed_cpu_mode,
    malformed_pinning_and_devices,
    impossible_pinning,
    pruning_events_by_age_and_count,
    booleans,
    bad_disk_and_nic_specs,
    duplicate_mac,
    container_must_be_a_kvm_host,
    a_newer_database_is_refused_untouched,
    resolution_shows_the_winning_scope,
    values_from_files_and_stdin_and_rocks_escaping,
    vm_uuid_is_kept_and_macs_are_unique,
    read_only_mode_refuses_every_write,
    an_impossible_schema_version_is_one_line_not_an_abort,
    a_failed_upgrade_is_one_line,
    db_status_shows_engine_location_schema_and_counts,
    unreachable_container_is_said_plainly_and_marks_the_vm_stale,
    the_database_is_the_flag_then_kvmroll_db_then_kvmroll_conf,
    a_plugin_time_limit_over_the_cap_is_refused,
    fragments_nested_deeper_than_libvirt_takes_are_refused,
    a_huge_libvirt_error_is_cut_to_a_line,
    every_cpuset_of_a_pinning_fragment_is_checked,
    disk_paths_outside_kvm_disk_roots_are_refused_unless_forced,
    disks_grow_and_never_shrink,
    a_removed_vm_says_where_its_images_stay,
    sync_from_moves_a_definition_to_the_new_container,
);

fn unknown_host_or_vm(e: Engine) {
    let f = Fixture::on(e);
    f.refused(&["host", "remove", "nosuch"], "unknown host \"nosuch\"");
    f.refused(&["host", "show", "nosuch"], "unknown host");
    f.refused(&["vm", "show", "nosuch"], "unknown VM \"nosuch\"");
    f.refused(&["vm", "set", "nosuch", "--mem", "10"], "unknown VM");
    f.refused(&["vm", "remove", "nosuch"], "unknown VM");
    f.refused(&["vm", "cdrom", "nosuch", "/a.iso"], "unknown VM");
    f.refused(&["attr", "set", "nosuch", "x", "y"], "unknown host");
    f.refused(&["attr", "list", "nosuch"], "unknown host");
    f.refused(
        &["attr", "set", "--appliance", "nosuch", "x", "y"],
        "unknown appliance",
    );
    f.refused(&["vm", "list", "--container", "nosuch"], "unknown host");
    // A bad name among good ones is refused before libvirt sees any.
    f.refused(&["vm", "sync", "hosted-vm-0-0-0", "nosuch"], "unknown VM");
    f.refused(&["vm", "define", "hosted-vm-0-0-0", "nosuch"], "unknown VM");
}

fn duplicate_names(e: Engine) {
    let f = Fixture::on(e);
    f.refused(
        &["host", "add", "compute-0-0"],
        "host \"compute-0-0\" already exists",
    );
    f.refused(
        &[
            "vm",
            "add",
            "hosted-vm-0-0-0",
            "--container",
            "vm-container-0-0",
        ],
        "already exists",
    );
    f.refused(
        &[
            "vm",
            "add",
            "compute-0-0",
            "--container",
            "vm-container-0-0",
        ],
        "already exists",
    );
}

fn hostile_vm_names(e: Engine) {
    let f = Fixture::on(e);
    for (name, why) in [
        ("a/b", "contains '/'"),
        ("../etc", "contains '/'"),
        ("..", "contains '..'"),
        ("a..b", "contains '..'"),
        ("a b", "white space"),
        ("a\tb", "white space"),
        ("a\u{1}b", "control characters"),
        ("_rf", "start with a letter or digit"),
    ] {
        f.refused(&["vm", "add", name, "--container", "vm-container-0-0"], why);
        f.refused(&["host", "add", name], why);
    }
}

fn relative_or_hostile_cdrom_path(e: Engine) {
    let f = Fixture::on(e);
    f.refused(
        &["vm", "cdrom", "hosted-vm-0-0-0", "rescue.iso"],
        "must be absolute",
    );
    f.refused(
        &["vm", "cdrom", "hosted-vm-0-0-0", "/isos/../etc/shadow"],
        "'..'",
    );
    f.refused(
        &["vm", "cdrom", "hosted-vm-0-0-0", "/isos/a\nb.iso"],
        "control characters",
    );
}

fn malformed_cpu_mode(e: Engine) {
    let f = Fixture::on(e);
    let vm = "hosted-vm-0-0-0";
    f.refused(
        &["attr", "set", vm, "cpu_mode", "passthrough"],
        "unknown mode",
    );
    f.refused(
        &["attr", "set", vm, "cpu_mode", "custom"],
        "needs a CPU model",
    );
    f.refused(
        &["attr", "set", vm, "cpu_mode", "custom: <model>x"],
        "never closed",
    );
    f.refused(
        &[
            "attr",
            "set",
            vm,
            "cpu_mode",
            "custom: <model>x</model></cpu><devices><disk/>",
        ],
        "closes an element the fragment did not open",
    );
    f.refused(
        &[
            "attr",
            "set",
            "--global",
            "cpu_mode",
            "exact: <model>a & b</model>",
        ],
        "malformed XML",
    );
}

fn malformed_pinning_and_devices(e: Engine) {
    let f = Fixture::on(e);
    let vm = "hosted-vm-0-0-0";
    f.refused(
        &["attr", "set", vm, "kvm_cpu_pinning", "pin_some"],
        "not pin_all, pin_auto or a well-formed",
    );
    f.refused(
        &[
            "attr",
            "set",
            vm,
            "kvm_cpu_pinning",
            "<cputune><vcpupin vcpu='0' cpuset='1'/>",
        ],
        "never closed",
    );
    f.refused(
        &["attr", "set", vm, "kvm_cpu_pinning", "</domain><devices/>"],
        "closes an element",
    );
    f.refused(
        &[
            "attr",
            "set",
            vm,
            "kvm_device_0",
            "<hostdev mode='subsystem'>",
        ],
        "never closed",
    );
    f.refused(
        &["attr", "set", vm, "kvm_device_0", "</devices><hostdev/>"],
        "closes an element",
    );
    f.refused(
        &["attr", "set", vm, "kvm_device_0", "<domain/>"],
        "not a libvirt device",
    );
    f.refused(
        &[
            "attr",
            "set",
            vm,
            "kvm_device_1",
            "<watchdog model='i6300esb'/>",
        ],
        "kvm_device_0 is not",
    );
}

fn impossible_pinning(e: Engine) {
    let f = Fixture::on(e);
    f.ok(&[
        "vm",
        "add",
        "wide",
        "--container",
        "vm-container-0-0",
        "--cpus",
        "8",
    ]);
    f.refused(
        &["attr", "set", "wide", "kvm_cpu_pinning", "pin_all"],
        "has only 4 CPUs",
    );
    f.refused(
        &[
            "attr",
            "set",
            "hosted-vm-0-0-0",
            "kvm_cpu_pinning",
            "<cputune><vcpupin vcpu='0' cpuset='7'/></cputune>",
        ],
        "pins to CPU 7 but container \"vm-container-0-0\" has only CPUs 0-3",
    );
    f.refused(
        &[
            "attr",
            "set",
            "hosted-vm-0-0-0",
            "kvm_cpu_pinning",
            "<cputune><vcpupin vcpu='5' cpuset='1'/></cputune>",
        ],
        "names vCPU 5",
    );
    f.ok(&[
        "attr",
        "set",
        "hosted-vm-0-0-0",
        "kvm_cpu_pinning",
        "pin_all",
    ]);
    f.refused(
        &["vm", "set", "hosted-vm-0-0-0", "--cpus", "6"],
        "pin_all needs 6 vCPUs",
    );
    f.refused(
        &["host", "set", "vm-container-0-0", "--cpus", "1"],
        "pin_all needs 2 vCPUs",
    );
    // pin_auto on a full container.
    f.ok(&[
        "attr",
        "set",
        "wide",
        "kvm_cpu_pinning",
        "<cputune><vcpupin vcpu='0' cpuset='2-3'/></cputune>",
    ]);
    f.refused(
        &["attr", "set", "wide", "kvm_cpu_pinning", "pin_auto"],
        "pin_auto needs 8 free CPUs",
    );
}

fn pruning_events_by_age_and_count(e: Engine) {
    let f = Fixture::on(e);
    // Events as the hook records them: two a year old, three from now.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    for (i, t) in [
        now_ms - 365 * 86_400_000,
        now_ms - 364 * 86_400_000,
        now_ms,
        now_ms,
        now_ms,
    ]
    .iter()
    .enumerate()
    {
        f.execute(&format!(
            "INSERT INTO events (time_ms, vm, stage, op, subop, outcome, duration_ms, message)
             VALUES ({t}, 'hosted-vm-0-0-0', 'allocate', 'prepare', 'begin', 'ok', 1, 'event {i}')"
        ));
    }
    let count = || {
        f.ok(&["events", "--limit", "100", "--json"])
            .matches("\"message\"")
            .count()
    };
    assert_eq!(count(), 5);
    // Bad input changes nothing: one line, exit 2.
    for args in [
        &["events", "prune", "--older-than", "0"][..],
        &["events", "prune", "--keep", "some"][..],
        &["events", "prune", "--vm", "x"][..],
    ] {
        let before = f.state();
        let out = f.run(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("kvmroll: "), "{err}");
        assert!(f.state() == before, "{args:?} changed the database");
    }
    f.refused(
        &["attr", "set", "--global", "kvm_events_keep_days", "forever"],
        "kvm_events_keep_days",
    );
    // No argument: the default age, 90 days.
    assert_eq!(
        f.ok(&["events", "prune"]),
        "pruned 2 event(s) older than 90 days\n"
    );
    assert_eq!(count(), 3);
    // By count, and by the attribute.
    assert_eq!(
        f.ok(&["events", "prune", "--keep", "1"]),
        "pruned 2 event(s) beyond the newest 1\n"
    );
    f.ok(&["attr", "set", "--global", "kvm_events_keep_days", "1"]);
    assert_eq!(
        f.ok(&["events", "prune"]),
        "pruned 0 event(s) older than 1 days\n"
    );
    assert_eq!(count(), 1);
}

fn booleans(e: Engine) {
    let f = Fixture::on(e);
    f.refused(
        &[
            "attr",
            "set",
            "hosted-vm-0-0-0",
            "kvm_autostart",
            "sometimes",
        ],
        "is not a boolean",
    );
    f.refused(
        &["attr", "set", "compute-0-0", "kvm", "yes please"],
        "is not a boolean",
    );
    f.ok(&["attr", "set", "hosted-vm-0-0-0", "kvm_autostart", "yes"]);
    assert_eq!(
        f.ok(&["attr", "get", "hosted-vm-0-0-0", "kvm_autostart"]),
        "true\n"
    );
}

fn bad_disk_and_nic_specs(e: Engine) {
    let f = Fixture::on(e);
    for spec in [
        "file:relative.img,vda,virtio",
        "nfs:/a,vda,virtio",
        "file:/a,vda",
        "file:/a,vda,virtio,0",
    ] {
        f.refused(
            &[
                "vm",
                "add",
                "new",
                "--container",
                "vm-container-0-0",
                "--disk",
                spec,
            ],
            "invalid disk spec",
        );
        f.refused(
            &["vm", "disk", "add", "hosted-vm-0-0-0", spec],
            "invalid disk spec",
        );
    }
    for spec in [
        "br0",
        "bridge:",
        "bridge:br0,vlan=9999",
        "bridge:br0,mac=01:02:03:04:05:06",
        "bridge:br0,x=1",
    ] {
        f.refused(
            &[
                "vm",
                "add",
                "new",
                "--container",
                "vm-container-0-0",
                "--nic",
                spec,
            ],
            "invalid nic spec",
        );
    }
}

fn duplicate_mac(e: Engine) {
    let f = Fixture::on(e);
    f.ok(&[
        "vm",
        "nic",
        "add",
        "hosted-vm-0-0-0",
        "bridge:br0,mac=52:54:00:aa:00:01",
    ]);
    f.refused(
        &[
            "vm",
            "add",
            "new",
            "--container",
            "vm-container-0-0",
            "--nic",
            "bridge:br0,mac=52:54:00:AA:00:01",
        ],
        "MAC 52:54:00:aa:00:01 is already used",
    );
    f.refused(
        &[
            "vm",
            "nic",
            "add",
            "hosted-vm-0-0-0",
            "bridge:br1,mac=52:54:00:aa:00:01",
        ],
        "already used",
    );
}

fn container_must_be_a_kvm_host(e: Engine) {
    let f = Fixture::on(e);
    f.refused(
        &["vm", "add", "new", "--container", "nowhere"],
        "unknown host \"nowhere\"",
    );
    f.refused(
        &["vm", "add", "new", "--container", "compute-0-0"],
        "is not a VM container",
    );
    f.refused(
        &["vm", "add", "new", "--container", "hosted-vm-0-0-0"],
        "is not a VM container",
    );
    f.refused(
        &["vm", "set", "hosted-vm-0-0-0", "--container", "compute-0-0"],
        "is not a VM container",
    );
    // kvm=true on a compute host makes it a container, as in Rocks.
    f.ok(&["attr", "set", "compute-0-0", "kvm", "true"]);
    f.ok(&["vm", "add", "new", "--container", "compute-0-0"]);
    f.refused(
        &["attr", "set", "compute-0-0", "kvm", "false"],
        "still holds 1 VM",
    );
    f.refused(&["host", "remove", "vm-container-0-0"], "still holds 1 VM");
    f.refused(&["host", "remove", "hosted-vm-0-0-0"], "is a VM");
}

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

fn resolution_shows_the_winning_scope(e: Engine) {
    let f = Fixture::on(e);
    let vm = "hosted-vm-0-0-0";
    f.ok(&["attr", "set", "--global", "x", "global"]);
    assert_eq!(f.ok(&["attr", "get", vm, "x"]), "global\n");
    f.ok(&["attr", "set", "--os", "linux", "x", "os"]);
    assert_eq!(f.ok(&["attr", "get", vm, "x"]), "os\n");
    f.ok(&["attr", "set", "--appliance", "hosted-vm", "x", "appliance"]);
    assert_eq!(f.ok(&["attr", "get", vm, "x"]), "appliance\n");
    f.ok(&["attr", "set", "--rack", "0", "x", "rack"]);
    assert_eq!(f.ok(&["attr", "get", vm, "x"]), "rack\n");
    f.ok(&["attr", "set", vm, "x", "host"]);
    let list = f.ok(&["attr", "list", vm]);
    let line = list.lines().find(|l| l.starts_with("x ")).unwrap();
    assert_eq!(
        line.split_whitespace().collect::<Vec<_>>(),
        ["x", "host:hosted-vm-0-0-0", "host"]
    );
    f.ok(&["attr", "rm", vm, "x"]);
    let json: serde_json::Value =
        serde_json::from_str(&f.ok(&["attr", "list", vm, "--json"])).unwrap();
    let x = json
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "x")
        .unwrap();
    assert_eq!(
        (x["value"].as_str(), x["scope"]["scope"].as_str()),
        (Some("rack"), Some("rack"))
    );
    // Unset: exit 1, nothing printed.
    let out = f.run(&["attr", "get", vm, "nosuch"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty() && out.stderr.is_empty());
    f.refused(
        &["attr", "rm", vm, "nosuch"],
        "attribute nosuch is not set on host:hosted-vm-0-0-0",
    );
}

fn values_from_files_and_stdin_and_rocks_escaping(e: Engine) {
    let f = Fixture::on(e);
    let vm = "hosted-vm-0-0-0";
    let file = f.file("gpu.xml");
    std::fs::write(
        &file,
        "<hostdev mode='subsystem' type='pci' managed='yes'>\n  <source><address domain='0x0000' bus='0x03' slot='0x00' function='0x0'/></source>\n</hostdev>\n",
    )
    .unwrap();
    f.ok(&[
        "attr",
        "set",
        vm,
        "kvm_device_0",
        "--value-file",
        file.to_str().unwrap(),
    ]);
    let got = f.ok(&["attr", "get", vm, "kvm_device_0"]);
    assert!(
        got.starts_with("<hostdev") && got.ends_with("</hostdev>\n"),
        "{got}"
    );
    let out = f.run_stdin(
        &["attr", "set", vm, "kvm_cpu_pinning", "-"],
        "&lt;cputune&gt;&lt;vcpupin vcpu='0' cpuset='3'/&gt;&lt;/cputune&gt;\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        f.ok(&["attr", "get", vm, "kvm_cpu_pinning"]),
        "<cputune><vcpupin vcpu='0' cpuset='3'/></cputune>\n"
    );
    f.refused(
        &[
            "attr",
            "set",
            vm,
            "kvm_device_1",
            "--value-file",
            "/nonexistent/x.xml",
        ],
        "cannot read value file",
    );
}

fn vm_uuid_is_kept_and_macs_are_unique(e: Engine) {
    let f = Fixture::on(e);
    let show = |f: &Fixture| -> serde_json::Value {
        serde_json::from_str(&f.ok(&["vm", "show", "hosted-vm-0-0-0", "--json"])).unwrap()
    };
    let uuid = show(&f)["uuid"].as_str().unwrap().to_string();
    assert_eq!(uuid.len(), 36);
    f.ok(&[
        "vm",
        "set",
        "hosted-vm-0-0-0",
        "--mem",
        "4096",
        "--cpus",
        "3",
    ]);
    f.ok(&["vm", "cdrom", "hosted-vm-0-0-0", "/isos/a.iso"]);
    let v = show(&f);
    assert_eq!(v["uuid"], uuid.as_str());
    assert_eq!(
        (v["memory_mib"].as_u64(), v["vcpus"].as_u64()),
        (Some(4096), Some(3))
    );
    assert_eq!(v["cdrom"], "/isos/a.iso");
    f.ok(&["vm", "cdrom", "hosted-vm-0-0-0", "none"]);
    assert!(show(&f)["cdrom"].is_null());
    f.ok(&[
        "vm",
        "add",
        "many",
        "--container",
        "vm-container-0-0",
        "--nic",
        "bridge:br0",
        "--nic",
        "bridge:br1",
        "--nic",
        "direct:eth0,vlan=5",
    ]);
    let list: serde_json::Value = serde_json::from_str(&f.ok(&["vm", "list", "--json"])).unwrap();
    let macs: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|v| v["nics"].as_array().unwrap())
        .map(|n| n["mac"].as_str().unwrap())
        .collect();
    assert_eq!(macs.len(), 3);
    let unique: std::collections::BTreeSet<_> = macs.iter().collect();
    assert_eq!(unique.len(), 3);
    assert!(macs.iter().all(|m| m.starts_with("52:54:00:")));
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
    let out = kvmroll(&["appliance", "list"]);
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "compute\nfrontend\nhosted-vm\nlogin\nvm-container\n"
    );
}

/// Runs `kvmroll --db DB ARGS` outside any fixture.
fn kvmroll_at(db: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kvmroll"))
        .arg("--db")
        .arg(db)
        .args(args)
        .env_remove("KVMROLL_DB")
        .env_remove("KVMROLL_DB_READONLY")
        .env_remove("KVMROLL_STAGE")
        .output()
        .unwrap()
}

/// Asserts `out` is a refusal: status 1, one line holding `expect`, nothing on stdout.
fn assert_refused(out: &Output, expect: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "not one line: {err}");
    assert!(err.contains(expect), "{err:?} lacks {expect:?}");
    assert!(out.stdout.is_empty());
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

fn unreachable_container_is_said_plainly_and_marks_the_vm_stale(e: Engine) {
    let f = Fixture::on(e);
    f.ok(&[
        "attr",
        "set",
        "vm-container-0-0",
        "libvirt_uri",
        "qemu+unix:///system?socket=/nonexistent/sock",
    ]);
    let out = f.run(&["vm", "set", "hosted-vm-0-0-0", "--mem", "512"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("was not refreshed") && err.contains("kvmroll vm define hosted-vm-0-0-0"),
        "{err}"
    );
    let v: serde_json::Value =
        serde_json::from_str(&f.ok(&["vm", "show", "hosted-vm-0-0-0", "--json"])).unwrap();
    assert_eq!(
        (v["memory_mib"].as_u64(), v["stale"].as_bool()),
        (Some(512), Some(true))
    );
    // Changes that leave the XML alone do not call libvirt at all.
    f.ok(&["attr", "set", "hosted-vm-0-0-0", "note", "unrelated"]);
}

#[test]
fn the_event_pruning_units_run_prune_daily() {
    // systemd-analyze verify runs on every unit in tests/e2e/host.rs.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../systemd");
    let service = std::fs::read_to_string(dir.join("kvmroll-events-prune.service")).unwrap();
    let timer = std::fs::read_to_string(dir.join("kvmroll-events-prune.timer")).unwrap();
    assert!(service.contains("ExecStart=/usr/bin/kvmroll --no-sync events prune"));
    assert!(timer.contains("OnCalendar=daily") && timer.contains("WantedBy=timers.target"));
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

fn a_plugin_time_limit_over_the_cap_is_refused(e: Engine) {
    let f = Fixture::on(e);
    f.refused(
        &[
            "attr",
            "set",
            "hosted-vm-0-0-0",
            "kvm_plugin_timeout_allocate",
            "4294967295",
        ],
        "over the cap of 3600 s",
    );
    f.ok(&[
        "attr",
        "set",
        "hosted-vm-0-0-0",
        "kvm_plugin_timeout_allocate",
        "3600",
    ]);
}

fn nested(depth: usize) -> String {
    format!("{}{}", "<a>".repeat(depth), "</a>".repeat(depth))
}

/// Regression: a fragment 300 levels deep was stored and libvirt then
/// refused the definition ("Excessive depth in document: 256"); 120,000
/// levels overflowed the CLI's stack (exit 134, no message).
fn fragments_nested_deeper_than_libvirt_takes_are_refused(e: Engine) {
    let f = Fixture::on(e);
    let vm = "hosted-vm-0-0-0";
    let deep = format!("<hostdev>{}</hostdev>", nested(300));
    f.refused(
        &["attr", "set", vm, "kvm_device_0", &deep],
        "kvm_device_0: not a well-formed XML fragment: nested deeper than 254 elements \
         (256 with the 2 of the domain around it)",
    );
    let tune = format!("<cputune>{}</cputune>", nested(300));
    f.refused(
        &["attr", "set", vm, "kvm_cpu_pinning", &tune],
        "nested deeper than 255 elements",
    );
    f.refused(
        &[
            "attr",
            "set",
            vm,
            "cpu_mode",
            &format!("custom: {}", nested(300)),
        ],
        "nested deeper than 254 elements",
    );
    let deepest = format!("<hostdev>{}</hostdev>", nested(120_000));
    let args = f.attr_from_file(vm, "kvm_device_0", &deepest);
    f.refused(
        &args.each_ref().map(String::as_str),
        "nested deeper than 254 elements",
    );
    // The deepest that libvirt takes is kept.
    let ok = format!("<hostdev>{}</hostdev>", nested(253));
    f.ok(&["attr", "set", vm, "kvm_device_0", &ok]);
}

/// Regression: a `vm define` that libvirt refused echoed libvirt's whole
/// error, 700 KB over many lines.
fn a_huge_libvirt_error_is_cut_to_a_line(e: Engine) {
    let f = Fixture::on(e);
    let vm = "hosted-vm-0-0-0";
    // libvirt quotes the model it does not know, newlines and all.
    let model = "A&#10;".repeat(120_000);
    let watchdog = format!("<watchdog model='{model}'/>");
    f.ok(&f
        .attr_from_file(vm, "kvm_device_0", &watchdog)
        .each_ref()
        .map(String::as_str));
    let out = f.run(&["vm", "define", vm]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.len() < 3 * kvmroll_core::text::MAX_BYTES,
        "{} bytes",
        err.len()
    );
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert!(lines[0].contains("unknown watchdog model"), "{err}");
    assert!(lines[0].ends_with("bytes in all)"), "{err}");
    assert_eq!(lines[1], "kvmroll: 1 of 1 VM(s) could not be defined");
}

/// Regression: `kvm_cpu_pinning` was checked for `<vcpupin>` only.
fn every_cpuset_of_a_pinning_fragment_is_checked(e: Engine) {
    let f = Fixture::on(e);
    let vm = "hosted-vm-0-0-0";
    for (fragment, why) in [
        (
            "<cputune><emulatorpin cpuset='zzz'/></cputune>",
            "cpuset \"zzz\": \"zzz\" is not a CPU number",
        ),
        (
            "<cputune><emulatorpin cpuset='6'/></cputune>",
            "kvm_cpu_pinning's <emulatorpin> pins to CPU 6 but container \"vm-container-0-0\" \
             has only CPUs 0-3",
        ),
        (
            "<iothreads>1</iothreads><cputune><iothreadpin iothread='1' cpuset='2-5'/></cputune>",
            "<iothreadpin> pins to CPU 4",
        ),
        (
            "<cputune><vcpupin vcpu='0' cpuset='1'/></cputune><name>evil</name>",
            "<name> is not for this attribute, whose XML holds only <cputune>, <numatune>, \
             <iothreads>, <iothreadids>",
        ),
        (
            "<uuid>0f5a2b3c-1d2e-4f50-8a6b-7c8d9e0f1a2b</uuid>",
            "<uuid> is not for this attribute",
        ),
    ] {
        f.refused(&["attr", "set", vm, "kvm_cpu_pinning", fragment], why);
    }
    f.ok(&[
        "attr",
        "set",
        vm,
        "kvm_cpu_pinning",
        "<cputune><vcpupin vcpu='1' cpuset='3'/><emulatorpin cpuset='0-1'/></cputune>",
    ]);
    // libvirt (its test driver) takes what was accepted.
    f.ok(&["vm", "define", vm]);
}

fn disk_paths_outside_kvm_disk_roots_are_refused_unless_forced(e: Engine) {
    let f = Fixture::on(e);
    let add = |spec: &str, force: bool| -> Vec<String> {
        let mut a: Vec<String> = ["vm", "add", "nd-0", "--container", "vm-container-0-0"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        a.extend(["--disk".to_string(), spec.to_string()]);
        if force {
            a.push("--force".into());
        }
        a
    };
    fn args(a: &[String]) -> Vec<&str> {
        a.iter().map(String::as_str).collect()
    }
    // The first try: a path under /tmp.
    let spec = "qcow2:/tmp/nd/nd-0.qcow2,vda,virtio,2";
    f.refused(&args(&add(spec, false)), "kvm_disk_roots");
    f.refused(
        &["vm", "disk", "add", "hosted-vm-0-0-0", spec],
        "kvm_disk_roots",
    );
    // Lexically inside is not enough with `..`; that is refused as a path.
    f.refused(
        &args(&add(
            "qcow2:/var/lib/libvirt/images/../../x.qcow2,vda,virtio,2",
            false,
        )),
        "..",
    );
    // --force takes it, to be used as it is.
    f.ok(&args(&add(spec, true)));
    f.ok(&["vm", "remove", "nd-0"]);
    // The default roots, and block devices anywhere, are fine.
    f.ok(&args(&add(
        "qcow2:/var/lib/libvirt/images/nd-0.qcow2,vda,virtio,2",
        false,
    )));
    f.ok(&["vm", "disk", "add", "nd-0", "block:/dev/sdb,vdb,virtio"]);
    f.ok(&[
        "vm",
        "disk",
        "add",
        "nd-0",
        "raw:/state/partition1/kvm/disks/nd-0.img,vdc,virtio,1",
    ]);
    // A VM's own roots.
    f.refused(
        &["attr", "set", "nd-0", "kvm_disk_roots", "/"],
        "kvm_disk_roots",
    );
    f.refused(
        &["attr", "set", "nd-0", "kvm_disk_roots", "srv/vm"],
        "kvm_disk_roots",
    );
    f.ok(&["attr", "set", "nd-0", "kvm_disk_roots", "/srv/vm"]);
    f.ok(&[
        "vm",
        "disk",
        "add",
        "nd-0",
        "raw:/srv/vm/nd-0.img,vdd,virtio,1",
    ]);
    f.refused(
        &[
            "vm",
            "disk",
            "add",
            "nd-0",
            "raw:/var/lib/libvirt/images/x.img,vde,virtio,1",
        ],
        "/srv/vm",
    );
}

fn disks_grow_and_never_shrink(e: Engine) {
    let f = Fixture::on(e);
    f.ok(&[
        "vm",
        "disk",
        "add",
        "hosted-vm-0-0-0",
        "qcow2:/var/lib/libvirt/images/g.qcow2,vda,virtio,2",
    ]);
    f.ok(&[
        "vm",
        "disk",
        "add",
        "hosted-vm-0-0-0",
        "block:/dev/sdb,vdb,virtio",
    ]);
    f.ok(&[
        "vm",
        "disk",
        "add",
        "hosted-vm-0-0-0",
        "raw:/tmp/forced.img,vdc,virtio,1",
        "--force",
    ]);
    f.refused(
        &["vm", "disk", "resize", "hosted-vm-0-0-0", "vda", "1"],
        "never shrinks",
    );
    f.refused(
        &["vm", "disk", "resize", "hosted-vm-0-0-0", "vdb", "10"],
        "block device",
    );
    f.refused(
        &["vm", "disk", "resize", "hosted-vm-0-0-0", "vdc", "10"],
        "kvm_disk_roots",
    );
    f.refused(
        &["vm", "disk", "resize", "hosted-vm-0-0-0", "vdz", "10"],
        "no disk vdz",
    );
    f.refused(&["vm", "disk", "resize", "nobody", "vda", "10"], "nobody");
    // The test driver has no such domain running: it grows at its next start.
    let out = f.run(&["vm", "disk", "resize", "hosted-vm-0-0-0", "vda", "5"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("grows to 5 GiB at its next start"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let show = f.ok(&["vm", "show", "hosted-vm-0-0-0"]);
    assert!(
        show.contains("qcow2:/var/lib/libvirt/images/g.qcow2,vda,virtio,5"),
        "{show}"
    );
    // The grow waits for the next start; a disk removed takes it along, so
    // the same path added again is not grown unasked.
    let grows = || f.count("disk_grows");
    assert_eq!(grows(), 1);
    f.ok(&["vm", "disk", "remove", "hosted-vm-0-0-0", "vda"]);
    assert_eq!(grows(), 0);
}

fn a_removed_vm_says_where_its_images_stay(e: Engine) {
    let f = Fixture::on(e);
    f.ok(&[
        "vm",
        "disk",
        "add",
        "hosted-vm-0-0-0",
        "qcow2:/var/lib/libvirt/images/r.qcow2,vda,virtio,2",
    ]);
    f.refused(
        &[
            "--no-sync",
            "vm",
            "remove",
            "hosted-vm-0-0-0",
            "--delete-disks",
        ],
        "--delete-disks",
    );
    let out = f.run(&["vm", "remove", "hosted-vm-0-0-0"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("images stay on vm-container-0-0: /var/lib/libvirt/images/r.qcow2"),
        "{err}"
    );
}

/// A PostgreSQL role made by a test, dropped (after the databases it has
/// privileges in) when it goes.
struct PgRole {
    server: String,
    name: String,
}

impl PgRole {
    fn new(tag: &str) -> PgRole {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        PgRole {
            server: pg_server().expect("KVMROLL_TEST_PG"),
            name: format!(
                "kvmroll_{tag}_{}_{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ),
        }
    }
}

impl Drop for PgRole {
    fn drop(&mut self) {
        let _ =
            pg_client(&self.server).batch_execute(&format!("DROP ROLE IF EXISTS {}", self.name));
    }
}

/// `postgresql://USER:PASSWORD@HOST:PORT/DB` from the test server's URL.
fn as_user(url: &str, user: &str, password: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    format!("{scheme}://{user}:{password}@{host}")
}

/// Regression: `kvmroll db init` on PostgreSQL printed `created
/// postgresql://postgres:PASSWORD@...`. It shows the location without the
/// password, and with --container-role makes the role containers log in as,
/// its password read from a file only its owner can read.
#[test]
fn db_init_on_postgresql_shows_no_password_and_makes_the_containers_role() {
    if pg_server().is_none() {
        return;
    }
    let role = PgRole::new("ct");
    let f = Fixture::empty(Engine::Postgres);
    let server_password = f.db.split_once("://").unwrap().1.split_once('@').unwrap().0;
    let server_password = server_password.split_once(':').unwrap().1.to_string();
    let pw = f.file("container.pw");
    std::fs::write(&pw, "c0ntainer s3cret\n").unwrap();
    let pw_arg = pw.to_str().unwrap();
    let init = ["db", "init", "--container-role", &role.name];
    let with_pw = [&init[..], &["--container-password-file", pw_arg]].concat();

    // Refused before anything is made: a password file others can read, an
    // empty one, a bad role name; the database stays empty.
    std::fs::set_permissions(&pw, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let empty = f.state();
    f.refused(&with_pw, "group or others have access to it");
    std::fs::set_permissions(&pw, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let blank = f.file("blank.pw");
    std::fs::write(&blank, "\n").unwrap();
    std::os::unix::fs::chown(&blank, None, None).unwrap();
    std::fs::set_permissions(&blank, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    f.refused(
        &[
            &init[..],
            &["--container-password-file", blank.to_str().unwrap()],
        ]
        .concat(),
        "holds no password",
    );
    f.refused(
        &["db", "init", "--container-role", "pg_x"],
        "a role name is",
    );
    f.refused(&["db", "init", "--container-role", "a;b"], "a role name is");
    assert!(f.state() == empty, "a refused init made something");
    // The password file needs the role.
    let out = f.run(&["db", "init", "--container-password-file", pw_arg]);
    assert_eq!(out.status.code(), Some(2));

    let out = f.ok(&with_pw);
    assert!(
        out.starts_with(&format!("created {}: schema 4\n", f.shown())),
        "{out}"
    );
    assert!(
        out.contains(&format!("role {} for VM containers", role.name)),
        "{out}"
    );
    assert!(
        !out.contains(&server_password) && !out.contains("s3cret"),
        "{out}"
    );
    assert!(!f.shown().contains(&server_password));
    // Again: nothing to do, and the role kept.
    let again = f.ok(&with_pw);
    assert!(again.contains("nothing to do"), "{again}");

    // The role logs in with that password, reads the cluster, records what
    // plugins write, and may not add a host.
    f.ok(&[
        "--no-sync",
        "host",
        "add",
        "c",
        "--appliance",
        "vm-container",
    ]);
    f.ok(&[
        "--no-sync",
        "vm",
        "add",
        "v",
        "--container",
        "c",
        "--mem",
        "64",
    ]);
    let container = as_user(&f.db, &role.name, "c0ntainer%20s3cret");
    let as_container = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_kvmroll"))
            .args(["--no-sync", "--db", &container])
            .args(args)
            .env_remove("KVMROLL_DB")
            .env_remove("KVMROLL_DB_READONLY")
            .env_remove("KVMROLL_STAGE")
            .env_remove("PGPASSWORD")
            .output()
            .unwrap()
    };
    let list = as_container(&["vm", "list"]);
    assert!(
        list.status.success(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    assert!(String::from_utf8_lossy(&list.stdout).contains("v "));
    let set = as_container(&["vm", "set", "v", "--mem", "128"]);
    assert!(
        set.status.success(),
        "{}",
        String::from_utf8_lossy(&set.stderr)
    );
    let add = as_container(&["host", "add", "intruder"]);
    assert_refused(&add, "permission denied");
    let wrong = as_user(&f.db, &role.name, "wrong");
    let out = Command::new(env!("CARGO_BIN_EXE_kvmroll"))
        .args(["--db", &wrong, "vm", "list"])
        .env_remove("PGPASSWORD")
        .output()
        .unwrap();
    assert_refused(&out, &format!("refused the password of user {}", role.name));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("wrong"));
}

#[test]
fn a_containers_role_is_refused_on_sqlite_having_made_nothing() {
    let f = Fixture::empty(Engine::Sqlite);
    let out = f.run(&["db", "init", "--container-role"]);
    assert_refused(
        &out,
        "is a SQLite file; a role for containers is made in a PostgreSQL database",
    );
    assert!(!Path::new(&f.db).exists());
}

/// `db copy`: a cluster from SQLite to PostgreSQL and back, each copy
/// checked row for row and shown without passwords; a target that holds a
/// cluster, a missing source and the source itself are refused in one line,
/// having changed nothing.
#[test]
fn db_copy_takes_a_cluster_from_sqlite_to_postgresql_and_back() {
    let sqlite = Fixture::on(Engine::Sqlite);
    sqlite.ok(&["attr", "set", "--global", "kvm_graphics", "none"]);
    sqlite.ok(&[
        "vm",
        "disk",
        "add",
        "hosted-vm-0-0-0",
        "qcow2:/var/lib/libvirt/images/c.qcow2,vda,virtio,2",
    ]);
    sqlite.ok(&["vm", "nic", "add", "hosted-vm-0-0-0", "bridge:br0,vlan=7"]);
    sqlite.execute(
        "INSERT INTO events (time_ms, vm, stage, op, subop, outcome, duration_ms, message)
         VALUES (1, 'hosted-vm-0-0-0', 'allocate', 'prepare', 'begin', 'ok', 1, 'copied')",
    );
    let copy = |from: &str, to: &str| {
        Command::new(env!("CARGO_BIN_EXE_kvmroll"))
            .args(["db", "copy", from, to])
            .env_remove("KVMROLL_DB")
            .env_remove("KVMROLL_DB_READONLY")
            .env_remove("PGPASSWORD")
            .output()
            .unwrap()
    };
    let show = |f: &Fixture| {
        [
            f.ok(&["vm", "show", "hosted-vm-0-0-0", "--json"]),
            f.ok(&["host", "list"]),
            f.ok(&["attr", "list", "hosted-vm-0-0-0"]),
            f.ok(&["events", "--json"]),
        ]
    };
    let missing = sqlite.file("missing.db");
    assert_refused(
        &copy(
            missing.to_str().unwrap(),
            sqlite.file("x.db").to_str().unwrap(),
        ),
        "does not exist",
    );
    assert!(!sqlite.file("x.db").exists());
    assert_refused(&copy(&sqlite.db, &sqlite.db), "are the same database");

    let back = Fixture::empty(Engine::Sqlite);
    if pg_server().is_none() {
        // SQLite to SQLite, at least.
        let out = copy(&sqlite.db, &back.db);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(show(&back), show(&sqlite));
        return;
    }
    let pg = Fixture::empty(Engine::Postgres);
    let out = copy(&sqlite.db, &pg.db);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        said,
        format!(
            "copied {} to {}: 2 hosts, 1 VM, 3 attributes, 1 event (14 rows), checked row for row\n",
            sqlite.db,
            pg.shown()
        )
    );
    assert_eq!(show(&pg), show(&sqlite));
    let out = copy(&pg.db, &back.db);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(show(&back), show(&sqlite));

    // Into a database that holds a cluster: refused, unchanged.
    let before = pg.state();
    assert_refused(
        &copy(&back.db, &pg.db),
        "is not empty (it holds 2 hosts, 1 VM, 1 event, 3 attributes)",
    );
    assert!(pg.state() == before);
    let before = back.state();
    assert_refused(&copy(&pg.db, &back.db), "is not empty");
    assert!(back.state() == before);
}

/// A libvirt test-driver node file holding `vm`, running or shut off.
fn test_node(f: &Fixture, file: &str, vm: &str, running: bool) -> String {
    let state = if running { 1 } else { 5 };
    let path = f.file(file);
    std::fs::write(
        &path,
        format!(
            "<node><domain type='test' xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>\
             <name>{vm}</name><memory>65536</memory><os><type>hvm</type></os>\
             <test:runstate>{state}</test:runstate></domain></node>"
        ),
    )
    .unwrap();
    format!("test://{}", path.display())
}

/// `vm sync VM --from OLD` (the hook's refresh after an allocate plugin
/// moved a VM): the definition goes from OLD's libvirt to the VM's new
/// container; a VM running on OLD stays there, said in one line.
fn sync_from_moves_a_definition_to_the_new_container(e: Engine) {
    let f = Fixture::on(e);
    let vm = "hosted-vm-0-0-0";
    f.ok(&[
        "host",
        "add",
        "vm-container-0-1",
        "--appliance",
        "vm-container",
        "--cpus",
        "4",
    ]);
    f.ok(&[
        "--no-sync",
        "vm",
        "set",
        vm,
        "--container",
        "vm-container-0-1",
    ]);
    let old = test_node(&f, "old.xml", vm, false);
    f.ok(&["attr", "set", "vm-container-0-0", "libvirt_uri", &old]);
    let out = f.run(&["vm", "sync", vm, "--from", "vm-container-0-0"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(
        err.trim(),
        format!(
            "kvmroll: VM {vm}: moved from vm-container-0-0 to vm-container-0-1 (test:///default)"
        )
    );
    let old = test_node(&f, "old.xml", vm, true);
    f.ok(&["attr", "set", "vm-container-0-0", "libvirt_uri", &old]);
    let out = f.run(&["vm", "sync", vm, "--from", "vm-container-0-0"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.lines().next().unwrap_or_default().ends_with(
            "cannot move it from vm-container-0-0 to vm-container-0-1: it runs on vm-container-0-0"
        ),
        "{err}"
    );
    // Where the old container does not have it, a plain sync; an unknown
    // container is refused.
    f.ok(&[
        "attr",
        "set",
        "vm-container-0-0",
        "libvirt_uri",
        "test:///default",
    ]);
    let out = f.run(&["vm", "sync", vm, "--from", "vm-container-0-0"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not defined in libvirt"));
    f.refused(
        &["vm", "sync", vm, "--from", "nosuch"],
        "unknown host \"nosuch\"",
    );
}

/// PostgreSQL's twin of the SQLite file tests above: reads, and writes
/// that need a cluster, make no tables in an empty database; a first write
/// that a new cluster refuses makes none either; `db init` makes them, says
/// there is nothing to do the second time, and refuses a database that
/// holds tables of others.
#[test]
fn a_postgresql_database_gets_kvmroll_tables_only_on_purpose() {
    if pg_server().is_none() {
        return;
    }
    let f = Fixture::empty(Engine::Postgres);
    let empty = f.state();
    for args in [
        &["host", "list"][..],
        &["vm", "show", "v"],
        &["db", "status"],
        &["events"],
        &["vm", "set", "v", "--mem", "512"],
        &["events", "prune", "--keep", "1"],
    ] {
        f.refused(
            args,
            "holds no kvmroll schema yet; `kvmroll db init` makes it",
        );
    }
    f.refused(
        &["host", "add", "h", "--appliance", "nope"],
        "unknown appliance",
    );
    assert!(f.state() == empty, "made something");
    assert!(f.ok(&["db", "init"]).starts_with("created "));
    assert!(f.ok(&["db", "init"]).contains("nothing to do"));

    let other = Fixture::empty(Engine::Postgres);
    other.execute("CREATE TABLE theirs (x int); INSERT INTO theirs VALUES (1);");
    let before = other.state();
    other.refused(&["db", "init"], "is not a kvmroll database");
    other.refused(
        &["attr", "set", "--global", "x", "1"],
        "is not a kvmroll database",
    );
    assert!(other.state() == before);
}

/// On a container, `kvmroll events` hands the events its hook spooled to
/// the database first (the database of this host's kvmroll.conf only),
/// shows which container each happened on, and picks one with --container.
#[test]
fn events_forward_this_hosts_spool_and_filter_by_container() {
    use kvmroll_core::events::{Event, Outcome};
    let f = Fixture::on(Engine::Sqlite);
    let dir = f.file("x").parent().unwrap().to_path_buf();
    let conf = dir.join("kvmroll.conf");
    std::fs::write(&conf, format!("db = {}\nhost = vm-container-0-0\n", f.db)).unwrap();
    let event = |container: &str, message: &str| Event {
        id: 0,
        time_ms: kvmroll_core::now_ms(),
        vm: "hosted-vm-0-0-0".into(),
        stage: "preboot".into(),
        op: "start".into(),
        subop: "begin".into(),
        plugin: None,
        outcome: Outcome::Ok,
        status: None,
        duration_ms: 1,
        message: message.into(),
        container: Some(container.into()),
    };
    let spool = kvmroll_core::spool::Spool::new(dir.join("spool"), "vm-container-0-0");
    spool
        .write(&[
            event("vm-container-0-0", "here"),
            event("elsewhere", "there"),
        ])
        .unwrap();
    let events = |extra: &[&str]| {
        let out = f
            .cmd()
            .args(["events", "--json"])
            .args(extra)
            .env("KVMROLL_CONF", &conf)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        json.as_array()
            .unwrap()
            .iter()
            .map(|e| e["message"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(events(&[]), ["here", "there"]);
    assert!(spool.pending().unwrap().is_empty());
    assert_eq!(events(&["--container", "elsewhere"]), ["there"]);
    // Shown once, though asked twice.
    assert_eq!(events(&[]).len(), 2);
    let table = f.ok(&["events"]);
    assert!(
        table.lines().next().unwrap().contains("CONTAINER"),
        "{table}"
    );
}
