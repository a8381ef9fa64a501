//! Runs the real `kvmroll-hook` binary as libvirtd would (`VM OP SUBOP EXTRA`,
//! the domain XML on stdin, an almost empty environment) against a fresh
//! configuration, database and plugin root per test. The end-to-end tests in
//! tests/e2e/hook.rs do the same through a real libvirtd.

use kvmroll_core::spool::Spool;
use kvmroll_core::sqlite::SqliteStore;
use kvmroll_core::{render_domain, Change, Disk, EventFilter, Host, OpenMode, Scope, Store, Vm};
use nix::sys::fanotify::{EventFFlags, Fanotify, InitFlags, MarkFlags, MaskFlags};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

const VM: &str = "hosted-vm-0-0-0";
const HOST: &str = "vm-container-0-0";

struct Fx {
    dir: tempfile::TempDir,
}

impl Fx {
    fn new() -> Fx {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let fx = Fx { dir };
        std::fs::write(
            fx.conf(),
            format!(
                "db = {}\nroot = {}\nhost = {HOST}\nkvmroll = /bin/false\n",
                fx.db().display(),
                fx.root().display()
            ),
        )
        .unwrap();
        let mut store = SqliteStore::open(&fx.db(), OpenMode::Create).unwrap();
        let mut host = Host::new(HOST, "vm-container");
        host.cpus = 4;
        store
            .update(&mut |_| {
                Ok(vec![
                    Change::AddHost(host.clone()),
                    Change::AddVm(Vm {
                        id: 0,
                        name: VM.into(),
                        container: Some(HOST.into()),
                        memory_mib: 64,
                        vcpus: 1,
                        uuid: "0f5a2b3c-1d2e-4f50-8a6b-7c8d9e0f1a2b".into(),
                        cdrom: None,
                        virt_type: "kvm".into(),
                        disks: vec![],
                        nics: vec![],
                        stale: false,
                        generation: 0,
                    }),
                ])
            })
            .unwrap();
        fx
    }

    fn conf(&self) -> PathBuf {
        self.dir.path().join("kvmroll.conf")
    }
    fn db(&self) -> PathBuf {
        self.dir.path().join("kvmroll.db")
    }
    fn root(&self) -> PathBuf {
        self.dir.path().join("etc")
    }

    /// The VM's rendered domain: what libvirt would pass.
    fn xml(&self) -> String {
        let store = SqliteStore::open(&self.db(), OpenMode::ReadOnly).unwrap();
        render_domain(&store.snapshot().unwrap(), VM).unwrap()
    }

    fn set_attr(&self, name: &str, value: &str) {
        let mut store = SqliteStore::open(&self.db(), OpenMode::ReadWrite).unwrap();
        store
            .update(&mut |_| {
                Ok(vec![Change::SetAttr {
                    scope: Scope::Host(VM.into()),
                    name: name.into(),
                    value: value.into(),
                }])
            })
            .unwrap();
    }

    /// Gives the VM these disks (`TYPE:PATH,DEV,BUS[,SIZE]`; `{root}` in a
    /// spec is the fixture's disk root, which kvm_disk_roots names).
    fn set_disks(&self, specs: &[&str]) {
        std::fs::create_dir_all(self.disk_root()).unwrap();
        self.set_attr("kvm_disk_roots", &self.disk_root().to_string_lossy());
        let disks: Vec<Disk> = specs
            .iter()
            .map(|s| {
                let spec = s.replace("{root}", &self.disk_root().to_string_lossy());
                Disk::parse(&spec).unwrap()
            })
            .collect();
        let mut store = SqliteStore::open(&self.db(), OpenMode::ReadWrite).unwrap();
        store
            .update(&mut |c| {
                let mut vm = c.vm(VM)?.clone();
                vm.disks = disks.clone();
                Ok(vec![Change::SetVm(vm)])
            })
            .unwrap();
    }

    /// The folder kvm_disk_roots names once the VM has disks.
    fn disk_root(&self) -> PathBuf {
        self.dir.path().join("disks")
    }

    /// Writes a plugin script; `folder` is `plugins/STAGE.d` or `vms/VM/STAGE.d`.
    fn plugin(&self, folder: &str, name: &str, body: &str) -> PathBuf {
        let dir = self.root().join(folder);
        std::fs::create_dir_all(&dir).unwrap();
        let mut d = dir.as_path();
        while d != self.dir.path() {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
            d = d.parent().unwrap();
        }
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    fn marker(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn hook(&self, vm: &str, op: &str, subop: &str, xml: &str) -> Output {
        self.spawn_hook(vm, op, subop, xml)
            .wait_with_output()
            .unwrap()
    }

    /// The hook, started with the XML on its stdin (closed), not waited for.
    fn spawn_hook(&self, vm: &str, op: &str, subop: &str, xml: &str) -> std::process::Child {
        let mut child = Command::new(env!("CARGO_BIN_EXE_kvmroll-hook"))
            .args([vm, op, subop, "-"])
            .env_clear()
            .env("LC_ALL", "C")
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("KVMROLL_CONF", self.conf())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(xml.as_bytes())
            .unwrap();
        child
    }

    /// Takes the database away (file, WAL and all) for a frontend outage;
    /// the returned copy brings it back.
    fn take_db_away(&self) -> PathBuf {
        let kept = self.dir.path().join("kept.db");
        SqliteStore::open(&self.db(), OpenMode::ReadWrite).unwrap();
        std::fs::copy(self.db(), &kept).unwrap();
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.db().display()));
        }
        kept
    }

    fn bring_db_back(&self, kept: &std::path::Path) {
        std::fs::copy(kept, self.db()).unwrap();
    }

    fn spool(&self) -> PathBuf {
        self.dir.path().join("spool")
    }

    /// The VM's events in the database, once the spool is forwarded: by
    /// the upkeep a hook started, or here (as `kvmroll events` does).
    fn events(&self, vm: &str) -> Vec<kvmroll_core::Event> {
        forward(&self.spool(), &self.db());
        SqliteStore::open(&self.db(), OpenMode::ReadOnly)
            .unwrap()
            .events(&EventFilter {
                vm: Some(vm.into()),
                ..EventFilter::default()
            })
            .unwrap()
    }
}

/// The definition as a kvmroll before metadata wrote it.
fn strip_metadata(xml: &str) -> String {
    match (xml.find("  <metadata>"), xml.find("</metadata>\n")) {
        (Some(a), Some(b)) => format!("{}{}", &xml[..a], &xml[b + "</metadata>\n".len()..]),
        _ => xml.to_string(),
    }
}

