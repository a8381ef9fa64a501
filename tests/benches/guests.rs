//! Benchmark (not a test): `kvmroll-guests stop` then `start` against Debian's
//! own libvirt-guests script (`/usr/lib/libvirt/libvirt-guests.sh`, set to
//! `ON_SHUTDOWN=suspend` and `ON_BOOT=start`), in one run and on the same
//! guests: four guests of 256 MiB, then four of 1 GiB, their RAM full of data.
//! Prints each time, the ratios, and the disk's own direct-I/O write and read
//! bandwidth as the floor (the images' bytes over the bandwidth).
//!
//!     cargo build --release --workspace && cargo bench -p kvmroll-tests --bench guests
//!
//! Goals: kvmroll's stop at most a third of libvirt-guests' stop, its start at
//! most half of libvirt-guests' start, and on the 1 GiB guests both within
//! twice the disk floor.
//!
//! Each set runs a few rounds (`KVMROLL_BENCH_ROUNDS`, default 3; the disk of
//! these machines is noisy), taking the two services and, for reference, four
//! plain `virsh managedsave` / `virsh start` at once, in a rotating order; each
//! round measures the disk first, with dd and direct I/O over about the
//! images' total size. Medians are compared. A stop's time includes a `sync`
//! right after it (zero when the saves were already on disk), and every image
//! is dropped from the page cache before a start, so that each start reads the
//! disk. `KVMROLL_BENCH_VERBOSE=1` prints every run's output;
//! `KVMROLL_BENCH_SIZES=1024` runs one set only, and
//! `KVMROLL_BENCH_ATTRS=kvm_guests_parallel=2,...` sets the container's
//! attributes, to try kvmroll-guests' settings on a machine.
//!
//! It needs root, a libvirtd answering on qemu:///system, `/dev/kvm`, and
//! binutils (`as`, `ld`). Both services act on every guest of the host, so it
//! refuses to run while any guest but its own (`kvmroll-bench-*`) runs. Its
//! guests boot the kernel of `tests/fixtures/halt-kernel/halt.S`, assembled
//! here, which only halts, with a random file as initrd: QEMU copies that file
//! into guest RAM, which a guest could not fill itself in reasonable time
//! under nested KVM. Once booted, each guest's initrd is swapped for a tiny
//! file (QEMU reads the initrd again whenever it starts, even to receive a
//! saved image, and no real guest carries a gigabyte of it), and the guests go
//! through one untimed save and restore, so that every timed round finds
//! QEMU processes alike: restored ones. `KVMROLL_BENCH_KEEP_INITRD=1` keeps
//! the big initrd.
//!
//! Everything it makes (domains, images, /etc/default/libvirt-guests,
//! libvirt-guests' state files, temporary files) is removed at the end, on a
//! panic and on SIGINT, SIGTERM or SIGHUP.

use nix::fcntl::{posix_fadvise, PosixFadviseAdvice};
use nix::sys::signal::{SigSet, Signal};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const PREFIX: &str = "kvmroll-bench-";
const SAVE_DIR: &str = "/var/lib/libvirt/qemu/save";
const PID_DIR: &str = "/run/libvirt/qemu";
const LG_SCRIPT: &str = "/usr/lib/libvirt/libvirt-guests.sh";
const LG_DEFAULTS: &str = "/etc/default/libvirt-guests";
/// libvirt-guests' list of the guests it suspended; while it exists, its
/// `stop` does nothing.
const LG_LISTFILE: &str = "/var/lib/libvirt/libvirt-guests";
/// libvirt-guests' "started" mark, touched by `start`, removed by `stop`.
const LG_LOCK: &str = "/var/lock/libvirt-guests";
const LG_SETTINGS: &str = "# Written by kvmroll's guests benchmark (tests/benches/guests.rs);\n\
     # removed, or the original put back, when it ends.\n\
     URIS=qemu:///system\n\
     ON_BOOT=start\n\
     ON_SHUTDOWN=suspend\n";
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const GUESTS: usize = 4;
/// Guest RAM the initrd leaves free: the kernel sits at 1 MiB, the initrd
/// right after it, and it must end below the top of RAM.
const HEADROOM_MIB: u64 = 4;
/// dd's block size.
const BLOCK: u64 = 4 * MIB;

// ---- cleaning up, whatever happens -------------------------------------

/// What to undo when the run ends, panics or is interrupted.
#[derive(Debug)]
struct Leftovers {
    domains: Vec<String>,
    paths: Vec<PathBuf>,
    /// The original /etc/default/libvirt-guests (`Some(None)`: there was
    /// none) while ours is in place.
    defaults: Option<Option<Vec<u8>>>,
    /// Whether libvirt-guests' lock file existed before the run.
    lock_existed: Option<bool>,
    /// libvirt-guests' list file was absent before the run: remove any left.
    listfile: bool,
}

