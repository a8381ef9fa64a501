//! `kvmroll-enable` as an administrator runs it, with a reinstall command
//! that records its arguments. (Refusing a host whose real libvirtd runs a
//! VM is checked end to end in tests/e2e/host.rs.)

use kvmroll_core::sqlite::SqliteStore;
use kvmroll_core::{Change, Host, OpenMode, Scope, Store};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Output};

struct Fx {
    dir: tempfile::TempDir,
}

impl Fx {
    fn new(command: Option<&str>) -> Fx {
        let dir = tempfile::tempdir().unwrap();
        let fx = Fx { dir };
        let rec = fx.dir.path().join("reinstall");
        std::fs::write(
            &rec,
            format!(
                "#!/bin/sh\nprintf '%s|' \"$@\" >> {}\necho >> {}\n",
                fx.log().display(),
                fx.log().display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&rec, std::fs::Permissions::from_mode(0o755)).unwrap();
        let fail = fx.dir.path().join("fail");
        std::fs::write(
            &fail,
            "#!/bin/sh\necho 'ipmi: connection refused to' \"$1\" >&2\nexit 7\n",
        )
        .unwrap();
        std::fs::set_permissions(&fail, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut store = SqliteStore::open(&fx.db(), OpenMode::Create).unwrap();
        let mut changes = vec![Change::AddHost(Host::new("compute-0-3", "compute"))];
        if let Some(c) = command {
            let c = c
                .replace("REC", rec.to_str().unwrap())
                .replace("FAIL", fail.to_str().unwrap());
            changes.push(Change::SetAttr {
                scope: Scope::Global,
                name: "kvm_reinstall_command".into(),
                value: c,
            });
        }
        store.update(&mut |_| Ok(changes.clone())).unwrap();
        fx
    }

    fn db(&self) -> PathBuf {
        self.dir.path().join("k.db")
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("calls.log")
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_kvmroll-enable"))
            .arg("--db")
            .arg(self.db())
            .args(args)
            .output()
            .unwrap()
    }

    /// (resolved kvm, boot action) of compute-0-3.
    fn state(&self) -> (Option<String>, String) {
        let c = SqliteStore::open(&self.db(), OpenMode::ReadOnly)
            .unwrap()
            .snapshot()
            .unwrap();
        let h = c.host("compute-0-3").unwrap();
        (
            c.attr(h, "kvm").map(str::to_string),
            h.boot_action.as_str().to_string(),
        )
    }

    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.log())
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn enabling_sets_kvm_and_install_and_runs_the_command_once() {
    let fx = Fx::new(Some("REC power cycle '{host}-ipmi' --note 'a b'"));
    assert_eq!(fx.state(), (None, "os".into()));
    let out = fx.run(&["compute-0-3"]);
    assert!(out.status.success(), "{}", err(&out));
    assert_eq!(fx.state(), (Some("true".into()), "install".into()));
    assert_eq!(fx.calls(), ["power|cycle|compute-0-3-ipmi|--note|a b|"]);
    // A container now: it can hold VMs.
    let c = SqliteStore::open(&fx.db(), OpenMode::ReadOnly)
        .unwrap()
        .snapshot()
        .unwrap();
    assert!(c.is_container(c.host("compute-0-3").unwrap()));
}

#[test]
fn disabling_sets_kvm_false() {
    let fx = Fx::new(Some("REC {host}"));
    let out = fx.run(&["compute-0-3", "--disable", "--force"]);
    assert!(out.status.success(), "{}", err(&out));
    assert_eq!(fx.state(), (Some("false".into()), "install".into()));
    assert_eq!(fx.calls().len(), 1);
}

#[test]
fn a_failing_command_leaves_the_database_as_it_was() {
    let fx = Fx::new(Some("FAIL {host}"));
    let out = fx.run(&["compute-0-3"]);
    assert_eq!(out.status.code(), Some(1));
    let e = err(&out);
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(
        e.contains("failed (exit status: 7): ipmi: connection refused to compute-0-3"),
        "{e}"
    );
    assert!(e.contains("the database is unchanged"));
    assert_eq!(fx.state(), (None, "os".into()));
}

#[test]
fn a_talkative_command_is_read_as_it_runs() {
    // More output than a pipe holds: a reader that waited for the exit
    // would stall the command until the time limit (set to 5 s here).
    let fx = Fx::new(Some(
        "sh -c 'head -c 300000 /dev/zero | tr \\\\0 x; echo done {host}'",
    ));
    let db = fx.db();
    let mut store = SqliteStore::open(&db, OpenMode::ReadWrite).unwrap();
    store
        .update(&mut |_| {
            Ok(vec![Change::SetAttr {
                scope: Scope::Global,
                name: "kvm_reinstall_timeout".into(),
                value: "5".into(),
            }])
        })
        .unwrap();
    drop(store);
    let t = std::time::Instant::now();
    let out = fx.run(&["compute-0-3"]);
    assert_eq!(out.status.code(), Some(0), "{}", err(&out));
    assert!(
        t.elapsed() < std::time::Duration::from_secs(4),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(fx.state(), (Some("true".into()), "install".into()));
}

#[test]
fn dry_run_says_and_changes_nothing() {
    let fx = Fx::new(Some("REC {host}"));
    let out = fx.run(&["compute-0-3", "--dry-run"]);
    assert!(out.status.success(), "{}", err(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("would set kvm=true on compute-0-3") && said.contains("nothing changed"),
        "{said}"
    );
    assert_eq!(fx.state(), (None, "os".into()));
    assert!(fx.calls().is_empty());
}

#[test]
fn bad_input_is_one_line_and_changes_nothing() {
    let unset = Fx::new(None);
    let out = unset.run(&["compute-0-3"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        err(&out).contains("has no kvm_reinstall_command"),
        "{}",
        err(&out)
    );
    assert_eq!(unset.state(), (None, "os".into()));
    let fx = Fx::new(Some("REC {host}"));
    let out = fx.run(&["no-such-host"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        err(&out).trim(),
        "kvmroll-enable: unknown host \"no-such-host\""
    );
    for bad in ["   ", "REC 'unbalanced"] {
        let fx = Fx::new(Some(bad));
        let out = fx.run(&["compute-0-3"]);
        assert_eq!(out.status.code(), Some(1), "{bad:?}");
        assert_eq!(err(&out).lines().count(), 1);
        assert_eq!(fx.state(), (None, "os".into()));
    }
    let fx = Fx::new(Some("/nonexistent/reinstall {host}"));
    let out = fx.run(&["compute-0-3"]);
    assert!(err(&out).contains("cannot be run"), "{}", err(&out));
    assert_eq!(fx.state(), (None, "os".into()));
}

/// Regression: over an empty (0-byte) database file, kvmroll-enable made a
/// new, empty database in its place.
#[test]
fn an_empty_or_missing_database_is_refused_and_left_as_it_was() {
    let fx = Fx::new(None);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", fx.db().display()));
    }
    std::fs::write(fx.db(), b"").unwrap();
    for args in [&["compute-0-3"][..], &["--dry-run", "compute-0-3"]] {
        let out = fx.run(args);
        let e = err(&out);
        assert_eq!(out.status.code(), Some(1), "{e}");
        assert_eq!(e.lines().count(), 1, "{e}");
        assert!(e.contains("is empty, not a kvmroll database"), "{e}");
    }
    assert_eq!(std::fs::metadata(fx.db()).unwrap().len(), 0);
    std::fs::remove_file(fx.db()).unwrap();
    let out = fx.run(&["compute-0-3"]);
    assert!(err(&out).contains("does not exist"), "{}", err(&out));
    assert!(!fx.db().exists());
}
