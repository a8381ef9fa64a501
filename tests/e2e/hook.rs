//! End to end against a real libvirtd whose qemu hook is the built
//! `kvmroll-hook` (installed by scripts/hook-setup.sh before libvirtd
//! started): real QEMU guests, real `virsh`, and small shell plugins in the
//! hook's plugin root that record what they saw.
//!
//! The database is the one the installed hook reads
//! (/etc/kvmroll/kvmroll.conf), shared with other tests running at the same
//! time: every VM and host name here is unique to this process and test, and
//! every test removes what it added.

use kvmroll_tests::{
    bin, bin_dir, installed_hook, prefix, virsh, virsh_ok, wait_for, HookConf, Kvmroll,
    INSTALLED_HOOK,
};
use std::collections::BTreeMap;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// The installed hook, the cluster and the test VMs
// ---------------------------------------------------------------------------

/// A cluster in the hook's database with this machine as a VM container, or
/// `None` when the test must be skipped (never under `KVMROLL_E2E`).
struct Cluster {
    conf: HookConf,
    host: String,
    k: Kvmroll,
    /// Logs and markers the plugins write.
    dir: tempfile::TempDir,
}

impl Cluster {
    fn get(test: &str) -> Option<Cluster> {
        let conf = installed_hook(test)?;
        let k = Kvmroll::new(&conf.db);
        let host = k.local_container();
        Some(Cluster {
            conf,
            host,
            k,
            dir: tempfile::tempdir().unwrap(),
        })
    }

    fn kvmroll(&self, args: &[&str]) -> Output {
        self.k.run(args)
    }

    fn ok(&self, args: &[&str]) -> String {
        self.k.ok(args)
    }

    /// A file for plugins to write, in this test's own folder.
    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A VM in the database, defined in libvirt, with a guard that removes it.
    fn vm(&self, test: &str) -> TestVm {
        let vm = self.unmanaged_vm(test);
        self.k.add_small_vm(&vm.name, &self.host);
        self.ok(&["vm", "define", &vm.name]);
        vm
    }

    /// Only the guard: a unique name, its plugin folder and its cleanup.
    fn unmanaged_vm(&self, test: &str) -> TestVm {
        let name = format!("{}-{test}", prefix("hook"));
        TestVm {
            plugins: self.conf.root.join("vms").join(&name),
            name,
            db: self.conf.db.clone(),
            hosts: Vec::new(),
        }
    }

    /// The hook's events for a VM, oldest first.
    fn events(&self, vm: &str) -> Vec<Ev> {
        let json = self.ok(&["events", "--vm", vm, "--limit", "1000", "--json"]);
        let mut evs: Vec<Ev> = kvmroll_tests::json::rows(&json)
            .into_iter()
            .map(Ev::from)
            .collect();
        evs.sort_by_key(|e| e.id);
        evs
    }
}

/// A test VM: destroyed, undefined (with any managed-save image), its plugin
/// folder removed and its database rows removed when dropped, even when the
/// test fails.
struct TestVm {
    name: String,
    /// ROOT/vms/NAME
    plugins: PathBuf,
    db: PathBuf,
    /// Extra hosts the test added, removed after the VM.
    hosts: Vec<String>,
}

impl TestVm {
    /// Writes `ROOT/vms/NAME/STAGE.d/FILE`, a `#!/bin/sh` script, mode 0755,
    /// in folders of mode 0755.
    fn plugin(&self, stage: &str, file: &str, body: &str) -> PathBuf {
        let dir = self.plugins.join(format!("{stage}.d"));
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&dir)
            .unwrap();
        for d in [&self.plugins, &dir] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let path = dir.join(file);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    fn state(&self) -> String {
        virsh_ok(&["domstate", &self.name]).trim().to_string()
    }
}

impl Drop for TestVm {
    fn drop(&mut self) {
        let _ = virsh(&["destroy", &self.name]);
        let _ = virsh(&["undefine", &self.name, "--managed-save"]);
        let _ = std::fs::remove_dir_all(&self.plugins);
        let _ = bin("kvmroll")
            .arg("--db")
            .arg(&self.db)
            .args(["--no-sync", "vm", "remove", &self.name])
            .output();
        for h in &self.hosts {
            let _ = bin("kvmroll")
                .arg("--db")
                .arg(&self.db)
                .args(["--no-sync", "host", "remove", h])
                .output();
        }
    }
}