/// Forwards the spool to the database, or waits while an upkeep does.
fn forward(dir: &std::path::Path, db: &std::path::Path) {
    let spool = Spool::new(dir, HOST);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !spool.pending().unwrap().is_empty() {
        if let Some(held) = spool.lock().unwrap() {
            let mut store = None;
            let done = spool
                .forward_to(&held, &mut store, &mut || {
                    kvmroll_core::open_store(db, OpenMode::ReadWrite)
                })
                .unwrap();
            assert_eq!(done.waiting, None, "the database refused the spool");
            continue;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the spool's upkeep never let go"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

const STRANGER: &str = "<domain type='kvm'><name>stranger</name></domain>";

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
fn replace_db(fx: &Fx, bytes: &[u8]) {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", fx.db().display()));
    }
    std::fs::write(fx.db(), bytes).unwrap();
}

/// Runs `prepare begin` and `release end` of the VM over a database that
/// cannot be used: the start is refused with one line holding `expect`, and
/// the shutdown plugin still runs. Returns the refusal.
fn refuses_start_and_releases(fx: &Fx, expect: &str) -> String {
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

#[test]
fn malformed_calls_are_errors_not_panics() {
    let fx = Fx::new();
    for args in [
        vec![],
        vec!["vm"],
        vec!["vm", "start"],
        vec!["vm", "start", "begin", "-", "x"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_kvmroll-hook"))
            .args(&args)
            .env("KVMROLL_CONF", fx.conf())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            stderr(&out).contains("malformed call"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn malformed_xml_is_refused_at_start_and_tolerated_at_release() {
    let fx = Fx::new();
    fx.plugin(
        &format!("vms/{VM}/shutdown.d"),
        "10-release",
        &format!("touch {}", fx.marker("released").display()),
    );
    for (op, subop) in [
        ("prepare", "begin"),
        ("start", "begin"),
        ("restore", "begin"),
    ] {
        let out = fx.hook(VM, op, subop, "<domain><name>hosted-vm");
        assert_eq!(out.status.code(), Some(1), "{op}");
        assert!(
            stderr(&out).contains("domain XML on stdin is refused"),
            "{}",
            stderr(&out)
        );
    }
    let out = fx.hook(
        VM,
        "prepare",
        "begin",
        "<domain><name>someone-else</name></domain>",
    );
    assert!(
        stderr(&out).contains("not \"hosted-vm-0-0-0\""),
        "{}",
        stderr(&out)
    );
    let out = fx.hook(VM, "release", "end", "garbage");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(fx.marker("released").exists());
}

#[test]
fn plugins_run_global_first_in_byte_order_with_their_arguments_and_env() {
    let fx = Fx::new();
    let log = fx.marker("order.log");
    let rec = |tag: &str| {
        format!(
            "echo \"{tag} $1 $2 $KVMROLL_VM $KVMROLL_UUID $KVMROLL_CONTAINER $KVMROLL_STAGE $KVMROLL_OP $KVMROLL_SUBOP $KVMROLL_EXTRA ro=${{KVMROLL_DB_READONLY:-0}} db=$KVMROLL_DB $(grep -c '<name>hosted-vm-0-0-0</name>')\" >> {}",
            log.display()
        )
    };
    fx.plugin("plugins/preboot.d", "20-global", &rec("g20"));
    fx.plugin("plugins/preboot.d", "10-global", &rec("g10"));
    fx.plugin("plugins/preboot.d", "B-global", &rec("gB"));
    fx.plugin(&format!("vms/{VM}/preboot.d"), "00-own", &rec("own"));
    fx.plugin(&format!("vms/{VM}/allocate.d"), "00-own", &rec("alloc"));
    let out = fx.hook(VM, "start", "begin", &fx.xml());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(out.stdout.is_empty(), "stdout at start begin");
    let out = fx.hook(VM, "prepare", "begin", &fx.xml());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let got = std::fs::read_to_string(&log).unwrap();
    let db = fx.db().display().to_string();
    let common = format!("{VM} {VM} 0f5a2b3c-1d2e-4f50-8a6b-7c8d9e0f1a2b {HOST}");
    let want = [
        format!("g10 preboot {common} preboot start begin - ro=1 db={db} 1"),
        format!("g20 preboot {common} preboot start begin - ro=1 db={db} 1"),
        format!("gB preboot {common} preboot start begin - ro=1 db={db} 1"),
        format!("own preboot {common} preboot start begin - ro=1 db={db} 1"),
        format!("alloc allocate {common} allocate prepare begin - ro=0 db={db} 1"),
    ];
    assert_eq!(got.lines().collect::<Vec<_>>(), want);
}

#[test]
fn restore_filters_reach_libvirt_on_stdout_and_each_plugin_sees_the_last_xml() {
    let fx = Fx::new();
    let dir = format!("vms/{VM}/preboot.d");
    fx.plugin(
        &dir,
        "10-describe",
        "sed 's|</name>|</name><description>one</description>|'",
    );
    fx.plugin(&dir, "20-silent", "cat >/dev/null");
    fx.plugin(
        &dir,
        "30-again",
        "sed 's|<description>one</description>|<description>two</description>|'",
    );
    let out = fx.hook(VM, "restore", "begin", &fx.xml());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let xml = String::from_utf8(out.stdout).unwrap();
    assert!(
        xml.contains("</name><description>two</description>"),
        "{xml}"
    );
    // At a cold start libvirt ignores hook output: nothing is printed.
    let out = fx.hook(VM, "start", "begin", &fx.xml());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
    // With no plugin changing it, a restore or a migration prints nothing.
    std::fs::remove_dir_all(fx.root().join(&dir)).unwrap();
    for op in ["restore", "migrate"] {
        let out = fx.hook(VM, op, "begin", &fx.xml());
        assert!(out.status.success() && out.stdout.is_empty(), "{op}");
    }
}

#[test]
fn a_filter_that_prints_another_vm_or_junk_fails_the_stage() {
    let fx = Fx::new();
    let dir = format!("vms/{VM}/preboot.d");
    let p = fx.plugin(&dir, "10-bad", "echo '<domain><name>other</name></domain>'");
    let out = fx.hook(VM, "restore", "begin", &fx.xml());
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert!(stderr(&out).contains("named \"other\""), "{}", stderr(&out));
    std::fs::write(&p, "#!/bin/sh\necho 'not xml at all'\n").unwrap();
    let out = fx.hook(VM, "restore", "begin", &fx.xml());
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("printed XML that is refused"),
        "{}",
        stderr(&out)
    );
    std::fs::write(&p, "#!/bin/sh\nsed 's|<uuid>[^<]*</uuid>|<uuid>11111111-2222-4333-8444-555555555555</uuid>|'\n").unwrap();
    let out = fx.hook(VM, "restore", "begin", &fx.xml());
    assert!(stderr(&out).contains("UUID"), "{}", stderr(&out));
}

#[test]
fn a_failing_start_plugin_refuses_with_its_message_and_stops_the_stage() {
    let fx = Fx::new();
    let dir = format!("vms/{VM}/allocate.d");
    fx.plugin(
        &dir,
        "10-fail",
        "echo 'no storage left on /state' >&2; echo second line >&2; exit 4",
    );
    fx.plugin(
        &dir,
        "20-after",
        &format!("touch {}", fx.marker("after").display()),
    );
    let out = fx.hook(VM, "prepare", "begin", &fx.xml());
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(
        err.trim(),
        "VM hosted-vm-0-0-0: plugin 10-fail failed: no storage left on /state"
    );
    assert!(!fx.marker("after").exists());
    let ev = fx.events(VM);
    let run = ev
        .iter()
        .find(|e| e.plugin.as_deref().is_some_and(|p| p.ends_with("10-fail")))
        .unwrap();
    assert_eq!((run.outcome.as_str(), run.status), ("failed", Some(4)));
    assert_eq!(run.message, "no storage left on /state\nsecond line");
}

#[test]
fn every_shutdown_plugin_runs_even_after_a_failure() {
    let fx = Fx::new();
    let dir = format!("vms/{VM}/shutdown.d");
    fx.plugin(&dir, "10-fail", "exit 1");
    fx.plugin(
        &dir,
        "20-after",
        &format!("touch {}", fx.marker("after").display()),
    );
    let out = fx.hook(VM, "release", "end", &fx.xml());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
    assert!(fx.marker("after").exists());
}

#[test]
fn a_hung_plugin_is_killed_at_the_stage_limit() {
    let fx = Fx::new();
    fx.set_attr("kvm_plugin_timeout_preboot", "1");
    fx.plugin(&format!("vms/{VM}/preboot.d"), "10-hang", "sleep 300");
    let t = std::time::Instant::now();
    let out = fx.hook(VM, "start", "begin", &fx.xml());
    assert!(t.elapsed() < std::time::Duration::from_secs(5));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("ran past the preboot stage's limit of 1s"),
        "{}",
        stderr(&out)
    );
    assert!(fx
        .events(VM)
        .iter()
        .any(|e| e.outcome.as_str() == "timeout"));
}

#[test]
fn an_unsafe_plugin_is_not_run_and_refuses_a_start() {
    let fx = Fx::new();
    let p = fx.plugin(
        &format!("vms/{VM}/preboot.d"),
        "10-open",
        &format!("touch {}", fx.marker("ran").display()),
    );
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = fx.hook(VM, "start", "begin", &fx.xml());
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("writable by group or others"),
        "{}",
        stderr(&out)
    );
    assert!(!fx.marker("ran").exists());
    // On the stop side it is skipped, logged, and the stop goes on.
    let q = fx.plugin(
        &format!("vms/{VM}/shutdown.d"),
        "10-open",
        &format!("touch {}", fx.marker("ran").display()),
    );
    std::fs::set_permissions(&q, std::fs::Permissions::from_mode(0o666 | 0o111)).unwrap();
    let out = fx.hook(VM, "release", "end", &fx.xml());
    assert_eq!(out.status.code(), Some(0));
    assert!(!fx.marker("ran").exists());
    assert_eq!(
        fx.events(VM)
            .iter()
            .filter(|e| e.outcome.as_str() == "refused")
            .count(),
        2
    );
}

#[test]
fn drift_is_logged_or_refused_when_strict() {
    let fx = Fx::new();
    // A VM defined before kvmroll wrote metadata: compared with the
    // database's rendering, as before.
    let drifted = |fx: &Fx| {
        strip_metadata(&fx.xml()).replace(
            "<memory unit='KiB'>65536</memory>",
            "<memory unit='KiB'>131072</memory>",
        )
    };
    let out = fx.hook(VM, "start", "begin", &drifted(&fx));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let drift: Vec<_> = fx
        .events(VM)
        .into_iter()
        .filter(|e| e.outcome.as_str() == "drift")
        .collect();
    assert_eq!(drift.len(), 1);
    assert!(drift[0].message.contains("memory"), "{}", drift[0].message);
    fx.set_attr("kvm_strict_definition", "true");
    let out = fx.hook(VM, "start", "begin", &drifted(&fx));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("differs from the kvmroll database"),
        "{}",
        stderr(&out)
    );
    // What libvirt adds (ids, aliases, addresses) is no drift.
    for xml in [fx.xml(), strip_metadata(&fx.xml())] {
        let decorated = xml
            .replace("<domain type='kvm'>", "<domain type='kvm' id='7'>")
            .replace(
                "</devices>",
                "<controller type='usb' index='0'><alias name='usb'/></controller></devices>",
            );
        let out = fx.hook(VM, "start", "begin", &decorated);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
}

#[test]
fn missing_disks_are_made_at_prepare_begin_and_never_again() {
    let fx = Fx::new();
    fx.set_disks(&[
        "qcow2:{root}/vm/a.qcow2,vda,virtio,2",
        "raw:{root}/vm/b.img,vdb,virtio,1",
    ]);
    let a = fx.disk_root().join("vm/a.qcow2");
    let b = fx.disk_root().join("vm/b.img");
    // No other stage makes anything.
    for (op, subop) in [("start", "begin"), ("release", "end")] {
        let out = fx.hook(VM, op, subop, &fx.xml());
        assert_eq!(out.status.code(), Some(0), "{op}: {}", stderr(&out));
    }
    assert!(!fx.disk_root().join("vm").exists());
    let out = fx.hook(VM, "prepare", "begin", &fx.xml());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(out.stderr.is_empty() && out.stdout.is_empty());
    let header = std::fs::read(&a).unwrap();
    assert_eq!(&header[..4], b"QFI\xfb");
    assert_eq!(&header[24..32], &(2u64 << 30).to_be_bytes(), "virtual size");
    let raw = std::fs::metadata(&b).unwrap();
    assert_eq!(raw.len(), 1 << 30);
    assert_eq!(
        std::os::unix::fs::MetadataExt::blocks(&raw),
        0,
        "not sparse"
    );
    let made: Vec<String> = fx
        .events(VM)
        .into_iter()
        .filter(|e| e.message.contains("made"))
        .map(|e| e.message)
        .collect();
    assert_eq!(made.len(), 2, "{made:?}");
    assert!(
        made[0].contains("made qcow2 image") && made[0].contains("2 GiB"),
        "{made:?}"
    );
    let store = SqliteStore::open(&fx.db(), OpenMode::ReadOnly).unwrap();
    let recorded: Vec<String> = store
        .made_images(VM)
        .unwrap()
        .into_iter()
        .map(|m| m.path)
        .collect();
    assert_eq!(recorded, [a.display().to_string(), b.display().to_string()]);
    // A guest writes; the next start leaves its image alone.
    std::fs::write(&b, b"guest data").unwrap();
    let out = fx.hook(VM, "prepare", "begin", &fx.xml());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(std::fs::read(&b).unwrap(), b"guest data");
    assert_eq!(std::fs::read(&a).unwrap(), header);
    let made_again = fx
        .events(VM)
        .iter()
        .filter(|e| e.message.contains("made"))
        .count();
    assert_eq!(made_again, 2);
}

#[test]
fn a_disk_that_cannot_be_made_refuses_the_start_in_one_line() {
    let fx = Fx::new();
    let outside = fx.dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let cases = [
        ("qcow2:{root}/nosize.qcow2,vda,virtio", "give it a size"),
        (
            &format!("qcow2:{}/x.qcow2,vda,virtio,1", outside.display()),
            "kvm_disk_roots",
        ),
        ("qcow2:{root}/link/x.qcow2,vda,virtio,1", "symlink"),
        (
            "block:/dev/kvmroll-no-such-disk,vda,virtio",
            "/dev/kvmroll-no-such-disk",
        ),
    ];
    fx.set_disks(&[]);
    std::os::unix::fs::symlink(&outside, fx.disk_root().join("link")).unwrap();
    for (spec, said) in cases {
        // A good disk before the bad one is made; the start is refused.
        fx.set_disks(&["raw:{root}/ok.img,vdb,virtio,1", spec]);
        let out = fx.hook(VM, "prepare", "begin", &fx.xml());
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{spec}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{spec}: {err}");
        assert!(
            err.contains("disk vda") && err.contains(said),
            "{spec}: {err}"
        );
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0, "{spec}");
    }
    let mut left: Vec<String> = std::fs::read_dir(fx.disk_root())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["link", "ok.img"]);
}

#[test]
fn a_grow_asked_for_is_done_at_the_next_prepare_begin() {
    let fx = Fx::new();
    fx.set_disks(&["raw:{root}/g.img,vda,virtio,1"]);
    let g = fx.disk_root().join("g.img");
    let out = fx.hook(VM, "prepare", "begin", &fx.xml());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    std::fs::write(&g, b"data").unwrap();
    let mut store = SqliteStore::open(&fx.db(), OpenMode::ReadWrite).unwrap();
    store.grow_disk(VM, "vda", 3).unwrap();
    drop(store);
    let out = fx.hook(VM, "prepare", "begin", &fx.xml());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(std::fs::metadata(&g).unwrap().len(), 3 << 30);
    assert_eq!(&std::fs::read(&g).unwrap()[..4], b"data");
    let store = SqliteStore::open(&fx.db(), OpenMode::ReadOnly).unwrap();
    assert!(!store.vm_disks(VM).unwrap()[0].grow, "the grow still waits");
}

#[test]
fn a_burst_of_64_invocations_records_every_event() {
    let fx = Fx::new();
    fx.plugin(
        &format!("vms/{VM}/on-started.d"),
        "10-noop",
        "cat >/dev/null",
    );
    let xml = fx.xml();
    let results: Vec<Output> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..64)
            .map(|_| s.spawn(|| fx.hook(VM, "started", "begin", &xml)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for out in &results {
        assert_eq!(out.status.code(), Some(0), "{}", stderr(out));
    }
    let events = fx.events(VM);
    let invocations = events.iter().filter(|e| e.plugin.is_none()).count();
    let runs = events.iter().filter(|e| e.plugin.is_some()).count();
    assert_eq!((invocations, runs), (64, 64));
}

#[test]
fn a_detached_upkeep_keeps_the_wal_short() {
    // Each event adds two or three WAL frames; a hook that finds more than
    // 32 leaves a checkpoint to a detached process. Without it, 60 events
    // would leave some 150 frames, and every hook would read them all.
    let fx = Fx::new();
    let xml = fx.xml();
    for _ in 0..60 {
        let out = fx.hook(VM, "started", "begin", &xml);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    let wal = PathBuf::from(format!("{}-wal", fx.db().display()));
    let frames = || std::fs::metadata(&wal).map_or(0, |m| m.len().saturating_sub(32) / 4120);
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while frames() > 40 && std::time::Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(frames() <= 40, "the WAL holds {} frames", frames());
    assert_eq!(fx.events(VM).len(), 60, "an event was lost");
}

#[test]
fn install_puts_the_hook_in_place_atomically_and_guards_a_foreign_one() {
    let fx = Fx::new();
    let root = fx.dir.path().join("pkgroot");
    let install = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_kvmroll-hook"))
            .arg("install")
            .args(["--root", root.to_str().unwrap()])
            .args(args)
            .output()
            .unwrap()
    };
    let out = install(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let hook = root.join("etc/libvirt/hooks/qemu");
    let meta = std::fs::metadata(&hook).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o755);
    assert_eq!(
        std::fs::read(&hook).unwrap(),
        std::fs::read(env!("CARGO_BIN_EXE_kvmroll-hook")).unwrap()
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("installed"));
    // A hook that is not kvmroll's is not replaced without --force.
    std::fs::write(&hook, "#!/bin/sh\nexit 0\n").unwrap();
    let out = install(&[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("is not kvmroll's hook"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        std::fs::read_to_string(&hook).unwrap(),
        "#!/bin/sh\nexit 0\n"
    );
    let out = install(&["--dropin"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(root.join("etc/libvirt/hooks/qemu.d/kvmroll").exists());
    let leftovers: Vec<_> = std::fs::read_dir(root.join("etc/libvirt/hooks"))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty());
    let out = install(&["--root-typo"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn the_hook_never_links_libvirt() {
    let out = Command::new("ldd")
        .arg(env!("CARGO_BIN_EXE_kvmroll-hook"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let libs = String::from_utf8_lossy(&out.stdout);
    assert!(!libs.contains("libvirt"), "{libs}");
    // Nor depends on the crate that does, at any depth.
    let tree = Command::new(env!("CARGO"))
        .args([
            "tree",
            "-p",
            "kvmroll-hook",
            "-e",
            "normal",
            "--prefix",
            "none",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let tree = String::from_utf8_lossy(&tree.stdout);
    assert!(tree.contains("kvmroll-core"), "{tree}");
    assert!(
        !tree.contains("kvmroll-virt") && !tree.lines().any(|l| l.starts_with("virt ")),
        "{tree}"
    );
}

/// Makes `dir` (and its parents up to the fixture) a folder with `mode`.
fn folder(fx: &Fx, dir: &std::path::Path, mode: u32) {
    std::fs::create_dir_all(dir).unwrap();
    let mut d = dir;
    while d != fx.dir.path() {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
        d = d.parent().unwrap();
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A root-owned, mode 755 script at `path`.
fn script_at(path: &std::path::Path, body: &str) {
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Starts the VM, which must be refused with no plugin run; the refusal.
fn start_refused_before_any_plugin(fx: &Fx) -> String {
    let out = fx.hook(VM, "start", "begin", &fx.xml());
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(!fx.marker("ran").exists(), "the plugin ran");
    stderr(&out)
}

fn refused_events(fx: &Fx) -> Vec<kvmroll_core::Event> {
    fx.events(VM)
        .into_iter()
        .filter(|e| e.outcome.as_str() == "refused")
        .collect()
}

#[test]
fn a_plugin_symlinked_into_a_world_writable_folder_is_refused() {
    // The target is root's and mode 755, but its folder is 0777: anyone
    // could rename another file over it between the check and the run.
    let fx = Fx::new();
    let open = fx.dir.path().join("open");
    folder(&fx, &open, 0o777);
    let target = open.join("real");
    script_at(&target, &format!("touch {}", fx.marker("ran").display()));
    let stage = fx.root().join(format!("vms/{VM}/preboot.d"));
    folder(&fx, &stage, 0o755);
    std::os::unix::fs::symlink(&target, stage.join("10-link")).unwrap();
    let err = start_refused_before_any_plugin(&fx);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!(
            "{} is writable by group or others",
            open.display()
        )),
        "{err}"
    );
    let refused = refused_events(&fx);
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(refused[0]
        .plugin
        .as_deref()
        .is_some_and(|p| p.ends_with("10-link")));
    // A relative link through `..` is resolved the same way.
    std::fs::remove_file(stage.join("10-link")).unwrap();
    std::os::unix::fs::symlink("../../../../open/real", stage.join("10-link")).unwrap();
    start_refused_before_any_plugin(&fx);
}

#[test]
fn a_stage_folder_that_links_to_an_unsafe_place_is_refused() {
    let fx = Fx::new();
    let open = fx.dir.path().join("open");
    folder(&fx, &open.join("preboot.d"), 0o755);
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    script_at(
        &open.join("preboot.d/10-run"),
        &format!("touch {}", fx.marker("ran").display()),
    );
    folder(&fx, &fx.root().join("plugins"), 0o755);
    std::os::unix::fs::symlink(open.join("preboot.d"), fx.root().join("plugins/preboot.d"))
        .unwrap();
    let err = start_refused_before_any_plugin(&fx);
    assert!(
        err.contains(&format!(
            "{} is writable by group or others",
            open.display()
        )),
        "{err}"
    );
    assert_eq!(refused_events(&fx).len(), 1);
    // The plugin root itself reached through such a link is refused too.
    std::fs::remove_file(fx.root().join("plugins/preboot.d")).unwrap();
    std::fs::rename(fx.root(), open.join("etc")).unwrap();
    std::fs::rename(open.join("preboot.d"), open.join("etc/plugins/preboot.d")).unwrap();
    std::os::unix::fs::symlink(open.join("etc"), fx.root()).unwrap();
    start_refused_before_any_plugin(&fx);
}

#[test]
fn a_safe_symlink_still_runs() {
    let fx = Fx::new();
    let lib = fx.dir.path().join("lib/kvmroll");
    folder(&fx, &lib.join("preboot.d"), 0o755);
    script_at(
        &lib.join("real"),
        &format!("echo \"$1 $2\" > {}", fx.marker("own").display()),
    );
    script_at(
        &lib.join("preboot.d/10-global"),
        &format!("touch {}", fx.marker("global").display()),
    );
    // A plugin that is a link (relative, through `..`), and a stage folder
    // that is one (absolute).
    let own = fx.root().join(format!("vms/{VM}/preboot.d"));
    folder(&fx, &own, 0o755);
    std::os::unix::fs::symlink("../../../../lib/kvmroll/real", own.join("10-own")).unwrap();
    folder(&fx, &fx.root().join("plugins"), 0o755);
    std::os::unix::fs::symlink(lib.join("preboot.d"), fx.root().join("plugins/preboot.d")).unwrap();
    let out = fx.hook(VM, "start", "begin", &fx.xml());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        fx.marker("global").exists(),
        "the global plugin did not run"
    );
    assert_eq!(
        std::fs::read_to_string(fx.marker("own")).unwrap(),
        format!("preboot {VM}\n")
    );
    assert!(refused_events(&fx).is_empty());
}

#[test]
fn a_plugin_swapped_after_the_check_is_not_what_runs() {
    // The first plugin renames another file over the second between the
    // hook's check of the second and its run: the checked file runs.
    let fx = Fx::new();
    let dir = format!("vms/{VM}/allocate.d");
    let target = fx.plugin(
        &dir,
        "20-target",
        &format!("echo checked > {}", fx.marker("ran").display()),
    );
    let swap = fx.root().join(&dir).join(".swap");
    script_at(
        &swap,
        &format!("echo swapped > {}", fx.marker("ran").display()),
    );
    fx.plugin(
        &dir,
        "10-swap",
        &format!("mv {} {}", swap.display(), target.display()),
    );
    let out = fx.hook(VM, "prepare", "begin", &fx.xml());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!swap.exists(), "the swap did not happen");
    assert_eq!(
        std::fs::read_to_string(fx.marker("ran")).unwrap(),
        "checked\n"
    );
}

#[test]
fn plugins_share_one_stage_budget() {
    // Five plugins of 1.5 s under a 2 s limit: the second is killed at 2 s
    // and the other three do not run (a limit per plugin let them run 7.5 s).
    let fx = Fx::new();
    for (stage, attr) in [
        ("allocate", "kvm_plugin_timeout_allocate"),
        ("shutdown", "kvm_plugin_timeout_shutdown"),
    ] {
        fx.set_attr(attr, "2");
        for i in 1..=5 {
            fx.plugin(
                &format!("vms/{VM}/{stage}.d"),
                &format!("{i}0-slow"),
                &format!(
                    "sleep 1.5; touch {}",
                    fx.marker(&format!("{stage}{i}")).display()
                ),
            );
        }
    }
    let t = std::time::Instant::now();
    let out = fx.hook(VM, "prepare", "begin", &fx.xml());
    let took = t.elapsed();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(took < std::time::Duration::from_secs(4), "took {took:?}");
    let err = stderr(&out);
    assert_eq!(
        err.trim(),
        format!(
            "VM {VM}: plugin 20-slow ran past the allocate stage's limit of 2s and was killed; 3 plugins did not run"
        )
    );
    let ran: Vec<bool> = (1..=5)
        .map(|i| fx.marker(&format!("allocate{i}")).exists())
        .collect();
    assert_eq!(ran, [true, false, false, false, false]);
    let timeout: Vec<_> = fx
        .events(VM)
        .into_iter()
        .filter(|e| e.outcome.as_str() == "timeout")
        .collect();
    assert_eq!(timeout.len(), 1, "{timeout:?}");
    assert!(timeout[0].plugin.as_deref().unwrap().ends_with("20-slow"));
    assert!(timeout[0].message.contains("3 plugins did not run"));
    // The stop side goes on (exit 0), but within the same budget.
    let t = std::time::Instant::now();
    let out = fx.hook(VM, "release", "end", &fx.xml());
    assert!(
        t.elapsed() < std::time::Duration::from_secs(4),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(fx.marker("shutdown1").exists() && !fx.marker("shutdown3").exists());
}

#[test]
fn a_vm_name_with_a_path_reaches_no_folder_outside_the_plugin_root() {
    // Stop side, database unreadable: the VM's name is all the hook has.
    let fx = Fx::new();
    fx.plugin(
        "outside/shutdown.d",
        "10-outside",
        &format!("touch {}", fx.marker("outside").display()),
    );
    fx.plugin(
        "plugins/shutdown.d",
        "10-global",
        &format!("touch {}", fx.marker("global").display()),
    );
    folder(&fx, &fx.root().join("vms"), 0o755);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", fx.db().display()));
    }
    std::fs::write(fx.db(), vec![b'#'; 8192]).unwrap();
    let xml = "<domain type='kvm'><name>x</name></domain>";
    for vm in ["../outside", "a/../../outside"] {
        let out = fx.hook(vm, "release", "end", xml);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    assert!(
        !fx.marker("outside").exists(),
        "a plugin outside the root ran"
    );
    assert!(
        fx.marker("global").exists(),
        "the global plugins did not run"
    );
}

#[test]
fn replacement_xml_that_is_not_utf8_is_refused() {
    let fx = Fx::new();
    fx.plugin(
        &format!("vms/{VM}/preboot.d"),
        "10-latin1",
        "sed 's|</name>|</name><description>caf\\o351</description>|'",
    );
    let out = fx.hook(VM, "restore", "begin", &fx.xml());
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("10-latin1") && err.contains("not UTF-8"),
        "{err}"
    );
}

/// The VM's domain with `depth` more levels of elements inside it.
fn deep_domain(depth: usize) -> String {
    format!(
        "<domain type='kvm'><name>{VM}</name>{}{}</domain>",
        "<a>".repeat(depth),
        "</a>".repeat(depth)
    )
}

/// Asserts a refusal: exit 1, one line on stderr holding `why`, nothing on
/// stdout, and the refusal recorded as the invocation's event.
fn assert_refused_and_recorded(fx: &Fx, out: &Output, why: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains(why), "{err}");
    assert!(out.stdout.is_empty());
    let events = fx.events(VM);
    let own = events
        .iter()
        .find(|e| e.plugin.is_none())
        .expect("no event");
    assert_eq!(own.outcome.as_str(), "failed");
    assert!(own.message.contains(why), "{}", own.message);
}

/// Regression: stdin XML 200,000 levels deep made the hook segfault (its
/// stack overflowed) with no message and no event.
#[test]
fn stdin_xml_200000_deep_is_refused_with_a_line_and_an_event() {
    let fx = Fx::new();
    let out = fx.hook(VM, "start", "begin", &deep_domain(200_000));
    assert_refused_and_recorded(
        &fx,
        &out,
        "libvirt's domain XML on stdin is refused: not well-formed domain XML: \
         nested deeper than 256 elements",
    );
}

/// Regression: a preboot plugin printing XML 200,000 levels deep at
/// `restore begin` made the hook segfault.
#[test]
fn a_filter_printing_xml_200000_deep_is_refused_with_a_line_and_an_event() {
    let fx = Fx::new();
    let deep = fx.marker("deep.xml");
    std::fs::write(&deep, deep_domain(200_000)).unwrap();
    fx.plugin(
        &format!("vms/{VM}/preboot.d"),
        "10-deep",
        &format!("cat {}", deep.display()),
    );
    let out = fx.hook(VM, "restore", "begin", &fx.xml());
    assert_refused_and_recorded(
        &fx,
        &out,
        "/10-deep printed XML that is refused: not well-formed domain XML: \
         nested deeper than 256 elements",
    );
}

/// Regression: a preboot plugin printing 50 MB of non-XML at `restore
/// begin` made a 16 MB stderr "line" and two 16 MB event rows.
#[test]
fn a_filter_printing_50_mb_leaves_a_short_line_and_short_events() {
    let fx = Fx::new();
    fx.plugin(
        &format!("vms/{VM}/preboot.d"),
        "10-flood",
        "head -c 52428800 /dev/zero | tr '\\000' z",
    );
    let out = fx.hook(VM, "restore", "begin", &fx.xml());
    assert_refused_and_recorded(&fx, &out, "/10-flood printed XML that is refused");
    let max = kvmroll_core::text::MAX_BYTES;
    assert!(out.stderr.len() <= max + 1, "{} bytes", out.stderr.len());
    let events = fx.events(VM);
    assert_eq!(events.len(), 2, "{events:?}");
    for e in &events {
        assert!(e.message.len() <= max, "{} bytes", e.message.len());
    }
}

/// A plugin's flood of stderr is kept to a few lines in its event, with a
/// note of the cut.
#[test]
fn a_plugin_flooding_stderr_leaves_a_short_event() {
    let fx = Fx::new();
    fx.plugin(
        &format!("vms/{VM}/allocate.d"),
        "10-noisy",
        "yes 'a line of noise' | head -c 1000000 >&2; exit 3",
    );
    let out = fx.hook(VM, "prepare", "begin", &fx.xml());
    assert_refused_and_recorded(&fx, &out, "plugin 10-noisy failed: a line of noise");
    let events = fx.events(VM);
    let run = events.iter().find(|e| e.plugin.is_some()).unwrap();
    assert_eq!(run.message.lines().count(), 5, "{}", run.message);
    assert!(
        run.message.ends_with("(cut: 1000000 bytes in all)"),
        "{}",
        run.message
    );
}

// Without the database: a frontend outage, seen from a container.

/// A plugin that writes what it was told of the database to `file`.
fn tell_tale(fx: &Fx, folder: &str, file: &str) -> PathBuf {
    let out = fx.marker(file);
    fx.plugin(
        folder,
        "10-tell",
        &format!(
            "echo \"unreachable=$KVMROLL_DB_UNREACHABLE reason=$KVMROLL_DB_UNREACHABLE_REASON\" >{}",
            out.display()
        ),
    );
    out
}

/// With the database gone, a VM with kvmroll's metadata starts and stops
/// as before: its plugins run, those of the stages that open the database
/// are told it does not answer, and no database is made; the events wait
/// in the spool and reach the database once it is back, each once.
#[test]
fn a_vm_starts_and_stops_with_the_database_gone_and_plugins_are_told() {
    let fx = Fx::new();
    let allocate = tell_tale(&fx, &format!("vms/{VM}/allocate.d"), "allocate");
    let preboot = tell_tale(&fx, "plugins/preboot.d", "preboot");
    let shutdown = tell_tale(&fx, &format!("vms/{VM}/shutdown.d"), "shutdown");
    let xml = fx.xml();
    let kept = fx.take_db_away();
    for (op, subop) in [
        ("prepare", "begin"),
        ("start", "begin"),
        ("started", "begin"),
        ("stopped", "end"),
        ("release", "end"),
    ] {
        let out = fx.hook(VM, op, subop, &xml);
        assert_eq!(out.status.code(), Some(0), "{op}: {}", stderr(&out));
        assert!(out.stdout.is_empty() && out.stderr.is_empty(), "{op}");
    }
    let told = |p: &PathBuf| std::fs::read_to_string(p).unwrap();
    for p in [&allocate, &shutdown] {
        let said = told(p);
        assert!(
            said.starts_with("unreachable=1 reason=") && said.contains("does not exist"),
            "{said}"
        );
    }
    // start begin opens no database: there is nothing to tell.
    assert_eq!(told(&preboot), "unreachable= reason=\n");
    assert!(!fx.db().exists(), "a database was made");
    assert_eq!(std::fs::read_dir(fx.spool()).unwrap().count(), 5);
    fx.bring_db_back(&kept);
    let events = fx.events(VM);
    let count = |outcome: &str| {
        events
            .iter()
            .filter(|e| e.outcome.as_str() == outcome)
            .count()
    };
    // Two stages said the database did not answer; the allocate stage's
    // relocation check was skipped, saying so.
    assert_eq!(count("unreachable"), 3, "{events:#?}");
    assert!(events.iter().any(|e| e
        .message
        .contains("relocation check after the allocate plugins is skipped")));
    // Five invocations, three plugin runs, each once, in order.
    let invocations: Vec<&str> = events
        .iter()
        .filter(|e| e.plugin.is_none() && e.outcome.as_str() == "ok")
        .map(|e| e.op.as_str())
        .collect();
    assert_eq!(
        invocations,
        ["prepare", "start", "started", "stopped", "release"]
    );
    assert_eq!(events.iter().filter(|e| e.plugin.is_some()).count(), 3);
    assert!(events.iter().all(|e| e.container.as_deref() == Some(HOST)));
    // Forwarded: nothing is delivered twice.
    assert_eq!(fx.events(VM).len(), events.len());
}

#[test]
fn kvm_require_database_refuses_a_start_without_the_database() {
    let fx = Fx::new();
    fx.set_attr("kvm_require_database", "true");
    let ran = fx.marker("ran");
    fx.plugin(
        &format!("vms/{VM}/allocate.d"),
        "10-ran",
        &format!("touch {}", ran.display()),
    );
    let xml = fx.xml();
    let kept = fx.take_db_away();
    let out = fx.hook(VM, "prepare", "begin", &xml);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("kvm_require_database is true") && err.contains("database is unreachable"),
        "{err}"
    );
    assert!(!ran.exists(), "an allocate plugin ran");
    // The stop side goes on.
    let out = fx.hook(VM, "release", "end", &xml);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // Back, the same start goes.
    fx.bring_db_back(&kept);
    let out = fx.hook(VM, "prepare", "begin", &xml);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(ran.exists());
}

/// `virsh edit` of the vCPUs while the database is gone: caught at the
/// next start from the metadata's facts, named, and refused where strict;
/// so is an edit of the facts themselves, to hide one.
#[test]
fn drift_is_caught_from_the_metadata_without_the_database() {
    let fx = Fx::new();
    let edited = |xml: &str| {
        xml.replace(
            "<vcpu placement='static'>1</vcpu>",
            "<vcpu placement='static'>2</vcpu>",
        )
    };
    let lenient = fx.xml();
    fx.set_attr("kvm_strict_definition", "true");
    let strict = fx.xml();
    let kept = fx.take_db_away();
    let out = fx.hook(VM, "start", "begin", &edited(&lenient));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = fx.hook(VM, "start", "begin", &edited(&strict));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("vcpus: 1 is now 2"), "{err}");
    let hidden = edited(&strict).replace(
        "<kvmroll:fact>vcpus: 1</kvmroll:fact>",
        "<kvmroll:fact>vcpus: 2</kvmroll:fact>",
    );
    let out = fx.hook(VM, "start", "begin", &hidden);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("metadata was edited"),
        "{}",
        stderr(&out)
    );
    // Unedited, it starts.
    let out = fx.hook(VM, "start", "begin", &strict);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!fx.db().exists());
    fx.bring_db_back(&kept);
    let drift: Vec<String> = fx
        .events(VM)
        .into_iter()
        .filter(|e| e.outcome.as_str() == "drift")
        .map(|e| e.message)
        .collect();
    assert_eq!(drift.len(), 3, "{drift:?}");
    assert!(drift[0].contains("vcpus: 1 is now 2"), "{drift:?}");
}

/// Where the database is open anyway (allocate with plugins), a definition
/// older than the database's rows is said to be stale.
#[test]
fn a_definition_older_than_the_database_is_reported_stale() {
    let fx = Fx::new();
    fx.plugin(&format!("vms/{VM}/allocate.d"), "10-ok", "true");
    let old = fx.xml();
    fx.set_attr("kvm_autostart", "true");
    let out = fx.hook(VM, "prepare", "begin", &old);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = fx.hook(VM, "prepare", "begin", &fx.xml());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let stale: Vec<String> = fx
        .events(VM)
        .into_iter()
        .filter(|e| e.outcome.as_str() == "stale")
        .map(|e| e.message)
        .collect();
    assert_eq!(stale.len(), 1, "{stale:?}");
    assert!(
        stale[0].contains("generation 1 of") && stale[0].contains("the database's is 2"),
        "{stale:?}"
    );
}

/// The processes that opened a file in `dir` whose name starts with
/// `prefix`, as fanotify saw them: (pid, path).
fn openers(fan: &Fanotify, prefix: &str) -> Vec<(i32, String)> {
    let mut seen = Vec::new();
    loop {
        let events = match fan.read_events() {
            Ok(e) if !e.is_empty() => e,
            _ => return seen,
        };
        for e in events {
            let Some(fd) = e.fd() else { continue };
            let path = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            if path.starts_with(prefix) {
                seen.push((e.pid(), path));
            }
        }
    }
}

/// Shown, not only read in the code: at `start begin` the hook opens no
/// file of the database (nor its -wal and -shm), though the database is
/// there. fanotify names each process that opens, reads or writes a file
/// in the database's folder. The control: at `prepare begin` with an
/// allocate plugin, the hook does open it, and is seen doing so.
#[test]
fn start_begin_opens_no_database_file() {
    let fx = Fx::new();
    fx.plugin("plugins/preboot.d", "10-ok", "true");
    fx.plugin("plugins/allocate.d", "10-ok", "true");
    let xml = fx.xml();
    let Ok(fan) = Fanotify::init(
        InitFlags::FAN_CLASS_NOTIF | InitFlags::FAN_NONBLOCK,
        EventFFlags::O_RDONLY,
    ) else {
        assert!(
            std::env::var_os("KVMROLL_E2E").is_none(),
            "fanotify is not available"
        );
        eprintln!("skipped: fanotify is not available here (root, CAP_SYS_ADMIN)");
        return;
    };
    fan.mark(
        MarkFlags::FAN_MARK_ADD,
        MaskFlags::FAN_OPEN
            | MaskFlags::FAN_ACCESS
            | MaskFlags::FAN_MODIFY
            | MaskFlags::FAN_EVENT_ON_CHILD,
        None,
        Some(fx.dir.path()),
    )
    .unwrap();
    let db = fx.db().display().to_string();
    openers(&fan, &db);
    let child = fx.spawn_hook(VM, "start", "begin", &xml);
    let pid = child.id() as i32;
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // The upkeep it started opens the database, to forward its events:
    // another process.
    let seen = openers(&fan, &db);
    let by_hook: Vec<_> = seen.iter().filter(|(p, _)| *p == pid).collect();
    assert!(by_hook.is_empty(), "start begin opened {by_hook:?}");
    let child = fx.spawn_hook(VM, "prepare", "begin", &xml);
    let pid = child.id() as i32;
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let seen = openers(&fan, &db);
    assert!(
        seen.iter().any(|(p, path)| *p == pid && *path == db),
        "the control: prepare begin with a plugin should open {db}: {seen:?}"
    );
}

/// The upkeep processes this test's hooks started (found by the
/// configuration in their environment, so no one else's).
fn upkeeps_of(conf: &std::path::Path) -> Vec<i32> {
    let want = format!("KVMROLL_CONF={}", conf.display());
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let environ = std::fs::read(e.path().join("environ")).unwrap_or_default();
        let ours = environ.split(|b| *b == 0).any(|v| v == want.as_bytes());
        let upkeep = cmdline.split(|b| *b == 0).any(|a| a == b"upkeep");
        if ours && upkeep {
            pids.push(pid);
        }
    }
    pids
}

/// Events spooled by hooks and forwarded by upkeeps reach the database
/// exactly once and in order, whatever was killed when: 60 events, hooks
/// and upkeeps killed with SIGKILL at random moments (the seed is printed).
/// A hook that finished has its event there once; a killed one at most
/// once (killed before it spooled, it has none).
#[test]
fn spooled_events_arrive_once_and_in_order_whatever_is_killed() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let fx = Fx::new();
    let xml = fx.xml();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("seed {seed}");
    let mut state = seed;
    let mut random = move |below: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % below
    };
    let (mut finished, mut killed) = (Vec::new(), Vec::new());
    let mut mine: Vec<std::process::Child> = Vec::new();
    for n in 0..60 {
        let op = format!("probe{n:02}");
        let mut child = fx.spawn_hook(VM, &op, "begin", &xml);
        if random(3) == 0 {
            std::thread::sleep(std::time::Duration::from_micros(random(6000)));
            let _ = child.kill();
        }
        let status = child.wait().unwrap();
        if status.success() {
            finished.push(op);
        } else {
            killed.push(op);
        }
        // An upkeep of this test's own, killed a moment later, and the
        // hooks' own upkeeps, killed wherever they are.
        if random(2) == 0 {
            mine.push(
                Command::new(env!("CARGO_BIN_EXE_kvmroll-hook"))
                    .arg("upkeep")
                    .env("KVMROLL_CONF", fx.conf())
                    .spawn()
                    .unwrap(),
            );
        }
        std::thread::sleep(std::time::Duration::from_micros(random(3000)));
        if random(3) == 0 {
            for pid in upkeeps_of(&fx.conf()) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }
    for mut c in mine {
        let _ = c.kill();
        let _ = c.wait();
    }
    for pid in upkeeps_of(&fx.conf()) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    eprintln!("{} finished, {} killed", finished.len(), killed.len());
    let events = fx.events(VM);
    let count = |op: &str| events.iter().filter(|e| e.op == op).count();
    for op in &finished {
        assert_eq!(count(op), 1, "seed {seed}: {op} finished");
    }
    for op in &killed {
        assert!(count(op) <= 1, "seed {seed}: {op} was killed");
    }
    let order: Vec<&str> = events.iter().map(|e| e.op.as_str()).collect();
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(order, sorted, "seed {seed}: out of order");
    assert!(!fx.spool().join("bad").exists(), "seed {seed}: a torn file");
}

/// Shown for a cluster database too: with `db` a PostgreSQL URL, `start
/// begin` connects to no server. The "server" is a socket of this test's,
/// which names the process of every connection made to it (SO_PEERCRED)
/// and never answers. The control: `prepare begin` with an allocate plugin
/// connects, gives up at the VM's `kvm_db_connect_timeout`, and tells the
/// plugin why.
#[test]
fn start_begin_connects_to_no_database_server() {
    use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
    use std::os::unix::net::UnixListener;
    let fx = Fx::new();
    fx.set_attr("kvm_db_connect_timeout", "1");
    let told = tell_tale(&fx, &format!("vms/{VM}/allocate.d"), "told");
    fx.plugin("plugins/preboot.d", "10-ok", "true");
    let xml = fx.xml();
    let server = fx.dir.path().join("pg");
    std::fs::create_dir(&server).unwrap();
    let listener = UnixListener::bind(server.join(".s.PGSQL.5432")).unwrap();
    std::fs::write(
        fx.conf(),
        format!(
            "db = postgresql://kvmroll_container:pw@/kvmroll?host={}&port=5432\nroot = {}\nhost = {HOST}\nkvmroll = /bin/false\nspool = {}\n",
            server.display(),
            fx.root().display(),
            fx.spool().display()
        ),
    )
    .unwrap();
    let callers = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = callers.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            let pid = getsockopt(&stream, PeerCredentials).map_or(0, |c| c.pid());
            seen.lock().unwrap().push(pid);
            // Kept open, never answered: a server that hangs.
            held.push(stream);
        }
    });
    let from = |pid: i32| {
        callers
            .lock()
            .unwrap()
            .iter()
            .filter(|p| **p == pid)
            .count()
    };
    let child = fx.spawn_hook(VM, "start", "begin", &xml);
    let pid = child.id() as i32;
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(from(pid), 0, "start begin connected to the server");
    let child = fx.spawn_hook(VM, "prepare", "begin", &xml);
    let pid = child.id() as i32;
    let t = std::time::Instant::now();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(from(pid), 1, "the control: prepare begin should connect");
    assert!(
        t.elapsed() < std::time::Duration::from_secs(4),
        "{:?}",
        t.elapsed()
    );
    let said = std::fs::read_to_string(&told).unwrap();
    assert!(said.starts_with("unreachable=1 reason="), "{said}");
}

/// A VM without kvmroll metadata (defined by hand) is not held up, nor
/// refused, by a cluster database server that does not answer: it passes
/// through, as a VM the database does not know.
#[test]
fn a_vm_without_metadata_passes_through_a_server_that_does_not_answer() {
    let fx = Fx::new();
    let ran = fx.marker("ran");
    fx.plugin(
        "plugins/allocate.d",
        "10-ran",
        &format!("touch {}", ran.display()),
    );
    let nowhere = fx.dir.path().join("no-server");
    std::fs::write(
        fx.conf(),
        format!(
            "db = postgresql://kvmroll_container:pw@/kvmroll?host={}&port=5432\nroot = {}\nhost = {HOST}\nkvmroll = /bin/false\nspool = {}\n",
            nowhere.display(),
            fx.root().display(),
            fx.spool().display()
        ),
    )
    .unwrap();
    let xml = strip_metadata(&fx.xml());
    for (op, subop) in [("prepare", "begin"), ("start", "begin"), ("release", "end")] {
        let out = fx.hook(VM, op, subop, &xml);
        assert_eq!(out.status.code(), Some(0), "{op}: {}", stderr(&out));
        assert!(out.stderr.is_empty(), "{op}: {}", stderr(&out));
    }
    assert!(!ran.exists(), "a plugin ran for a VM it cannot know");
}