static LEFTOVERS: Mutex<Leftovers> = Mutex::new(Leftovers {
    domains: Vec::new(),
    paths: Vec::new(),
    defaults: None,
    lock_existed: None,
    listfile: false,
});

fn leftovers<T>(f: impl FnOnce(&mut Leftovers) -> T) -> T {
    f(&mut LEFTOVERS.lock().unwrap_or_else(|e| e.into_inner()))
}

fn image(name: &str) -> PathBuf {
    Path::new(SAVE_DIR).join(format!("{name}.save"))
}

/// `virsh` for the clean-up: never panics.
fn quiet_virsh(args: &[&str]) {
    let _ = Command::new("virsh")
        .args(["-c", "qemu:///system", "-q"])
        .args(args)
        .output();
}

/// Undoes everything recorded in [`LEFTOVERS`]; safe to call twice and from
/// two threads (the second waits for the first, then finds nothing left).
/// Never panics.
fn cleanup() {
    let mut l = LEFTOVERS.lock().unwrap_or_else(|e| e.into_inner());
    for name in std::mem::take(&mut l.domains) {
        quiet_virsh(&["destroy", &name]);
        quiet_virsh(&["undefine", &name, "--managed-save"]);
        let _ = std::fs::remove_file(image(&name));
    }
    if let Some(original) = l.defaults.take() {
        let result = match original {
            Some(bytes) => std::fs::write(LG_DEFAULTS, bytes),
            None => std::fs::remove_file(LG_DEFAULTS),
        };
        if let Err(e) = result {
            eprintln!("guests bench: cannot put back {LG_DEFAULTS}: {e}");
        }
    }
    if std::mem::take(&mut l.listfile) {
        let _ = std::fs::remove_file(LG_LISTFILE);
    }
    match l.lock_existed.take() {
        Some(false) => {
            let _ = std::fs::remove_file(LG_LOCK);
        }
        Some(true) => {
            let _ = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(LG_LOCK);
        }
        None => {}
    }
    for p in std::mem::take(&mut l.paths) {
        let _ = std::fs::remove_dir_all(&p).or_else(|_| std::fs::remove_file(&p));
    }
}

/// The signal that asked the run to end, 0 while none has.
static INTERRUPTED: AtomicI32 = AtomicI32::new(0);

/// Between two steps: ends the run, cleaned up, if a signal asked for it.
/// (Cleaning up from the signal's own thread while the run goes on would
/// race with it: a guest defined a moment after the clean-up would stay.)
fn checkpoint() {
    let sig = INTERRUPTED.load(Ordering::SeqCst);
    if sig != 0 {
        eprintln!("guests bench: interrupted: cleaning up");
        cleanup();
        std::process::exit(128 + sig);
    }
}

/// Cleans up on a panic (the release profile aborts, so no destructor would
/// run) and on SIGINT, SIGTERM, SIGHUP: the first such signal ends the run
/// at the next step (a service already running is let finish), a second one
/// at once. Call before any thread is made: the signals are blocked in every
/// thread but the one that waits for them (children get an empty mask from
/// std).
fn guard() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default(info);
        cleanup();
    }));
    let mut set = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(s);
    }
    set.thread_block().expect("block signals");
    std::thread::spawn(move || {
        while let Ok(sig) = set.wait() {
            if INTERRUPTED.swap(sig as i32, Ordering::SeqCst) == 0 {
                eprintln!(
                    "guests bench: {sig}: stopping after the current step (again to stop at once)"
                );
                continue;
            }
            eprintln!("guests bench: {sig}: cleaning up now");
            cleanup();
            std::process::exit(128 + sig as i32);
        }
    });
}

// ---- small helpers ---------------------------------------------------------

/// Runs a command to its end; panics when it cannot be run.
fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs a command that must succeed; its output.
fn must(cmd: &mut Command) -> Output {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({:?}): {}",
        out.status.code(),
        text(&out)
    );
    out
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

