//! End to end against a real libvirtd: `kvmroll-guests stop` managed-saves
//! this container's `kvm_autostart` VMs and shuts the others down; after a
//! libvirtd restart (as a reboot would), `start` restores the saved ones from
//! their images, cold-boots those that have none, and moves a damaged image
//! aside; a stop killed or interrupted halfway loses no VM; and the service
//! refuses to run beside libvirt-guests or libvirt's own auto-shutdown.
//!
//! `kvmroll-guests stop` acts on every running domain of this machine, as a
//! host shutdown must, so the tests of this binary run one at a time (a
//! static lock), each with its own database, state folder and uniquely named
//! VMs, and with short shutdown limits (non-autostart test guests ignore the
//! ACPI request, so they are destroyed after 2 s). Before a `stop`, a test
//! waits a while for running domains that are not its own to go away.

use kvmroll_tests::json::{self, Get, Value};
use kvmroll_tests::{
    bin, libvirtd_available, local_host, ok, prefix, virsh_ok, wait_for, Domains, Kvmroll,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// libvirt's managed-save folder.
const SAVE_DIR: &str = "/var/lib/libvirt/qemu/save";
/// Where libvirt keeps each running QEMU's pid.
const PID_DIR: &str = "/run/libvirt/qemu";

/// One test at a time: `stop` acts on every running domain of the host.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

// ---------------------------------------------------------------------------
// The cluster, the guests, and the service
// ---------------------------------------------------------------------------

/// A fresh database with this machine as a 2-CPU container, a fresh state
/// folder, and guards for the domains made.
struct Rig {
    /// Destroys and undefines (with their managed-save images) every domain
    /// the test made, even when it fails; declared first, dropped first.
    domains: Domains,
    dir: tempfile::TempDir,
    host: String,
    prefix: String,
}

impl Rig {
    /// The container gets a 2 s shutdown limit, destroy at the limit, and
    /// `host_attrs` on top; guests get the CPU mode nested KVM needs.
    fn new(test: &str, host_attrs: &[(&str, &str)]) -> Rig {
        let rig = Rig::bare(test);
        let host = rig.host.clone();
        let defaults = [
            ("kvm_guests_shutdown_timeout", "2"),
            ("kvm_guests_on_timeout", "destroy"),
        ];
        for (name, value) in defaults.iter().chain(host_attrs) {
            rig.kvmroll(&["attr", "set", &host, name, value]);
        }
        rig
    }

    /// Only this machine as a container (`Kvmroll::local_container`, no
    /// kvm_guests_* settings), in a fresh database.
    fn bare(test: &str) -> Rig {
        let rig = Rig {
            domains: Domains::default(),
            dir: tempfile::tempdir().unwrap(),
            host: local_host(),
            prefix: prefix(test),
        };
        std::fs::create_dir(rig.state_dir()).unwrap();
        Kvmroll::new(rig.db()).local_container();
        rig
    }

    fn db(&self) -> PathBuf {
        self.dir.path().join("kvmroll.db")
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// `kvmroll --db DB ARGS`, which must succeed.
    fn kvmroll(&self, args: &[&str]) -> String {
        Kvmroll::new(self.db()).ok(args)
    }

    /// Adds 64 MiB one-vCPU guests named PREFIX-SUFFIX (with `kvm_autostart`
    /// true where asked), defines them in libvirt and starts them. Returns
    /// their names in the order given.
    fn guests(&mut self, specs: &[(&str, bool)]) -> Vec<String> {
        let mut names = Vec::new();
        for (suffix, autostart) in specs {
            let name = format!("{}-{suffix}", self.prefix);
            self.domains.0.push(name.clone());
            Kvmroll::new(self.db()).add_small_vm(&name, &self.host);
            if *autostart {
                self.kvmroll(&["attr", "set", &name, "kvm_autostart", "true"]);
            }
            names.push(name);
        }
        let t = Instant::now();
        let mut define = vec!["vm", "define"];
        define.extend(names.iter().map(String::as_str));
        self.kvmroll(&define);
        for name in &names {
            virsh_ok(&["start", name]);
            assert_eq!(domstate(name), "running");
        }
        eprintln!(
            "{} guest(s) defined and started in {:.2}s",
            names.len(),
            t.elapsed().as_secs_f64()
        );
        names
    }

    /// `kvmroll-guests --db DB --host HOST --state-dir STATE ARGS`.
    fn service(&self, args: &[&str]) -> std::process::Command {
        let mut c = bin("kvmroll-guests");
        c.arg("--db")
            .arg(self.db())
            .arg("--host")
            .arg(&self.host)
            .arg("--state-dir")
            .arg(self.state_dir())
            .args(args);
        c
    }

    /// Runs the service to its end; its output and how long it took.
    fn run(&self, args: &[&str]) -> (Output, Duration) {
        let t = Instant::now();
        let out = self.service(args).output().unwrap();
        let took = t.elapsed();
        eprintln!(
            "kvmroll-guests {args:?}: exit {:?} after {:.2}s\n{}",
            out.status.code(),
            took.as_secs_f64(),
            String::from_utf8_lossy(&out.stderr).trim_end()
        );
        (out, took)
    }

    /// Starts the service without waiting for it.
    fn spawn(&self, args: &[&str]) -> Child {
        self.service(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// The journal as it stands, if there is one (it is renamed into place,
    /// so never read half-written).
    fn journal(&self) -> Option<Value> {
        let text = std::fs::read_to_string(self.state_dir().join("journal.json")).ok()?;
        Some(json::parse(&text).expect("the journal is valid JSON"))
    }

    /// What the journal says of a VM.
    fn journal_state(&self, vm: &str) -> String {
        let j = self.journal().expect("a journal");
        j.at("vms")
            .at(vm)
            .at("state")
            .str()
            .unwrap_or("(absent)")
            .to_string()
    }

    /// Each VM's state in the journal.
    fn journal_states(&self) -> BTreeMap<String, String> {
        let Some(j) = self.journal() else {
            return BTreeMap::new();
        };
        j.at("vms")
            .obj()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.at("state").str().unwrap_or("").to_string()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `status --json`, parsed, with its rows by VM name.
    fn status(&self) -> (Value, BTreeMap<String, Value>) {
        let out = self.service(&["status", "--json"]).output().unwrap();
        let text = ok(out, "kvmroll-guests status --json");
        let j = json::parse(&text).unwrap_or_else(|| panic!("status --json: not JSON: {text}"));
        let rows = j
            .at("vms")
            .arr()
            .iter()
            .map(|r| (r.at("name").str().unwrap().to_string(), r.clone()))
            .collect();
        (j, rows)
    }

    /// Waits (up to `KVMROLL_E2E_ALONE_SECS`, default 300 s) until no domain
    /// runs on this machine but this test's: `stop` would shut down or
    /// destroy the others (a benchmark's, another session's). Past the limit
    /// it goes on, with a warning.
    fn wait_alone(&self) {
        let limit = std::env::var("KVMROLL_E2E_ALONE_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(300);
        let end = Instant::now() + Duration::from_secs(limit);
        let mut told = false;
        loop {
            let foreign: Vec<String> = virsh_ok(&["list", "--name"])
                .lines()
                .map(str::trim)
                .filter(|n| !n.is_empty() && !self.domains.0.iter().any(|m| m == n))
                .map(str::to_string)
                .collect();
            if foreign.is_empty() {
                return;
            }
            if Instant::now() > end {
                eprintln!(
                    "warning: domains not made by this test still run after {limit}s; \
                     `kvmroll-guests stop` will shut them down: {foreign:?}"
                );
                return;
            }
            if !told {
                eprintln!("waiting for domains not made by this test to stop: {foreign:?}");
                told = true;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        let t = Instant::now();
        let n = self.domains.0.len();
        drop(std::mem::take(&mut self.domains));
        if n > 0 {
            eprintln!(
                "cleanup of {n} domain(s): {:.2}s",
                t.elapsed().as_secs_f64()
            );
        }
    }
}

/// `virsh domstate VM`: "running", "shut off", ...
fn domstate(vm: &str) -> String {
    virsh_ok(&["domstate", vm]).trim().to_string()
}

/// The state libvirtd last wrote to a running VM's status file
/// (`<domstatus state='paused' ...>`). Unlike `virsh domstate`, reading it
/// does not wait for the VM's lock, which libvirtd holds for the whole of a
/// save: a poll through virsh sees the save only once it is over.
fn status_state(vm: &str) -> Option<String> {
    let text = std::fs::read_to_string(Path::new(PID_DIR).join(format!("{vm}.xml"))).ok()?;
    let rest = &text[text.find("<domstatus state='")? + "<domstatus state='".len()..];
    Some(rest[..rest.find('\'')?].to_string())
}

/// The managed-save image libvirt keeps for a VM.
fn image(vm: &str) -> PathBuf {
    Path::new(SAVE_DIR).join(format!("{vm}.save"))
}

fn cmdline(pid: u32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect(),
    )
}

/// The pids of every QEMU process running this VM (`-name guest=VM,...`).
fn qemu_pids(vm: &str) -> Vec<u32> {
    let tag = format!("guest={vm},");
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().filter_map(Result::ok) {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if let Some(args) = cmdline(pid) {
            if args.first().is_some_and(|a| a.contains("qemu"))
                && args.iter().any(|a| a.starts_with(&tag))
            {
                pids.push(pid);
            }
        }
    }
    pids
}

/// The VM's one QEMU process (libvirt's pid file, which must name the only
/// QEMU running it), and whether it was started to restore an image.
fn qemu_of(vm: &str) -> (u32, bool) {
    let file = format!("{PID_DIR}/{vm}.pid");
    let pid: u32 = std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("{file}: {e}"))
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{file}: {e}"));
    assert_eq!(
        qemu_pids(vm),
        [pid],
        "{vm}: exactly one QEMU, the one in {file}"
    );
    let args = cmdline(pid).unwrap_or_else(|| panic!("{vm}: QEMU pid {pid} is gone"));
    (pid, args.iter().any(|a| a == "-incoming"))
}

/// Asserts the VM runs, restored from a saved image (`-incoming`) or not.
fn assert_runs(vm: &str, restored: bool) {
    assert_eq!(domstate(vm), "running", "{vm}");
    let (pid, incoming) = qemu_of(vm);
    assert_eq!(
        incoming,
        restored,
        "{vm} (QEMU pid {pid}) should have been {}",
        if restored {
            "restored from its image (-incoming)"
        } else {
            "cold-booted (no -incoming)"
        }
    );
}

/// Asserts the VM is off and has a saved image; returns its size.
fn assert_saved(vm: &str) -> u64 {
    assert_eq!(domstate(vm), "shut off", "{vm}");
    assert!(qemu_pids(vm).is_empty(), "{vm}: a QEMU still runs it");
    let meta = std::fs::metadata(image(vm))
        .unwrap_or_else(|e| panic!("{vm}: no managed-save image {}: {e}", image(vm).display()));
    assert!(meta.len() > 0, "{vm}: empty image");
    meta.len()
}

/// Restarts libvirtd as a reboot would (its guests, here all off or
/// foreign, are left alone); how long it took.
fn restart_libvirtd() -> Duration {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/libvirtd.sh");
    let t = Instant::now();
    let out = std::process::Command::new(&script)
        .arg("up")
        .env("KVMROLL_LIBVIRTD_RESTART", "1")
        .output()
        .unwrap();
    let line = ok(out, &format!("{} up", script.display()));
    eprintln!("{}", line.trim_end());
    t.elapsed()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

mod interrupted;
mod save_restore;
