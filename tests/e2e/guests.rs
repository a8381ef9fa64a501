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

// ---------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------

#[test]
fn a_clean_stop_saves_the_autostart_vms_and_start_restores_them() {
    let _serial = serial();
    let t = "a_clean_stop_saves_the_autostart_vms_and_start_restores_them";
    if !libvirtd_available(t) {
        return;
    }
    let mut rig = Rig::new("guests-clean", &[]);
    let vms = rig.guests(&[
        ("a", true),
        ("b", true),
        ("c", true),
        ("d", true),
        ("e", false),
    ]);
    let (saved, other) = (&vms[..4], &vms[4]);
    rig.wait_alone();

    let (out, stop_took) = rig.run(&["stop"]);
    assert_eq!(out.status.code(), Some(0), "stop: {}", stderr(&out));
    let mut sizes = BTreeMap::new();
    for vm in saved {
        sizes.insert(vm.clone(), assert_saved(vm));
        assert_eq!(rig.journal_state(vm), "saved", "{vm}");
    }
    // The fifth ignored its shutdown request and was destroyed at the limit.
    assert_eq!(domstate(other), "shut off");
    assert!(!image(other).exists(), "{other} was saved");
    assert_eq!(rig.journal_state(other), "destroyed");
    let (st, rows) = rig.status();
    assert_eq!(st.at("phase").str(), Some("stopped"));
    assert_eq!(st.at("host").str(), Some(rig.host.as_str()));
    for vm in saved {
        let row = &rows[vm];
        assert_eq!(row.at("autostart"), &Value::Bool(true), "{vm}");
        assert_eq!(row.at("state").str(), Some("shutoff"), "{vm}");
        assert_eq!(
            row.at("saved_image").str(),
            Some(image(vm).to_str().unwrap()),
            "{vm}"
        );
        assert_eq!(row.at("image_size").num(), Some(sizes[vm] as f64), "{vm}");
        let journal = row.at("journal");
        assert_eq!(journal.at("state").str(), Some("saved"), "{vm}");
        assert_eq!(journal.at("was_running"), &Value::Bool(true), "{vm}");
    }
    assert_eq!(rows[other].at("autostart"), &Value::Bool(false));
    assert_eq!(rows[other].at("saved_image"), &Value::Null);
    assert_eq!(
        rows[other].at("journal").at("state").str(),
        Some("destroyed")
    );

    // The reboot: libvirtd comes up again and finds the images.
    let restart_took = restart_libvirtd();
    for vm in saved {
        assert_eq!(assert_saved(vm), sizes[vm], "{vm}: image changed");
    }

    let (out, start_took) = rig.run(&["start"]);
    assert_eq!(out.status.code(), Some(0), "start: {}", stderr(&out));
    for vm in saved {
        assert_runs(vm, true);
        assert!(!image(vm).exists(), "{vm}: image left after its restore");
        assert_eq!(rig.journal_state(vm), "restored", "{vm}");
    }
    assert_eq!(domstate(other), "shut off", "{other} was started");
    assert!(qemu_pids(other).is_empty());
    let (st, rows) = rig.status();
    assert_eq!(st.at("phase").str(), Some("started"));
    for vm in saved {
        assert_eq!(rows[vm].at("state").str(), Some("running"), "{vm}");
        assert_eq!(rows[vm].at("saved_image"), &Value::Null, "{vm}");
        assert_eq!(
            rows[vm].at("journal").at("state").str(),
            Some("restored"),
            "{vm}"
        );
    }
    assert_eq!(rows[other].at("state").str(), Some("shutoff"));
    assert_eq!(
        rows[other].at("journal").at("state").str(),
        Some("destroyed")
    );
    eprintln!(
        "timings: stop {:.2}s (4 saves, 1 shutdown limit of 2s), libvirtd restart {:.2}s, start {:.2}s",
        stop_took.as_secs_f64(),
        restart_took.as_secs_f64(),
        start_took.as_secs_f64()
    );

    // The admin turns one off; the next stop answers only for the VMs it
    // found running, not for what the journal says of the last run.
    virsh_ok(&["destroy", &saved[0]]);
    let (out, _) = rig.run(&["stop"]);
    assert_eq!(out.status.code(), Some(0), "second stop: {}", stderr(&out));
    for vm in &saved[1..] {
        assert_saved(vm);
    }
    assert_eq!(rig.journal_state(&saved[0]), "restored");
}