/// Stops the run, before anything was made, with what is missing.
fn refuse(why: &str) -> ! {
    eprintln!("guests bench: cannot run: {why}");
    std::process::exit(1);
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn gib(bytes: u64) -> f64 {
    bytes as f64 / GIB as f64
}

/// A figure from /proc/meminfo, in bytes.
fn meminfo(key: &str) -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// "median s (min-max)".
fn spread(v: &[f64]) -> String {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if v.len() < 2 {
        format!("{:6.2} s", median(v.to_vec()))
    } else {
        format!("{:6.2} s ({lo:.2}-{hi:.2})", median(v.to_vec()))
    }
}

// ---- the halting kernel, its initrd, the guests -------------------------

/// Assembles and links tests/fixtures/halt-kernel/halt.S into `dir`.
fn build_kernel(dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/halt-kernel/halt.S");
    let (obj, elf) = (dir.join("halt.o"), dir.join("halt.elf"));
    must(Command::new("as").arg("--32").arg("-o").arg(&obj).arg(&src));
    must(
        Command::new("ld")
            .args(["-m", "elf_i386", "-Ttext=0x100000", "-o"])
            .arg(&elf)
            .arg(&obj),
    );
    elf
}

/// Writes `bytes` of pseudo-random data (xorshift64*: no page is zero, so
/// the save stream skips none).
fn random_file(path: &Path, bytes: u64, seed: u64) {
    let mut f = std::io::BufWriter::with_capacity(
        BLOCK as usize,
        std::fs::File::create(path).expect("create initrd"),
    );
    let mut x = seed | 1;
    let mut buf = vec![0u8; BLOCK as usize];
    let mut left = bytes;
    while left > 0 {
        for word in buf.chunks_exact_mut(8) {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            word.copy_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
        }
        let n = left.min(BLOCK);
        f.write_all(&buf[..n as usize]).expect("write initrd");
        left -= n;
    }
    f.flush().expect("write initrd");
}

fn domain_xml(name: &str, mem_mib: u64, kernel: &Path, initrd: &Path) -> String {
    format!(
        "<domain type='kvm'>
  <name>{name}</name>
  <memory unit='MiB'>{mem_mib}</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{}</kernel>
    <initrd>{}</initrd>
  </os>
  <cpu mode='host-passthrough'>
    <feature policy='disable' name='arch-capabilities'/>
  </cpu>
  <on_poweroff>destroy</on_poweroff>
  <on_crash>destroy</on_crash>
  <devices>
    <serial type='pty'><target port='0'/></serial>
    <console type='pty'><target type='serial' port='0'/></console>
    <memballoon model='none'/>
  </devices>
</domain>
",
        kernel.display(),
        initrd.display()
    )
}

fn state(name: &str) -> String {
    kvmroll_tests::virsh_ok(&["domstate", name])
        .trim()
        .to_string()
}

/// The guest's QEMU process, from libvirt's pid file.
fn qemu_pid(name: &str) -> Option<u32> {
    std::fs::read_to_string(Path::new(PID_DIR).join(format!("{name}.pid")))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Whether the QEMU process was started to receive a saved image.
fn incoming(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|c| c.split(|b| *b == 0).any(|a| a == b"-incoming"))
}

/// Whether the guest's vCPU sits in the halt loop of halt.S (at 0x10000c):
/// the initrd has been copied into its RAM.
fn halted(name: &str) -> bool {
    let out = kvmroll_tests::virsh(&["qemu-monitor-command", "--hmp", name, "info registers"]);
    let regs = String::from_utf8_lossy(&out.stdout);
    let eip = regs
        .split_whitespace()
        .find_map(|w| w.strip_prefix("EIP="))
        .and_then(|h| u32::from_str_radix(h, 16).ok());
    regs.contains("HLT=1") && eip.is_some_and(|e| (0x10_0000..0x10_0040).contains(&e))
}

/// Running guests that are not this benchmark's.
fn other_guests() -> Vec<String> {
    kvmroll_tests::virsh_ok(&["list", "--name"])
        .lines()
        .map(str::trim)
        .filter(|n| !n.is_empty() && !n.starts_with(PREFIX))
        .map(String::from)
        .collect()
}

// ---- what is measured ------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tool {
    Kvmroll,
    LibvirtGuests,
    /// `virsh managedsave` / `virsh start` of every guest at once: what
    /// libvirt itself can do, for reference.
    Virsh,
}

const TOOLS: [Tool; 3] = [Tool::Kvmroll, Tool::LibvirtGuests, Tool::Virsh];

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::Kvmroll => "kvmroll-guests",
            Tool::LibvirtGuests => "libvirt-guests.sh",
            Tool::Virsh => "virsh, 4 at once (reference)",
        }
    }
}

/// One stop and start.
#[derive(Debug, Clone, Copy)]
struct Run {
    stop: Duration,
    /// The `sync` right after the stop.
    sync: Duration,
    start: Duration,
    image_bytes: u64,
}

impl Run {
    fn stopped(&self) -> f64 {
        secs(self.stop + self.sync)
    }
}

/// One round: the disk, then each tool.
#[derive(Debug)]
struct Round {
    write_bw: f64,
    read_bw: f64,
    runs: Vec<(Tool, Run)>,
}

/// One set of guests of one size, their database and state folder.
#[derive(Debug)]
struct Set {
    label: String,
    mem_mib: u64,
    names: Vec<String>,
    db: PathBuf,
    state_dir: PathBuf,
    host: String,
    boots: Vec<Duration>,
    warmup: Option<Run>,
}

