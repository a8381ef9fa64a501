//! Benchmark (not a test): `kvmroll-hook` at `prepare begin` on a known VM,
//! with no plugins and with three no-op plugins, against `/bin/true` given
//! the same stdin and against a shell dispatcher that runs the same three
//! plugins with `run-parts`, all in one run, printed as ratios.
//!
//!     scripts/build.sh --release && cargo bench -p kvmroll-tests --bench hook
//!
//! It times the hook that is installed: the statically linked one that
//! scripts/build.sh builds.
//!
//! Goals: no plugins at most 2x /bin/true (database lookup and event record
//! included); three plugins at most 0.8x the run-parts dispatcher.

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

struct Case<'a> {
    name: &'a str,
    program: PathBuf,
    args: Vec<&'a str>,
    env: Vec<(&'a str, &'a Path)>,
    times: Vec<Duration>,
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
    let plugins = plug_root.join(format!("vms/{VM}/allocate.d"));
    for n in ["10-a", "20-b", "30-c"] {
        script(&plugins.join(n), "exit 0");
    }
    std::fs::create_dir_all(&empty_root).expect("mkdir");
    fix_modes(top, &plugins);
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
            plugins.display()
        ),
    );

    let hook = kvmroll_tests::static_hook();
    println!("hook: {}", hook.display());
    let hook_args = vec![VM, "prepare", "begin", "-"];
    let mut cases = [
        Case {
            name: "/bin/true",
            program: "/bin/true".into(),
            args: hook_args.clone(),
            env: vec![],
            times: vec![],
        },
        Case {
            name: "kvmroll-hook, no plugins",
            program: hook.clone(),
            args: hook_args.clone(),
            env: vec![("KVMROLL_CONF", &conf_empty)],
            times: vec![],
        },
        Case {
            name: "run-parts dispatcher, 3 plugins",
            program: dispatcher.clone(),
            args: vec![VM],
            env: vec![],
            times: vec![],
        },
        Case {
            name: "kvmroll-hook, 3 plugins",
            program: hook.clone(),
            args: hook_args.clone(),
            env: vec![("KVMROLL_CONF", &conf_plugged)],
            times: vec![],
        },
    ];
    // Warm up, then interleave the cases round by round so that the
    // machine's drift touches them alike.
    for c in &cases {
        for _ in 0..5 {
            once(&c.program, &c.args, &c.env, xml.as_bytes());
        }
    }
    for _ in 0..ROUNDS {
        for c in cases.iter_mut() {
            let t = Instant::now();
            for _ in 0..PER_ROUND {
                once(&c.program, &c.args, &c.env, xml.as_bytes());
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
        println!("  {:<34} {:>8.3} ms", c.name, median(c).as_secs_f64() * 1e3);
    }
    let ratio =
        |a: usize, b: usize| median(&cases[a]).as_secs_f64() / median(&cases[b]).as_secs_f64();
    let (r0, r3) = (ratio(1, 0), ratio(3, 2));
    println!(
        "kvmroll-hook, no plugins / /bin/true:          {r0:.2} (goal <= 2.0: {})",
        if r0 <= 2.0 { "met" } else { "MISSED" }
    );
    println!(
        "kvmroll-hook, 3 plugins / run-parts, 3 plugins: {r3:.2} (goal <= 0.8: {})",
        if r3 <= 0.8 { "met" } else { "MISSED" }
    );
}
