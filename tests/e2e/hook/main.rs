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

mod stages;
mod vms;