impl Set {
    /// Registers the guests in a database of their own (kvm_autostart true),
    /// defines and boots them with virsh, their RAM filled from an initrd,
    /// then saves and restores them once, untimed.
    fn up(mem_mib: u64, dir: &Path, kernel: &Path) -> Set {
        let dir = dir.join(format!("{mem_mib}m"));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let host = kvmroll_tests::local_host();
        let mut set = Set {
            label: format!("{GUESTS} guests of {mem_mib} MiB, RAM full"),
            mem_mib,
            names: (0..GUESTS)
                .map(|i| format!("{PREFIX}{mem_mib}m-{i}"))
                .collect(),
            db: dir.join("kvmroll.db"),
            state_dir: dir.join("state"),
            host: host.clone(),
            boots: Vec::new(),
            warmup: None,
        };
        let kvmroll = |args: &[&str]| {
            must(
                kvmroll_tests::bin("kvmroll")
                    .arg("--db")
                    .arg(&set.db)
                    .arg("--no-sync")
                    .args(args),
            )
        };
        kvmroll(&[
            "host",
            "add",
            &host,
            "--appliance",
            "vm-container",
            "--cpus",
            "2",
        ]);
        // KVMROLL_BENCH_ATTRS="kvm_guests_parallel=2,..." sets container
        // attributes, to try kvmroll-guests' settings on this machine.
        for pair in std::env::var("KVMROLL_BENCH_ATTRS")
            .unwrap_or_default()
            .split(',')
        {
            if let Some((name, value)) = pair.split_once('=') {
                kvmroll(&["attr", "set", &host, name.trim(), value.trim()]);
            }
        }
        for name in &set.names {
            let mem = mem_mib.to_string();
            kvmroll(&["vm", "add", name, "--container", &host, "--mem", &mem]);
            kvmroll(&["attr", "set", name, "kvm_autostart", "true"]);
        }
        let initrd = dir.join("initrd");
        random_file(
            &initrd,
            (mem_mib - HEADROOM_MIB) * MIB,
            0x6b76_6d72_6f6c_6c00 ^ mem_mib,
        );
        for name in &set.names {
            let xml = dir.join(format!("{name}.xml"));
            std::fs::write(&xml, domain_xml(name, mem_mib, kernel, &initrd)).expect("write xml");
            checkpoint();
            leftovers(|l| l.domains.push(name.clone()));
            kvmroll_tests::virsh_ok(&["define", xml.to_str().expect("utf-8 path")]);
            let t = Instant::now();
            kvmroll_tests::virsh_ok(&["start", name]);
            while !halted(name) {
                checkpoint();
                assert!(
                    t.elapsed() < Duration::from_secs(120),
                    "{name} did not reach halt.S's loop in 120 s (state {})",
                    state(name)
                );
                std::thread::sleep(Duration::from_millis(50));
            }
            set.boots.push(t.elapsed());
        }
        if std::env::var_os("KVMROLL_BENCH_KEEP_INITRD").is_none() {
            let small = dir.join("initrd.small");
            random_file(&small, 4096, 7);
            std::fs::rename(&small, &initrd).expect("swap the initrd");
        }
        std::thread::sleep(Duration::from_secs(1));
        for name in &set.names {
            assert_eq!(state(name), "running", "{name} did not stay running");
            assert!(halted(name), "{name} left halt.S's loop");
        }
        set.warmup = Some(set.round(Tool::Virsh, false));
        set
    }

    fn kvmroll_guests(&self, verb: &str) -> Output {
        let mut cmd = kvmroll_tests::bin("kvmroll-guests");
        cmd.arg("--db")
            .arg(&self.db)
            .arg("--host")
            .arg(&self.host)
            .arg("--state-dir")
            .arg(&self.state_dir)
            .arg(verb);
        let out = run(&mut cmd);
        assert!(
            out.status.success(),
            "kvmroll-guests {verb} failed ({:?}):\n{}",
            out.status.code(),
            text(&out)
        );
        out
    }

    fn libvirt_guests(verb: &str) -> Output {
        let out = run(Command::new(LG_SCRIPT).arg(verb).env("LC_ALL", "C"));
        assert!(
            out.status.success(),
            "{LG_SCRIPT} {verb} failed ({:?}):\n{}",
            out.status.code(),
            text(&out)
        );
        out
    }

    /// `virsh ARGS NAME` for every guest at once.
    fn virsh_all(&self, args: &[&str]) -> Output {
        let workers: Vec<_> = self
            .names
            .iter()
            .map(|name| {
                let mut argv: Vec<String> = args.iter().map(|a| a.to_string()).collect();
                argv.push(name.clone());
                std::thread::spawn(move || {
                    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
                    (argv.join(" "), kvmroll_tests::virsh(&argv))
                })
            })
            .collect();
        let mut all = Output {
            status: Default::default(),
            stdout: Vec::new(),
            stderr: Vec::new(),
        };
        for w in workers {
            let (what, out) = w.join().expect("virsh thread");
            assert!(out.status.success(), "virsh {what}: {}", text(&out));
            all.stdout.extend(out.stdout);
            all.stderr.extend(out.stderr);
        }
        all
    }