/// `virsh start` that must fail; its stderr.
fn start_refused(vm: &str) -> String {
    let out = virsh(&["start", vm]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "virsh start {vm} succeeded but the hook should have refused it: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    err
}

// ---------------------------------------------------------------------------
// What the plugins recorded, and the hook's events
// ---------------------------------------------------------------------------

/// A plugin that records, one tab-separated `key=value` line per run, its
/// arguments, its environment, whether stdin held this VM's domain, and
/// whether a database write (`kvmroll attr set VM probe_STAGE 1`) succeeded.
fn recorder(log: &Path) -> String {
    format!(
        r#"xml=$(cat)
case "$xml" in
*"<name>$KVMROLL_VM</name>"*) stdin=domain ;;
*) stdin=other ;;
esac
if out=$(kvmroll attr set "$2" "probe_$1" 1 2>&1); then
  write=ok
else
  write="refused: $(printf '%s' "$out" | head -n 1 | tr '\t' ' ')"
fi
printf 'argc=%s\targ1=%s\targ2=%s\tvm=%s\tuuid=%s\tcontainer=%s\tstage=%s\top=%s\tsubop=%s\textra=%s\tdb=%s\treadonly=%s\tstdin=%s\twrite=%s\tkvmroll=%s\n' \
  "$#" "$1" "$2" "${{KVMROLL_VM-unset}}" "${{KVMROLL_UUID-unset}}" "${{KVMROLL_CONTAINER-unset}}" \
  "${{KVMROLL_STAGE-unset}}" "${{KVMROLL_OP-unset}}" "${{KVMROLL_SUBOP-unset}}" \
  "${{KVMROLL_EXTRA-unset}}" "${{KVMROLL_DB-unset}}" "${{KVMROLL_DB_READONLY-unset}}" \
  "$stdin" "$write" "$(command -v kvmroll)" >>'{}'"#,
        log.display()
    )
}

/// The recorded runs, in order.
fn recorded(log: &Path) -> Vec<BTreeMap<String, String>> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|line| {
            line.split('\t')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

/// Waits (a hook may still be finishing) until the log has `n` runs; then
/// they are returned.
fn recorded_n(log: &Path, n: usize) -> Vec<BTreeMap<String, String>> {
    wait_for(Duration::from_secs(10), || recorded(log).len() >= n);
    recorded(log)
}

fn sequence(runs: &[BTreeMap<String, String>]) -> Vec<(String, String, String)> {
    runs.iter()
        .map(|r| (r["stage"].clone(), r["op"].clone(), r["subop"].clone()))
        .collect()
}

fn triple(stage: &str, op: &str, subop: &str) -> (String, String, String) {
    (stage.to_string(), op.to_string(), subop.to_string())
}

/// One row of `kvmroll events --json`.
#[derive(Debug, Clone)]
struct Ev {
    id: i64,
    stage: String,
    op: String,
    subop: String,
    plugin: Option<String>,
    outcome: String,
    status: Option<String>,
    message: String,
}

impl From<BTreeMap<String, Option<String>>> for Ev {
    fn from(mut m: BTreeMap<String, Option<String>>) -> Ev {
        let mut text = |k: &str| m.remove(k).flatten().unwrap_or_default();
        let id = text("id").parse().unwrap_or_default();
        let (stage, op, subop) = (text("stage"), text("op"), text("subop"));
        let (outcome, message) = (text("outcome"), text("message"));
        Ev {
            id,
            stage,
            op,
            subop,
            outcome,
            message,
            plugin: m.remove("plugin").flatten(),
            status: m.remove("status").flatten(),
        }
    }
}

fn plugin_event<'a>(events: &'a [Ev], stage: &str, file: &str) -> &'a Ev {
    let tail = format!("/{stage}.d/{file}");
    events
        .iter()
        .find(|e| e.plugin.as_deref().is_some_and(|p| p.ends_with(&tail)))
        .unwrap_or_else(|| panic!("no event for the plugin {tail}: {events:#?}"))
}

/// Whether a process is gone (or a zombie left for its reaper).
fn gone(pid: &str) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).unwrap_or_default();
    // pid (comm) STATE ...: comm may hold spaces, so look after the last ')'.
    let state = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.trim_start().chars().next());
    matches!(state, None | Some(Some('Z')))
}

