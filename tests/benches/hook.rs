//! Benchmark (not a test): `kvmroll-hook` on a known VM, with no plugins
//! and with three no-op plugins, at `prepare begin` (allocate: plugins
//! there make the hook open the database) and at `start begin` (preboot:
//! the common path, no database), against `/bin/true` given the same stdin,
//! against a shell dispatcher that runs the same three plugins with
//! `run-parts`, and against running the three plugins directly, one after
//! another, all in one run, printed as ratios.
//!
//!     scripts/build.sh --release && cargo bench -p kvmroll-tests --bench hook
//!
//! It times the hook that is installed: the statically linked one that
//! scripts/build.sh builds.
//!
//! Goals: `start begin` with no plugins at most 1.3x /bin/true; with three
//! plugins, the hook's own cost over running them directly at most 0.3 ms;
//! `prepare begin` with no plugins at most 2x /bin/true, and with three
//! plugins at most 0.8x the run-parts dispatcher.

use kvmroll_core::sqlite::SqliteStore;
use kvmroll_core::{Change, Host, OpenMode, Store, Vm};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const VM: &str = "hosted-vm-0-0-0";
const ROUNDS: usize = 10;
const PER_ROUND: usize = 40;

fn script(path: &Path, body: &str) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).expect("write");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

fn fix_modes(top: &Path, dir: &Path) {
    let mut d = dir;
    while d.starts_with(top) {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        match d.parent() {
            Some(p) => d = p,
            None => break,
        }
    }
}

/// Runs `cmd` once per call with `xml` on stdin; panics on failure.
fn once(program: &Path, args: &[&str], env: &[(&str, &Path)], xml: &[u8]) {
    let mut child = Command::new(program)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    // /bin/true does not read its stdin: a broken pipe is expected there.
    let _ = child.stdin.take().expect("stdin").write_all(xml);
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{}: {}",
        program.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One program run per step, one after another.
struct Step<'a> {
    program: PathBuf,
    args: Vec<&'a str>,
    env: Vec<(&'a str, &'a Path)>,
}

struct Case<'a> {
    name: &'a str,
    steps: Vec<Step<'a>>,
    times: Vec<Duration>,
}