    fn stop_with(&self, tool: Tool) -> Output {
        match tool {
            Tool::Kvmroll => self.kvmroll_guests("stop"),
            Tool::LibvirtGuests => {
                let out = Set::libvirt_guests("stop");
                assert!(
                    Path::new(LG_LISTFILE).exists(),
                    "libvirt-guests stop left no list of the guests it suspended ({LG_LISTFILE})"
                );
                out
            }
            Tool::Virsh => self.virsh_all(&["managedsave"]),
        }
    }

    fn start_with(&self, tool: Tool) -> Output {
        match tool {
            Tool::Kvmroll => self.kvmroll_guests("start"),
            Tool::LibvirtGuests => {
                let out = Set::libvirt_guests("start");
                assert!(
                    !Path::new(LG_LISTFILE).exists(),
                    "libvirt-guests start left its list {LG_LISTFILE}"
                );
                out
            }
            Tool::Virsh => self.virsh_all(&["start"]),
        }
    }

    /// One stop and start with `tool`, checked: every guest saved, then
    /// every guest restored.
    fn round(&self, tool: Tool, verbose: bool) -> Run {
        checkpoint();
        let who = tool.name();
        let others = other_guests();
        assert!(
            others.is_empty(),
            "other guests started during the run ({}); not running {who} stop, which would act on them",
            others.join(", ")
        );
        let before: Vec<Option<u32>> = self.names.iter().map(|n| qemu_pid(n)).collect();
        let t = Instant::now();
        let out = self.stop_with(tool);
        let stop = t.elapsed();
        if verbose {
            print_log(&out);
        }
        let dirty = meminfo("Dirty");
        let t = Instant::now();
        nix::unistd::sync();
        let sync = t.elapsed();
        if dirty > 64 * MIB {
            println!(
                "    note: {who} stop left {} MiB dirty; sync took {:.2} s",
                dirty / MIB,
                secs(sync)
            );
        }
        let image_bytes = self.check_saved(who);
        self.uncache_images();
        checkpoint();
        let t = Instant::now();
        let out = self.start_with(tool);
        let start = t.elapsed();
        if verbose {
            print_log(&out);
        }
        self.check_restored(who, &before);
        if tool == Tool::Kvmroll {
            // Its log gives each restore's time: if they add up to the whole
            // start while none of them took most of it, the restores ran one
            // after another.
            let times: Vec<f64> = text(&out)
                .lines()
                .filter_map(|l| l.split("restored from its saved image in ").nth(1))
                .filter_map(|t| t.trim().trim_end_matches('s').parse::<f64>().ok())
                .collect();
            let sum: f64 = times.iter().sum();
            let longest = times.iter().copied().fold(0.0, f64::max);
            if GUESTS > 1 && sum >= 0.75 * secs(start) && longest < 0.6 * secs(start) {
                println!(
                    "    note: kvmroll-guests' restores add up to {sum:.1} s of its {:.2} s start: \
                     they ran one after another, not at once",
                    secs(start)
                );
            }
        }
        Run {
            stop,
            sync,
            start,
            image_bytes,
        }
    }

    /// After a stop: every guest is off with a managed-save image the size of
    /// its RAM; the images' total size.
    fn check_saved(&self, who: &str) -> u64 {
        let mut total = 0;
        for name in &self.names {
            let st = state(name);
            assert_eq!(
                st, "shut off",
                "after {who} stop, {name} is {st}, not saved"
            );
            let size = std::fs::metadata(image(name))
                .unwrap_or_else(|e| panic!("after {who} stop, {name} has no saved image: {e}"))
                .len();
            let dominfo = kvmroll_tests::virsh_ok(&["dominfo", name]);
            assert!(
                dominfo
                    .lines()
                    .any(|l| l.starts_with("Managed save:") && l.trim_end().ends_with("yes")),
                "after {who} stop, libvirt does not see {name}'s managed save:\n{dominfo}"
            );
            assert!(
                size >= (self.mem_mib - HEADROOM_MIB) * MIB * 9 / 10,
                "{name}'s image is {} MiB for {} MiB of RAM: its RAM was not full",
                size / MIB,
                self.mem_mib
            );
            total += size;
        }
        total
    }