// ---------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------

#[test]
fn the_installed_hook_is_the_static_build() {
    // libvirtd runs it at every VM event: no dynamic loader on that path,
    // and nothing a shared-library upgrade could break under it.
    let Some(_cluster) = Cluster::get("the_installed_hook_is_the_static_build") else {
        return;
    };
    let out = std::process::Command::new("ldd")
        .arg(INSTALLED_HOOK)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("statically linked"),
        "ldd {INSTALLED_HOOK}: {said}"
    );
}

#[test]
fn plugins_run_at_each_stage_in_order_with_their_rights() {
    let t = "plugins_run_at_each_stage_in_order_with_their_rights";
    let Some(cl) = Cluster::get(t) else { return };
    let vm = cl.vm("seq");
    let name = vm.name.clone();
    let log = cl.file("seq.log");
    // on-restore.d is there to show it is not used: `restore begin` is a
    // preboot (filter) stage.
    let stages = [
        "allocate",
        "preboot",
        "shutdown",
        "on-started",
        "on-stopped",
        "on-restore",
    ];
    for stage in stages {
        vm.plugin(stage, "10-record", &recorder(&log));
    }
    let uuid = virsh_ok(&["domuuid", &name]).trim().to_string();
    let start = [
        triple("allocate", "prepare", "begin"),
        triple("preboot", "start", "begin"),
        triple("on-started", "started", "begin"),
    ];
    let stop = [
        triple("on-stopped", "stopped", "end"),
        triple("shutdown", "release", "end"),
    ];

    // A cold start.
    let t0 = Instant::now();
    virsh_ok(&["start", &name]);
    let took_start = t0.elapsed();
    assert_eq!(sequence(&recorded_n(&log, 3)), start, "cold start");
    assert_eq!(vm.state(), "running");

    // A managed save.
    let t0 = Instant::now();
    virsh_ok(&["managedsave", &name]);
    let took_save = t0.elapsed();
    let want: Vec<_> = start.iter().chain(&stop).cloned().collect();
    assert_eq!(sequence(&recorded_n(&log, 5)), want, "managedsave");
    assert_eq!(vm.state(), "shut off");
    assert!(
        virsh_ok(&["dominfo", &name]).contains("Managed save:   yes"),
        "no managed-save image"
    );

    // A start that restores the image: restore begin (preboot) first.
    let t0 = Instant::now();
    virsh_ok(&["start", &name]);
    let took_restore = t0.elapsed();
    let mut want = want;
    want.push(triple("preboot", "restore", "begin"));
    want.extend(start.iter().cloned());
    assert_eq!(sequence(&recorded_n(&log, 9)), want, "restore");
    let reason = virsh_ok(&["domstate", "--reason", &name]);
    assert_eq!(reason.trim(), "running (restored)");

    // A destroy.
    let t0 = Instant::now();
    virsh_ok(&["destroy", &name]);
    let took_destroy = t0.elapsed();
    want.extend(stop.iter().cloned());
    recorded_n(&log, 11);
    std::thread::sleep(Duration::from_millis(300));
    let runs = recorded(&log);
    assert_eq!(sequence(&runs), want, "destroy: the whole sequence");
    assert_eq!(vm.state(), "shut off");
    eprintln!(
        "{t}: start {took_start:?}, managedsave {took_save:?}, restore {took_restore:?}, \
         destroy {took_destroy:?}"
    );

    // What every run saw.
    let kvmroll = cl
        .conf
        .kvmroll
        .clone()
        .unwrap_or_else(|| bin_dir().join("kvmroll"));
    for (i, r) in runs.iter().enumerate() {
        let stage = r["stage"].as_str();
        let ctx = format!("run {i} ({stage} at {} {}): {r:?}", r["op"], r["subop"]);
        assert_eq!(r["argc"], "2", "{ctx}");
        assert_eq!(r["arg1"], stage, "{ctx}");
        assert_eq!(r["arg2"], name, "{ctx}");
        assert_eq!(r["vm"], name, "{ctx}");
        assert_eq!(r["uuid"], uuid, "{ctx}");
        assert_eq!(r["container"], cl.host, "{ctx}");
        assert_eq!(r["extra"], "-", "{ctx}");
        assert_eq!(Path::new(&r["db"]), cl.conf.db, "{ctx}");
        assert_eq!(r["stdin"], "domain", "stdin held the domain: {ctx}");
        assert_eq!(
            Path::new(&r["kvmroll"]),
            kvmroll,
            "kvmroll's folder first in PATH: {ctx}"
        );
        if matches!(stage, "allocate" | "shutdown") {
            assert_eq!(r["readonly"], "unset", "{ctx}");
            assert_eq!(r["write"], "ok", "a write in {stage}: {ctx}");
        } else {
            assert_eq!(r["readonly"], "1", "{ctx}");
            assert!(
                r["write"].starts_with("refused") && r["write"].contains("read-only"),
                "a write in {stage} must be refused: {ctx}"
            );
        }
    }
    // The writes that were allowed are in the database; the others are not.
    for (stage, set) in [
        ("allocate", true),
        ("shutdown", true),
        ("preboot", false),
        ("on-started", false),
        ("on-stopped", false),
    ] {
        let out = cl.kvmroll(&["attr", "get", &name, &format!("probe_{stage}")]);
        assert_eq!(
            out.status.success(),
            set,
            "probe_{stage}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // The events table has each run, all fine, and nothing for on-restore.d.
    let events = cl.events(&name);
    let runs_logged: Vec<_> = events
        .iter()
        .filter(|e| e.plugin.is_some())
        .map(|e| (e.stage.clone(), e.op.clone(), e.subop.clone()))
        .collect();
    assert_eq!(runs_logged, want, "plugin events: {events:#?}");
    for e in &events {
        assert!(
            e.outcome == "ok",
            "every invocation and run should be ok (a drift means the hook's render \
             differs from `kvmroll vm define`'s): {e:#?}"
        );
    }

    cl.ok(&["vm", "remove", &name]);
}

/// A failing plugin in STAGE aborts the start with its message; the VM stays
/// off.
fn a_failing_plugin_refuses_the_start(t: &str, stage: &str) {
    let Some(cl) = Cluster::get(t) else { return };
    let vm = cl.vm(&format!("fail-{stage}"));
    let name = vm.name.clone();
    vm.plugin(
        stage,
        "10-fail",
        "echo \"no storage for $KVMROLL_VM\" >&2\nexit 1",
    );
    let t0 = Instant::now();
    let err = start_refused(&name);
    eprintln!("{t}: virsh start refused in {:?}", t0.elapsed());
    assert!(
        err.contains(&format!("no storage for {name}")),
        "the plugin's message reaches virsh: {err}"
    );
    assert_eq!(vm.state(), "shut off");
    let events = cl.events(&name);
    let e = plugin_event(&events, stage, "10-fail");
    assert_eq!(e.outcome, "failed", "{e:#?}");
    assert_eq!(e.status.as_deref(), Some("1"), "{e:#?}");
    assert!(e.message.contains("no storage for"), "{e:#?}");
    cl.ok(&["vm", "remove", &name]);
}

#[test]
fn a_failing_allocate_plugin_refuses_the_start() {
    a_failing_plugin_refuses_the_start("a_failing_allocate_plugin_refuses_the_start", "allocate");
}

#[test]
fn a_failing_preboot_plugin_refuses_the_start() {
    a_failing_plugin_refuses_the_start("a_failing_preboot_plugin_refuses_the_start", "preboot");
}

#[test]
fn a_plugin_past_its_limit_is_killed_with_its_children() {
    let t = "a_plugin_past_its_limit_is_killed_with_its_children";
    let Some(cl) = Cluster::get(t) else { return };
    let vm = cl.vm("hang");
    let name = vm.name.clone();
    cl.ok(&["attr", "set", &name, "kvm_plugin_timeout_allocate", "2"]);
    let (shell, child) = (cl.file("shell.pid"), cl.file("child.pid"));
    vm.plugin(
        "allocate",
        "10-hang",
        &format!(
            "echo $$ > '{}'\nsleep 300 &\necho $! > '{}'\nsleep 300",
            shell.display(),
            child.display()
        ),
    );
    let t0 = Instant::now();
    let err = start_refused(&name);
    let took = t0.elapsed();
    eprintln!("{t}: virsh start refused in {took:?}");
    assert!(
        err.contains("past the allocate stage's limit of 2s"),
        "{err}"
    );
    assert!(
        took >= Duration::from_secs(2),
        "refused before the limit: {took:?}"
    );
    assert!(
        took < Duration::from_secs(10),
        "refused only after {took:?}"
    );
    for (what, file) in [
        ("the plugin's shell", &shell),
        ("its background sleep", &child),
    ] {
        let pid = std::fs::read_to_string(file)
            .unwrap_or_else(|e| panic!("{}: {e}: the plugin did not run", file.display()));
        assert!(
            wait_for(Duration::from_secs(2), || gone(&pid)),
            "{what} (pid {}) is still alive",
            pid.trim()
        );
    }
    assert_eq!(vm.state(), "shut off");
    let events = cl.events(&name);
    let e = plugin_event(&events, "allocate", "10-hang");
    assert_eq!(e.outcome, "timeout", "{e:#?}");
    cl.ok(&["vm", "remove", &name]);
}

#[test]
fn an_allocate_plugin_that_moves_the_vm_refuses_the_local_start() {
    let t = "an_allocate_plugin_that_moves_the_vm_refuses_the_local_start";
    let Some(cl) = Cluster::get(t) else { return };
    let mut vm = cl.vm("move");
    let name = vm.name.clone();
    let other = format!("{}-other", prefix("hook"));
    vm.hosts.push(other.clone());
    cl.ok(&["host", "add", &other, "--appliance", "vm-container"]);
    vm.plugin(
        "allocate",
        "10-move",
        &format!("kvmroll vm set \"$KVMROLL_VM\" --container '{other}'"),
    );
    let err = start_refused(&name);
    assert!(err.contains(&other), "the new container is named: {err}");
    assert_eq!(vm.state(), "shut off");
    let shown = cl.ok(&["vm", "show", &name, "--json"]);
    assert!(
        shown.contains(&format!("\"container\": \"{other}\"")),
        "the plugin's move is in the database: {shown}"
    );
    // Back home, so that removing it talks to this machine's libvirt only.
    // The "other" container does not exist: whatever definition might be
    // left there cannot be checked, which kvmroll says with exit 3.
    std::fs::remove_dir_all(&vm.plugins).unwrap();
    let back = cl.k.run(&["vm", "set", &name, "--container", &cl.host]);
    let said = String::from_utf8_lossy(&back.stderr);
    assert_eq!(back.status.code(), Some(3), "{said}");
    assert!(said.contains(&format!("cannot reach {other}")), "{said}");
    cl.ok(&["vm", "remove", &name]);
    cl.ok(&["host", "remove", &other]);
}

#[test]
fn a_preboot_plugin_rewrites_the_xml_of_a_restore() {
    let t = "a_preboot_plugin_rewrites_the_xml_of_a_restore";
    let Some(cl) = Cluster::get(t) else { return };
    let vm = cl.vm("filter");
    let name = vm.name.clone();
    let description = "<description>restored by kvmroll plugin</description>";
    vm.plugin(
        "preboot",
        "50-describe",
        &format!(
            "if [ \"$KVMROLL_OP\" = restore ]; then\n  \
             sed '0,/<\\/name>/s|</name>|</name>{description}|'\nelse\n  cat >/dev/null\nfi"
        ),
    );
    virsh_ok(&["start", &name]);
    assert!(
        !virsh_ok(&["dumpxml", &name]).contains(description),
        "a cold start does not take hook XML"
    );
    virsh_ok(&["managedsave", &name]);
    virsh_ok(&["start", &name]);
    assert_eq!(
        virsh_ok(&["domstate", "--reason", &name]).trim(),
        "running (restored)"
    );
    let live = virsh_ok(&["dumpxml", &name]);
    assert!(
        live.contains(description),
        "the restored VM runs the plugin's XML: {live}"
    );
    let events = cl.events(&name);
    assert!(
        events
            .iter()
            .any(|e| e.op == "restore" && e.plugin.is_some() && e.outcome == "ok"),
        "{events:#?}"
    );
    virsh_ok(&["destroy", &name]);
    cl.ok(&["vm", "remove", &name]);
}

#[test]
fn a_world_writable_plugin_is_not_run() {
    let t = "a_world_writable_plugin_is_not_run";
    let Some(cl) = Cluster::get(t) else { return };
    let vm = cl.vm("writable");
    let name = vm.name.clone();
    let marker = cl.file("ran");
    let path = vm.plugin(
        "preboot",
        "10-open",
        &format!("touch '{}'", marker.display()),
    );
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).unwrap();
    let err = start_refused(&name);
    assert!(err.contains("writable"), "{err}");
    assert!(!marker.exists(), "the world-writable plugin ran");
    assert_eq!(vm.state(), "shut off");
    let events = cl.events(&name);
    let e = plugin_event(&events, "preboot", "10-open");
    assert_eq!(e.outcome, "refused", "{e:#?}");
    cl.ok(&["vm", "remove", &name]);
}

#[test]
fn a_vm_unknown_to_the_database_passes_through() {
    let t = "a_vm_unknown_to_the_database_passes_through";
    let Some(cl) = Cluster::get(t) else { return };
    let vm = cl.unmanaged_vm("unknown");
    let name = vm.name.clone();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/tiny-guest.xml");
    let xml = std::fs::read_to_string(&fixture).unwrap().replace(
        "<name>kvmroll-fixture</name>",
        &format!("<name>{name}</name>"),
    );
    assert!(xml.contains(&name));
    let file = cl.file("unknown.xml");
    std::fs::write(&file, xml).unwrap();
    // Plugins in its folder are not run either: the VM is not kvmroll's.
    let marker = cl.file("ran");
    for stage in [
        "allocate",
        "preboot",
        "shutdown",
        "on-started",
        "on-stopped",
    ] {
        vm.plugin(
            stage,
            "10-mark",
            &format!("echo $1 >> '{}'", marker.display()),
        );
    }
    virsh_ok(&["define", file.to_str().unwrap()]);
    virsh_ok(&["start", &name]);
    assert_eq!(vm.state(), "running");
    virsh_ok(&["destroy", &name]);
    assert_eq!(vm.state(), "shut off");
    assert!(
        !marker.exists(),
        "plugins ran for a VM kvmroll does not know: {}",
        std::fs::read_to_string(&marker).unwrap_or_default()
    );
    let events = cl.events(&name);
    assert_eq!(events.len(), 1, "{events:#?}");
    let e = &events[0];
    assert_eq!(e.outcome, "pass-through", "{e:#?}");
    assert_eq!(
        (e.stage.as_str(), e.op.as_str(), e.subop.as_str()),
        ("allocate", "prepare", "begin"),
        "{e:#?}"
    );
    assert_eq!(e.plugin, None, "{e:#?}");
}

#[test]
fn release_end_refreshes_a_stale_definition_after_the_hook_returns() {
    let Some(cl) = Cluster::get("release_end_refreshes_a_stale_definition_after_the_hook_returns")
    else {
        return;
    };
    let vm = cl.vm("refresh");
    // A database change libvirt is not told about (as when the container
    // could not be reached): libvirt's definition is now stale.
    cl.ok(&["--no-sync", "vm", "set", &vm.name, "--mem", "96"]);
    let memory = || {
        virsh_ok(&["dumpxml", "--inactive", &vm.name]).contains("<memory unit='KiB'>98304</memory>")
    };
    assert!(!memory(), "libvirt already had the new memory");
    // The start decides from the definition's own metadata, with no
    // database on its path: the definition agrees with itself, so this is
    // no drift (a stale generation is reported where the database is
    // opened anyway, at an allocate stage with plugins).
    virsh_ok(&["start", &vm.name]);
    let drift = cl
        .events(&vm.name)
        .into_iter()
        .filter(|e| e.outcome == "drift")
        .count();
    assert_eq!(
        drift, 0,
        "a definition that agrees with its metadata drifted"
    );
    // At release end the hook hands the refresh to a detached process,
    // which redefines the VM once the hook has returned.
    virsh_ok(&["destroy", &vm.name]);
    assert!(
        wait_for(Duration::from_secs(20), memory),
        "libvirt's definition was not refreshed after release end"
    );
    // And the next start sees no drift.
    virsh_ok(&["start", &vm.name]);
    let drift = cl
        .events(&vm.name)
        .into_iter()
        .filter(|e| e.outcome == "drift")
        .count();
    assert_eq!(drift, 0, "a drift was recorded after the refresh");
}