#[test]
fn after_a_power_loss_start_cold_boots_the_autostart_vms() {
    let _serial = serial();
    let t = "after_a_power_loss_start_cold_boots_the_autostart_vms";
    if !libvirtd_available(t) {
        return;
    }
    let mut rig = Rig::new("guests-power", &[]);
    let vms = rig.guests(&[("a", true), ("b", true), ("c", false)]);
    // Power lost: every QEMU gone without a save, the daemon restarted.
    for vm in &vms {
        virsh_ok(&["destroy", vm]);
        assert!(!image(vm).exists());
    }
    let restart_took = restart_libvirtd();

    let (out, start_took) = rig.run(&["start"]);
    assert_eq!(out.status.code(), Some(0), "start: {}", stderr(&out));
    for vm in &vms[..2] {
        assert_runs(vm, false);
        assert_eq!(rig.journal_state(vm), "booted", "{vm}");
    }
    assert_eq!(domstate(&vms[2]), "shut off", "{} was started", vms[2]);
    assert!(qemu_pids(&vms[2]).is_empty());
    eprintln!(
        "timings: libvirtd restart {:.2}s, start {:.2}s (2 cold boots)",
        restart_took.as_secs_f64(),
        start_took.as_secs_f64()
    );
}

#[test]
fn a_truncated_image_is_quarantined_and_its_vm_cold_booted() {
    let _serial = serial();
    let t = "a_truncated_image_is_quarantined_and_its_vm_cold_booted";
    if !libvirtd_available(t) {
        return;
    }
    let mut rig = Rig::new("guests-corrupt", &[]);
    let vms = rig.guests(&[("a", true), ("b", true), ("c", true)]);
    rig.wait_alone();
    let (out, stop_took) = rig.run(&["stop"]);
    assert_eq!(out.status.code(), Some(0), "stop: {}", stderr(&out));
    for vm in &vms {
        assert_saved(vm);
    }

    // b's image loses its second half.
    let bad = &vms[1];
    let full = std::fs::metadata(image(bad)).unwrap().len();
    let half = full / 2;
    std::fs::OpenOptions::new()
        .write(true)
        .open(image(bad))
        .unwrap()
        .set_len(half)
        .unwrap();

    let (out, start_took) = rig.run(&["start"]);
    assert_eq!(out.status.code(), Some(0), "start: {}", stderr(&out));
    assert_runs(bad, false);
    assert!(!image(bad).exists(), "{bad}: damaged image left in place");
    let quarantine = rig.state_dir().join("quarantine");
    let kept: Vec<(String, u64)> = std::fs::read_dir(&quarantine)
        .unwrap_or_else(|e| panic!("{}: {e}", quarantine.display()))
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().unwrap().len(),
            )
        })
        .collect();
    assert_eq!(kept.len(), 1, "one image quarantined: {kept:?}");
    assert!(
        kept[0].0.starts_with(&format!("{bad}.")),
        "quarantined image named for {bad}: {kept:?}"
    );
    assert_eq!(
        kept[0].1, half,
        "the quarantined image is the truncated one"
    );
    assert_eq!(rig.journal_state(bad), "quarantined");
    let err = stderr(&out);
    assert!(
        err.lines()
            .any(|l| l.contains(bad.as_str()) && l.contains("cold-boot")),
        "no log line says {bad} was cold-booted: {err}"
    );
    for vm in [&vms[0], &vms[2]] {
        assert_runs(vm, true);
        assert_eq!(rig.journal_state(vm), "restored", "{vm}");
    }
    eprintln!(
        "timings: stop {:.2}s (3 saves), start {:.2}s (2 restores, 1 quarantine and cold boot); \
         image {full} bytes cut to {half}",
        stop_took.as_secs_f64(),
        start_took.as_secs_f64()
    );
}