    /// Drops every image from the page cache so that a start reads the
    /// disk; says so if the kernel kept some.
    fn uncache_images(&self) {
        for name in &self.names {
            let f = std::fs::File::open(image(name)).expect("open image");
            f.sync_all().expect("fsync image");
            posix_fadvise(f.as_raw_fd(), 0, 0, PosixFadviseAdvice::POSIX_FADV_DONTNEED)
                .expect("fadvise");
        }
        if on_path("fincore") {
            let out = run(Command::new("fincore")
                .args(["--bytes", "--noheadings", "--output", "RES"])
                .args(self.names.iter().map(|n| image(n))));
            let cached: u64 = String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .filter_map(|w| w.parse::<u64>().ok())
                .sum();
            if cached > 16 * MIB {
                println!(
                    "    note: {} MiB of the images stayed in the page cache",
                    cached / MIB
                );
            }
        }
    }

    /// After a start: every guest runs in a new QEMU process that was
    /// started with `-incoming` (restored, not cold-booted), its image gone.
    fn check_restored(&self, who: &str, before: &[Option<u32>]) {
        for (name, old) in self.names.iter().zip(before) {
            let st = state(name);
            assert_eq!(st, "running", "after {who} start, {name} is {st}");
            let pid = qemu_pid(name)
                .unwrap_or_else(|| panic!("after {who} start, {name} has no QEMU pid file"));
            assert_ne!(
                Some(pid),
                *old,
                "after {who} start, {name} still runs its old QEMU process"
            );
            assert!(
                incoming(pid),
                "after {who} start, {name} was cold-booted: its QEMU (pid {pid}) has no -incoming"
            );
            assert!(
                !image(name).exists(),
                "after {who} start, {name}'s image is still there"
            );
        }
    }

    fn down(&self) {
        for name in &self.names {
            let _ = kvmroll_tests::virsh(&["destroy", name]);
            kvmroll_tests::virsh_ok(&["undefine", name, "--managed-save"]);
            let _ = std::fs::remove_file(image(name));
        }
        leftovers(|l| l.domains.retain(|d| !self.names.contains(d)));
    }
}

fn print_log(out: &Output) {
    for line in text(out).lines().filter(|l| !l.trim().is_empty()) {
        println!("    | {line}");
    }
}

// ---- the disk ---------------------------------------------------------------

/// A folder on the save folder's file system for dd's file.
fn dd_dir(tmp: &Path) -> PathBuf {
    let dev = |p: &Path| std::fs::metadata(p).map(|m| m.dev()).ok();
    if dev(tmp).is_some() && dev(tmp) == dev(Path::new(SAVE_DIR)) {
        return tmp.to_path_buf();
    }
    let dir = Path::new(SAVE_DIR).join(format!(".kvmroll-bench-dd-{}", std::process::id()));
    leftovers(|l| l.paths.push(dir.clone()));
    std::fs::create_dir_all(&dir).expect("mkdir in the save folder");
    dir
}

/// dd with direct I/O: (write, read) bandwidth in bytes per second.
fn disk_bandwidth(dir: &Path, bytes: u64) -> (f64, f64) {
    let file = dir.join("dd.bin");
    let count = bytes.div_ceil(BLOCK);
    let total = (count * BLOCK) as f64;
    let t = Instant::now();
    must(
        Command::new("dd")
            .arg("if=/dev/zero")
            .arg(format!("of={}", file.display()))
            .arg("bs=4M")
            .arg(format!("count={count}"))
            .args(["oflag=direct", "conv=fsync", "status=none"]),
    );
    let write = total / secs(t.elapsed());
    let t = Instant::now();
    must(
        Command::new("dd")
            .arg(format!("if={}", file.display()))
            .args(["of=/dev/null", "bs=4M", "iflag=direct", "status=none"]),
    );
    let read = total / secs(t.elapsed());
    std::fs::remove_file(&file).expect("remove dd's file");
    (write, read)
}

fn free_bytes(path: &Path) -> u64 {
    let s = nix::sys::statvfs::statvfs(path).expect("statvfs");
    s.blocks_available() * s.fragment_size()
}

// ---- checks before anything is made ---------------------------------------

