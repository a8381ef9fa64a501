//! PostgreSQL only: the containers' role, db copy between engines, and
//! kvmroll's tables in a shared database.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::common::*;
use crate::fixture::*;

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

    refuse_bad_container_roles(&f, &role.name, &pw);

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

    the_containers_role_logs_in(&f, &role.name);
}

/// `db init --container-role` refused before anything is made: a password
/// file others can read, an empty one, a bad role name, a password file
/// without a role; the database stays empty.
fn refuse_bad_container_roles(f: &Fixture, role: &str, pw: &Path) {
    let pw_arg = pw.to_str().unwrap();
    let init = ["db", "init", "--container-role", role];
    let with_pw = [&init[..], &["--container-password-file", pw_arg]].concat();
    std::fs::set_permissions(pw, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let empty = f.state();
    f.refused(&with_pw, "group or others have access to it");
    std::fs::set_permissions(pw, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
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
}

/// The role `db init` made logs in with its password, reads the cluster,
/// records what plugins write, and may not add a host; a wrong password is
/// refused without being shown.
fn the_containers_role_logs_in(f: &Fixture, role: &str) {
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
    let container = as_user(&f.db, role, "c0ntainer%20s3cret");
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
    let wrong = as_user(&f.db, role, "wrong");
    let out = Command::new(env!("CARGO_BIN_EXE_kvmroll"))
        .args(["--db", &wrong, "vm", "list"])
        .env_remove("PGPASSWORD")
        .output()
        .unwrap();
    assert_refused(&out, &format!("refused the password of user {}", role));
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

/// Runs `kvmroll db copy FROM TO`.
fn db_copy(from: &str, to: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kvmroll"))
        .args(["db", "copy", from, to])
        .env_remove("KVMROLL_DB")
        .env_remove("KVMROLL_DB_READONLY")
        .env_remove("PGPASSWORD")
        .output()
        .unwrap()
}

/// What a copy must carry over, as `kvmroll` shows it.
fn shown(f: &Fixture) -> [String; 4] {
    [
        f.ok(&["vm", "show", "hosted-vm-0-0-0", "--json"]),
        f.ok(&["host", "list"]),
        f.ok(&["attr", "list", "hosted-vm-0-0-0"]),
        f.ok(&["events", "--json"]),
    ]
}

/// A copy into a database that holds a cluster: refused, unchanged.
fn copies_into_a_cluster_are_refused(pg: &Fixture, back: &Fixture) {
    let before = pg.state();
    assert_refused(
        &db_copy(&back.db, &pg.db),
        "is not empty (it holds 2 hosts, 1 VM, 1 event, 3 attributes)",
    );
    assert!(pg.state() == before);
    let before = back.state();
    assert_refused(&db_copy(&pg.db, &back.db), "is not empty");
    assert!(back.state() == before);
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
    let missing = sqlite.file("missing.db");
    assert_refused(
        &db_copy(
            missing.to_str().unwrap(),
            sqlite.file("x.db").to_str().unwrap(),
        ),
        "does not exist",
    );
    assert!(!sqlite.file("x.db").exists());
    assert_refused(&db_copy(&sqlite.db, &sqlite.db), "are the same database");

    let back = Fixture::empty(Engine::Sqlite);
    if pg_server().is_none() {
        // SQLite to SQLite, at least.
        let out = db_copy(&sqlite.db, &back.db);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(shown(&back), shown(&sqlite));
        return;
    }
    let pg = Fixture::empty(Engine::Postgres);
    let out = db_copy(&sqlite.db, &pg.db);
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
    assert_eq!(shown(&pg), shown(&sqlite));
    let out = db_copy(&pg.db, &back.db);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(shown(&back), shown(&sqlite));

    copies_into_a_cluster_are_refused(&pg, &back);
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