impl<'a> Case<'a> {
    fn new(name: &'a str, program: impl Into<PathBuf>, args: Vec<&'a str>) -> Case<'a> {
        Case {
            name,
            steps: vec![Step {
                program: program.into(),
                args,
                env: vec![],
            }],
            times: vec![],
        }
    }

    fn env(mut self, key: &'a str, value: &'a Path) -> Case<'a> {
        self.steps[0].env.push((key, value));
        self
    }

    fn run(&self, xml: &[u8]) {
        for s in &self.steps {
            once(&s.program, &s.args, &s.env, xml);
        }
    }
}

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let top = dir.path();
    let db = top.join("kvmroll.db");
    let mut store = SqliteStore::open(&db, OpenMode::Create).expect("db");
    let mut host = Host::new("bench-container", "vm-container");
    host.cpus = 4;
    let vm = Vm {
        id: 0,
        name: VM.into(),
        container: Some("bench-container".into()),
        memory_mib: 64,
        vcpus: 1,
        uuid: "0f5a2b3c-1d2e-4f50-8a6b-7c8d9e0f1a2b".into(),
        cdrom: None,
        virt_type: "kvm".into(),
        disks: vec![],
        nics: vec![],
        stale: false,
        generation: 0,
    };
    store
        .update(&mut |_| {
            Ok(vec![
                Change::AddHost(host.clone()),
                Change::AddVm(vm.clone()),
            ])
        })
        .expect("write");
    let xml =
        kvmroll_core::render_domain(&store.snapshot().expect("snapshot"), VM).expect("render");
    drop(store);

    let empty_root = top.join("empty");
    let plug_root = top.join("plugged");
    let mut plugins = Vec::new();
    for stage in ["allocate", "preboot"] {
        let folder = plug_root.join(format!("vms/{VM}/{stage}.d"));
        for n in ["10-a", "20-b", "30-c"] {
            script(&folder.join(n), "exit 0");
            if stage == "preboot" {
                plugins.push(folder.join(n));
            }
        }
        fix_modes(top, &folder);
    }
    std::fs::create_dir_all(&empty_root).expect("mkdir");
    fix_modes(top, &empty_root);
    let conf = |name: &str, root: &Path| {
        let p = top.join(name);
        std::fs::write(
            &p,
            format!(
                "db = {}\nroot = {}\nhost = bench-container\nkvmroll = /bin/false\n",
                db.display(),
                root.display()
            ),
        )
        .expect("conf");
        p
    };
    let conf_empty = conf("empty.conf", &empty_root);
    let conf_plugged = conf("plugged.conf", &plug_root);
    let dispatcher = top.join("run-parts-dispatcher");
    script(
        &dispatcher,
        &format!(
            "exec run-parts --arg=allocate --arg=\"$1\" {}",
            plug_root.join(format!("vms/{VM}/allocate.d")).display()
        ),
    );

    let hook = kvmroll_tests::static_hook();
    println!("hook: {}", hook.display());
    let prepare = vec![VM, "prepare", "begin", "-"];
    let start = vec![VM, "start", "begin", "-"];
    let mut direct = Case::new("3 plugins run directly", &plugins[0], vec!["preboot", VM]);
    for p in &plugins[1..] {
        direct.steps.push(Step {
            program: p.clone(),
            args: vec!["preboot", VM],
            env: vec![],
        });
    }
    let mut cases = [
        Case::new("/bin/true", "/bin/true", start.clone()),
        Case::new("kvmroll-hook start begin, no plugins", &hook, start.clone())
            .env("KVMROLL_CONF", &conf_empty),
        direct,
        Case::new("kvmroll-hook start begin, 3 plugins", &hook, start.clone())
            .env("KVMROLL_CONF", &conf_plugged),
        Case::new(
            "kvmroll-hook prepare begin, no plugins",
            &hook,
            prepare.clone(),
        )
        .env("KVMROLL_CONF", &conf_empty),
        Case::new("run-parts dispatcher, 3 plugins", &dispatcher, vec![VM]),
        Case::new(
            "kvmroll-hook prepare begin, 3 plugins",
            &hook,
            prepare.clone(),
        )
        .env("KVMROLL_CONF", &conf_plugged),
    ];
    // Warm up, then interleave the cases round by round so that the
    // machine's drift touches them alike.
    for c in &cases {
        for _ in 0..5 {
            c.run(xml.as_bytes());
        }
    }
    for _ in 0..ROUNDS {
        for c in cases.iter_mut() {
            let t = Instant::now();
            for _ in 0..PER_ROUND {
                c.run(xml.as_bytes());
            }
            c.times.push(t.elapsed() / PER_ROUND as u32);
        }
    }
    let median = |c: &Case| {
        let mut t = c.times.clone();
        t.sort();
        t[t.len() / 2]
    };
    println!("per invocation, median of {ROUNDS} rounds of {PER_ROUND}:");
    for c in &cases {
        println!("  {:<40} {:>8.3} ms", c.name, median(c).as_secs_f64() * 1e3);
    }
    let ms = |i: usize| median(&cases[i]).as_secs_f64() * 1e3;
    let verdict = |met: bool| if met { "met" } else { "MISSED" };
    let start_ratio = ms(1) / ms(0);
    let overhead = ms(3) - ms(2);
    let prepare_ratio = ms(4) / ms(0);
    let vs_run_parts = ms(6) / ms(5);
    println!(
        "start begin, no plugins / /bin/true:              {start_ratio:.2} (goal <= 1.3: {})",
        verdict(start_ratio <= 1.3)
    );
    println!(
        "start begin, 3 plugins - the 3 run directly:      {overhead:.3} ms (goal <= 0.3 ms: {})",
        verdict(overhead <= 0.3)
    );
    println!(
        "prepare begin, no plugins / /bin/true:            {prepare_ratio:.2} (goal <= 2.0: {})",
        verdict(prepare_ratio <= 2.0)
    );
    println!(
        "prepare begin, 3 plugins / run-parts, 3 plugins:  {vs_run_parts:.2} (goal <= 0.8: {})",
        verdict(vs_run_parts <= 0.8)
    );
}