fn preflight(largest_set: u64) {
    if !nix::unistd::geteuid().is_root() {
        refuse("it must run as root (it drives qemu:///system and libvirt-guests.sh)");
    }
    for (tool, package) in [
        ("as", "binutils"),
        ("ld", "binutils"),
        ("virsh", "libvirt-clients"),
        ("dd", "coreutils"),
    ] {
        if !on_path(tool) {
            refuse(&format!("`{tool}` is missing: apt-get install {package}"));
        }
    }
    for (file, package) in [
        (LG_SCRIPT, "libvirt-daemon"),
        ("/usr/bin/gettext.sh", "gettext-base"),
        ("/lib/lsb/init-functions", "lsb-base"),
    ] {
        if !Path::new(file).exists() {
            refuse(&format!(
                "{file} is missing (libvirt-guests.sh needs it): apt-get install {package}"
            ));
        }
    }
    if !Path::new("/dev/kvm").exists() {
        refuse("no /dev/kvm: the guests are KVM guests");
    }
    if !kvmroll_tests::libvirtd_available("guests bench") {
        std::process::exit(0);
    }
    let others = other_guests();
    if !others.is_empty() {
        refuse(&format!(
            "other guests run on qemu:///system ({}); kvmroll-guests and libvirt-guests would save or \
             shut them down: stop them first",
            others.join(", ")
        ));
    }
    if Path::new(LG_LISTFILE).exists() {
        refuse(&format!(
            "{LG_LISTFILE} exists: libvirt-guests has guests of its own to bring back \
             (run its start, or remove the file)"
        ));
    }
    // Images and dd's file in turn, plus the initrd.
    let need_disk = largest_set + 2 * GIB;
    let free = free_bytes(Path::new(SAVE_DIR)).min(free_bytes(&std::env::temp_dir()));
    if free < need_disk {
        refuse(&format!(
            "{:.1} GiB free where {:.1} GiB is needed (images, dd's file, initrd)",
            gib(free),
            gib(need_disk)
        ));
    }
    // At first boot each QEMU keeps a copy of its initrd besides the RAM.
    let need_mem = largest_set * 2 + 2 * GIB;
    if meminfo("MemAvailable") < need_mem {
        refuse(&format!(
            "{:.1} GiB of memory available where {:.1} GiB is needed",
            gib(meminfo("MemAvailable")),
            gib(need_mem)
        ));
    }
    // Guests of an earlier run that died without cleaning up: ours by name.
    let all = kvmroll_tests::virsh_ok(&["list", "--all", "--name"]);
    for name in all.lines().map(str::trim).filter(|n| n.starts_with(PREFIX)) {
        println!("removing {name}, left by an earlier run");
        let _ = kvmroll_tests::virsh(&["destroy", name]);
        let _ = kvmroll_tests::virsh(&["undefine", name, "--managed-save"]);
    }
    let original = std::fs::read(LG_DEFAULTS).ok();
    leftovers(|l| {
        l.listfile = true;
        l.lock_existed = Some(Path::new(LG_LOCK).exists());
        l.defaults = Some(original);
    });
    std::fs::write(LG_DEFAULTS, LG_SETTINGS).expect("write /etc/default/libvirt-guests");
}

// ---- the report -------------------------------------------------------------

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}

/// Prints a set's figures; whether its goals are met.
fn report(set: &Set, rounds: &[Round], floor_goal: bool) -> bool {
    let of = |tool: Tool| -> Vec<Run> {
        rounds
            .iter()
            .flat_map(|r| {
                r.runs
                    .iter()
                    .filter(|(t, _)| *t == tool)
                    .map(|(_, run)| *run)
            })
            .collect()
    };
    let kv = of(Tool::Kvmroll);
    let bytes = median(kv.iter().map(|r| r.image_bytes as f64).collect());
    let floor_w: Vec<f64> = rounds
        .iter()
        .zip(&kv)
        .map(|(r, run)| run.image_bytes as f64 / r.write_bw)
        .collect();
    let floor_r: Vec<f64> = rounds
        .iter()
        .zip(&kv)
        .map(|(r, run)| run.image_bytes as f64 / r.read_bw)
        .collect();
    println!();
    println!(
        "{}: images {:.2} GiB in all; {} round(s), medians (min-max)",
        set.label,
        bytes / GIB as f64,
        rounds.len()
    );
    println!(
        "  cold boots, initrd copied into RAM: {} s",
        set.boots
            .iter()
            .map(|d| format!("{:.2}", secs(*d)))
            .collect::<Vec<_>>()
            .join(" ")
    );
    if let Some(w) = set.warmup {
        println!(
            "  untimed first save and restore (virsh, 4 at once): stop {:.2} s, start {:.2} s",
            w.stopped(),
            secs(w.start)
        );
    }
    println!("  {:<32} {:<24} {:<24}", "", "stop (+ sync)", "start");
    let mut med = std::collections::BTreeMap::new();
    for tool in TOOLS {
        let runs = of(tool);
        let stop: Vec<f64> = runs.iter().map(Run::stopped).collect();
        let start: Vec<f64> = runs.iter().map(|r| secs(r.start)).collect();
        let sync = median(runs.iter().map(|r| secs(r.sync)).collect());
        println!(
            "  {:<32} {:<24} {:<24}{}",
            tool.name(),
            spread(&stop),
            spread(&start),
            if sync >= 0.01 {
                format!(" (sync {sync:.2} s)")
            } else {
                String::new()
            }
        );
        med.insert(tool as usize, (median(stop), median(start)));
    }
    let wbw: Vec<f64> = rounds.iter().map(|r| r.write_bw / 1e6).collect();
    let rbw: Vec<f64> = rounds.iter().map(|r| r.read_bw / 1e6).collect();
    println!(
        "  {:<32} {:<24} {:<24}",
        "disk, dd direct I/O (MB/s)",
        format!("write {:.0}", median(wbw)),
        format!("read {:.0}", median(rbw))
    );
    println!(
        "  {:<32} {:<24} {:<24}",
        "disk floor (images / bandwidth)",
        spread(&floor_w),
        spread(&floor_r)
    );
    let (kv_stop, kv_start) = med[&(Tool::Kvmroll as usize)];
    let (lg_stop, lg_start) = med[&(Tool::LibvirtGuests as usize)];
    let (vs_stop, vs_start) = med[&(Tool::Virsh as usize)];
    let (fw, fr) = (median(floor_w), median(floor_r));
    println!(
        "  {:<32} {:<24} {:<24}",
        "twice the floor",
        format!("{:6.2} s", 2.0 * fw),
        format!("{:6.2} s", 2.0 * fr)
    );
    let ratio = |what: &str, a: f64, b: f64| {
        println!(
            "  {:<32} {:<24} {:<24}",
            what,
            format!("{a:6.2}"),
            format!("{b:6.2}")
        );
    };
    ratio(
        "kvmroll / libvirt-guests",
        kv_stop / lg_stop,
        kv_start / lg_start,
    );
    ratio("kvmroll / disk floor", kv_stop / fw, kv_start / fr);
    ratio(
        "kvmroll / virsh, 4 at once",
        kv_stop / vs_stop,
        kv_start / vs_start,
    );
    let mut all = true;
    let mut goal = |what: &str, value: f64, limit: f64| {
        let ok = value <= limit;
        all &= ok;
        println!(
            "  goal: {what:<42} {value:6.3} <= {limit:.3}: {}",
            verdict(ok)
        );
    };
    goal(
        "kvmroll stop / libvirt-guests stop",
        kv_stop / lg_stop,
        1.0 / 3.0,
    );
    goal(
        "kvmroll start / libvirt-guests start",
        kv_start / lg_start,
        0.5,
    );
    if floor_goal {
        goal("kvmroll stop / disk floor", kv_stop / fw, 2.0);
        goal("kvmroll start / disk floor", kv_start / fr, 2.0);
    }
    all
}