#[test]
fn a_stop_killed_halfway_loses_no_vm_and_starts_none_twice() {
    let _serial = serial();
    let t = "a_stop_killed_halfway_loses_no_vm_and_starts_none_twice";
    if !libvirtd_available(t) {
        return;
    }
    let mut rig = Rig::new("guests-killed", &[("kvm_guests_parallel", "2")]);
    let vms = rig.guests(&[("a", true), ("b", true), ("c", true), ("d", true)]);
    rig.wait_alone();

    // Kill the stop with SIGKILL once a save is under way in libvirtd (the
    // journal says "saving" and libvirt has paused the VM to write it out):
    // a save in flight, which libvirtd goes on with after its client is
    // gone, and others not yet begun.
    let spawned = Instant::now();
    let mut child = rig.spawn(&["stop"]);
    let mut in_flight = None;
    let mut ended = None;
    wait_for(Duration::from_secs(30), || {
        in_flight = rig
            .journal_states()
            .into_iter()
            .filter(|(_, s)| s == "saving")
            .map(|(n, _)| n)
            .find(|n| status_state(n).as_deref() == Some("paused"));
        ended = child.try_wait().unwrap();
        in_flight.is_some() || ended.is_some()
    });
    let Some(in_flight) = in_flight else {
        // Say why: the stop ended early, or never got a save going.
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        panic!(
            "no save was seen under way (journal \"saving\", VM paused); stop {}: {}; \
             journal: {:?}; libvirt: {:?}",
            if ended.is_some() {
                "ended first"
            } else {
                "still ran after 30 s"
            },
            stderr(&out),
            rig.journal_states(),
            vms.iter()
                .map(|v| (v.as_str(), domstate(v)))
                .collect::<Vec<_>>()
        );
    };
    child.kill().unwrap();
    let killed_after = spawned.elapsed();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&out.status),
        Some(9),
        "stop ended before the kill: {}",
        stderr(&out)
    );
    // Then at once `start` (the journal is only read: no delay).
    let at_kill = rig.journal_states();
    let (out, start_took) = rig.run(&["start"]);
    assert!(
        matches!(out.status.code(), Some(0 | 3)),
        "start: {:?}: {}",
        out.status.code(),
        stderr(&out)
    );
    let after_start = rig.journal_states();
    eprintln!(
        "stop killed after {:.2}s while {in_flight} was being saved; journal then: {at_kill:?}; \
         after start: {after_start:?}; libvirt now: {:?}",
        killed_after.as_secs_f64(),
        vms.iter()
            .map(|v| (v.as_str(), domstate(v), image(v).exists()))
            .collect::<Vec<_>>()
    );
    let check = |when: &str| {
        let listed = virsh_ok(&["list", "--state-running", "--name"]);
        for vm in &vms {
            assert_eq!(
                domstate(vm),
                "running",
                "{vm} {when}; start's journal says {:?}; it has a saved image: {}",
                after_start.get(vm),
                image(vm).exists()
            );
            assert_eq!(
                listed.lines().filter(|l| l.trim() == vm).count(),
                1,
                "{vm} listed once as running {when}: {listed}"
            );
            qemu_of(vm);
        }
    };
    check("right after start");
    if out.status.code() == Some(3) {
        let err = stderr(&out);
        assert!(
            err.contains("not where they should be"),
            "start exited 3 without a report: {err}"
        );
    }
    // A save cut off with its client may still run in libvirtd, and would
    // pause its VM and then stop it: for longer than any of these saves
    // takes, no VM may leave the running state, even for a moment.
    let watch_until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < watch_until {
        for vm in &vms {
            let state = status_state(vm);
            assert_eq!(state.as_deref(), Some("running"), "{vm} after start");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    check("4 s after start");
    for vm in &vms {
        assert!(!image(vm).exists(), "{vm}: a saved image is left over");
    }
    eprintln!(
        "timings: killed after {:.2}s, start {:.2}s",
        killed_after.as_secs_f64(),
        start_took.as_secs_f64()
    );
}

#[test]
fn sigterm_during_stop_lets_the_save_in_flight_finish() {
    let _serial = serial();
    let t = "sigterm_during_stop_lets_the_save_in_flight_finish";
    if !libvirtd_available(t) {
        return;
    }
    let mut rig = Rig::new("guests-term", &[("kvm_guests_parallel", "1")]);
    let vms = rig.guests(&[("a", true), ("b", true), ("c", true)]);
    rig.wait_alone();

    let spawned = Instant::now();
    let child = rig.spawn(&["stop"]);
    let mut first = None;
    wait_for(Duration::from_secs(30), || {
        first = rig
            .journal_states()
            .into_iter()
            .find(|(_, s)| s == "saving")
            .map(|(n, _)| n);
        first.is_some()
    });
    let first = first.expect("the journal never showed a save under way");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let signalled = Instant::now();
    let signalled_after = spawned.elapsed();
    let out = child.wait_with_output().unwrap();
    let exit_after_term = signalled.elapsed();
    let err = stderr(&out);
    eprintln!(
        "SIGTERM after {:.2}s while {first} was saving; stop exited {:?} {:.2}s later\n{}",
        signalled_after.as_secs_f64(),
        out.status.code(),
        exit_after_term.as_secs_f64(),
        err.trim_end()
    );
    assert_eq!(out.status.code(), Some(3), "stop: {err}");

    // The save in flight completed.
    assert_saved(&first);
    assert_eq!(rig.journal_state(&first), "saved");
    // The others were never begun: reported, and still running.
    let rest: Vec<&String> = vms.iter().filter(|v| **v != first).collect();
    assert_eq!(rest.len(), 2);
    let report = err
        .lines()
        .find(|l| l.contains("not saved"))
        .unwrap_or_else(|| panic!("no line reports the VMs not saved: {err}"));
    for vm in &rest {
        assert!(report.contains(vm.as_str()), "{vm} not in {report:?}");
        assert_eq!(rig.journal_state(vm), "not-saved", "{vm}");
        assert_runs(vm, false);
        assert!(!image(vm).exists(), "{vm} has an image");
    }
    assert!(
        !report.contains(&format!("{first},")) && !report.ends_with(first.as_str()),
        "{first} was saved but is reported not saved: {report:?}"
    );
    let (st, _) = rig.status();
    assert_eq!(st.at("phase").str(), Some("stopped"));
}

#[test]
fn it_refuses_to_run_beside_libvirt_guests_or_libvirt_auto_shutdown() {
    let _serial = serial();
    // No VMs, no libvirtd needed: the refusal comes before either is used.
    // Should it not, the container's libvirt is one that is not there, so a
    // broken check cannot save or stop this machine's domains.
    let rig = Rig::bare("guests-refuse");
    rig.kvmroll(&[
        "attr",
        "set",
        &rig.host,
        "libvirt_uri",
        "qemu+unix:///system?socket=/nonexistent/libvirt-sock",
    ]);
    let root = tempfile::tempdir().unwrap();
    let r = root.path();

    // An enabled libvirt-guests unit (a dangling link is enough: systemd's
    // enablement is the link).
    let wants = r.join("etc/systemd/system/multi-user.target.wants");
    std::fs::create_dir_all(&wants).unwrap();
    std::os::unix::fs::symlink(
        "/lib/systemd/system/libvirt-guests.service",
        wants.join("libvirt-guests.service"),
    )
    .unwrap();
    refused(&rig, r, &["systemctl disable", "libvirt-guests"]);
    std::fs::remove_file(wants.join("libvirt-guests.service")).unwrap();

    // The same under sysvinit.
    let rc2 = r.join("etc/rc2.d");
    std::fs::create_dir_all(&rc2).unwrap();
    std::os::unix::fs::symlink("../init.d/libvirt-guests", rc2.join("S01libvirt-guests")).unwrap();
    refused(&rig, r, &["update-rc.d libvirt-guests disable"]);
    std::fs::remove_file(rc2.join("S01libvirt-guests")).unwrap();

    // libvirt's own auto-shutdown.
    std::fs::create_dir_all(r.join("etc/libvirt")).unwrap();
    std::fs::write(
        r.join("etc/libvirt/qemu.conf"),
        "user = \"root\"\nauto_shutdown_try_save = \"all\"\n",
    )
    .unwrap();
    refused(&rig, r, &["auto_shutdown_try_save", "\"none\""]);
}

/// `start` and `stop` under `--root ROOT` exit 1 with one stderr line that
/// holds each of `says`, having touched nothing (no journal).
fn refused(rig: &Rig, root: &Path, says: &[&str]) {
    for cmd in ["start", "stop"] {
        let out = rig
            .service(&["--root", root.to_str().unwrap(), cmd])
            .output()
            .unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{cmd}: {err}");
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{cmd}: one line: {err}");
        for s in says {
            assert!(lines[0].contains(s), "{cmd}: {s:?} not in {:?}", lines[0]);
        }
        assert!(
            !rig.state_dir().join("journal.json").exists(),
            "{cmd} wrote a journal though it refused to run"
        );
    }
}