fn main() {
    guard();
    // KVMROLL_BENCH_SIZES=1024 runs one set only, for trying settings.
    let sizes: Vec<u64> = std::env::var("KVMROLL_BENCH_SIZES")
        .ok()
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .filter(|v: &Vec<u64>| !v.is_empty())
        .unwrap_or_else(|| vec![256, 1024]);
    let rounds: usize = std::env::var("KVMROLL_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
        .max(1);
    let verbose = std::env::var_os("KVMROLL_BENCH_VERBOSE").is_some();
    let largest = sizes.iter().max().copied().unwrap_or(0) * MIB * GUESTS as u64;
    preflight(largest);
    let tmp = tempfile::Builder::new()
        .prefix("kvmroll-bench-guests-")
        .tempdir()
        .expect("tempdir")
        .keep();
    leftovers(|l| l.paths.push(tmp.clone()));
    let kernel = build_kernel(&tmp);
    let dd = dd_dir(&tmp);

    let mut results = Vec::new();
    for mem in sizes {
        checkpoint();
        let set = Set::up(mem, &tmp, &kernel);
        println!("{}:", set.label);
        let mut done = Vec::new();
        for r in 0..rounds {
            checkpoint();
            let (write_bw, read_bw) = disk_bandwidth(&dd, mem * MIB * GUESTS as u64);
            println!(
                "  round {}: disk write {:.0} MB/s, read {:.0} MB/s",
                r + 1,
                write_bw / 1e6,
                read_bw / 1e6
            );
            let mut order = TOOLS;
            order.rotate_left(r % TOOLS.len());
            let mut runs = Vec::new();
            for tool in order {
                // kvmroll-guests' own log lines (one per VM) in the first round.
                let show = verbose || (r == 0 && tool == Tool::Kvmroll);
                let run = set.round(tool, show);
                println!(
                    "  round {}: {:<30} stop {:6.2} s (+ sync {:.2} s), start {:6.2} s",
                    r + 1,
                    tool.name(),
                    secs(run.stop),
                    secs(run.sync),
                    secs(run.start)
                );
                runs.push((tool, run));
            }
            done.push(Round {
                write_bw,
                read_bw,
                runs,
            });
        }
        set.down();
        results.push((set, done));
    }

    let mut all = true;
    for (set, rounds) in &results {
        all &= report(set, rounds, set.mem_mib >= 1024);
    }
    println!();
    println!(
        "stop times include a sync right after the stop returned; every image was dropped from \
         the page cache before each start"
    );
    println!("all goals: {}", verdict(all));
    cleanup();
}
