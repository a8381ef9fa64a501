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
//! It needs root, a libvirtd answering on qemu:///system, `/dev/kvm`, and
//! binutils (`as`, `ld`). Both services act on every guest of the host, so it
//! refuses to run while any guest but its own (`kvmroll-bench-*`) runs. Its
//! guests boot the kernel of `tests/fixtures/halt-kernel/halt.S`, assembled
//! here, which only halts, with a random file as initrd: QEMU copies that file
//! into guest RAM, which a guest could not fill itself in reasonable time
//! under nested KVM. Once booted, each guest's initrd is swapped for a tiny
//! file, so that a restore (QEMU loads the initrd again when it starts, even
//! to receive a saved image) does not read a gigabyte no real guest would
//! carry; `KVMROLL_BENCH_KEEP_INITRD=1` keeps the big one.
//!
//! A stop's time includes a `sync` right after it (zero when the saves were
//! already on disk), and every image is dropped from the page cache before a
//! start, so that both services write to and read from the disk itself.
//!
//! Everything it makes (domains, images, /etc/default/libvirt-guests, temporary
//! files) is removed at the end, on a panic and on SIGINT, SIGTERM or SIGHUP.

use nix::fcntl::{posix_fadvise, PosixFadviseAdvice};
use nix::sys::signal::{SigSet, Signal};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, TryLockError};
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

fn put_back_defaults(original: Option<Vec<u8>>) {
    let result = match original {
        Some(bytes) => std::fs::write(LG_DEFAULTS, bytes),
        None => std::fs::remove_file(LG_DEFAULTS),
    };
    if let Err(e) = result {
        eprintln!("guests bench: cannot put back {LG_DEFAULTS}: {e}");
    }
}

/// Undoes everything recorded in [`LEFTOVERS`]; safe to call twice.
fn cleanup() {
    let mut l = match LEFTOVERS.try_lock() {
        Ok(l) => l,
        Err(TryLockError::Poisoned(p)) => p.into_inner(),
        Err(TryLockError::WouldBlock) => {
            eprintln!("guests bench: cannot clean up (busy); left behind: see `virsh list --all | grep {PREFIX}`");
            return;
        }
    };
    for name in std::mem::take(&mut l.domains) {
        let _ = kvmroll_tests::virsh(&["destroy", &name]);
        let _ = kvmroll_tests::virsh(&["undefine", &name, "--managed-save"]);
        let _ = std::fs::remove_file(image(&name));
    }
    if let Some(original) = l.defaults.take() {
        put_back_defaults(original);
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

/// Cleans up on a panic (the release profile aborts, so no destructor would
/// run) and on SIGINT, SIGTERM, SIGHUP. Call before any thread is made: the
/// signals are blocked in every thread but the one that waits for them
/// (children get an empty mask from std).
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
        if let Ok(sig) = set.wait() {
            eprintln!("guests bench: {sig}: cleaning up");
            cleanup();
            std::process::exit(128 + sig as i32);
        }
    });
}

/// Runs a command to its end; panics when it cannot be run.
fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

/// Runs a command that must succeed; its stdout.
fn must(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({:?}): {}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
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

/// Writes `bytes` of pseudo-random data (xorshift64*, no two pages alike, so
/// nothing in a save stream is skipped as a zero page).
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
    let text = String::from_utf8_lossy(&out.stdout);
    let eip = text
        .split_whitespace()
        .find_map(|w| w.strip_prefix("EIP="))
        .and_then(|h| u32::from_str_radix(h, 16).ok());
    text.contains("HLT=1") && eip.is_some_and(|e| (0x10_0000..0x10_0040).contains(&e))
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
}

/// Times of one set.
#[derive(Debug, Default)]
struct Figures {
    boots: Vec<Duration>,
    image_bytes: u64,
    kv_stop: Duration,
    kv_sync: Duration,
    kv_start: Duration,
    lg_stop: Duration,
    lg_sync: Duration,
    lg_start: Duration,
}

impl Set {
    /// Registers the guests in a database of their own (kvm_autostart true)
    /// and defines and boots them with virsh, their RAM filled from `initrd`.
    fn up(label: &str, mem_mib: u64, dir: &Path, kernel: &Path, figures: &mut Figures) -> Set {
        let dir = dir.join(format!("{mem_mib}m"));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let host = kvmroll_tests::local_host();
        let set = Set {
            label: label.to_string(),
            mem_mib,
            names: (0..GUESTS)
                .map(|i| format!("{PREFIX}{mem_mib}m-{i}"))
                .collect(),
            db: dir.join("kvmroll.db"),
            state_dir: dir.join("state"),
            host: host.clone(),
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
        for name in &set.names {
            kvmroll(&[
                "vm",
                "add",
                name,
                "--container",
                &host,
                "--mem",
                &mem_mib.to_string(),
            ]);
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
            leftovers(|l| l.domains.push(name.clone()));
            kvmroll_tests::virsh_ok(&["define", xml.to_str().expect("utf-8 path")]);
            let t = Instant::now();
            kvmroll_tests::virsh_ok(&["start", name]);
            while !halted(name) {
                assert!(
                    t.elapsed() < Duration::from_secs(120),
                    "{name} did not reach halt.S's loop in 120 s (state {})",
                    state(name)
                );
                std::thread::sleep(Duration::from_millis(50));
            }
            figures.boots.push(t.elapsed());
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
        set
    }

    fn kvmroll_guests(&self, verb: &str) -> (Duration, Output) {
        let mut cmd = kvmroll_tests::bin("kvmroll-guests");
        cmd.arg("--db")
            .arg(&self.db)
            .arg("--host")
            .arg(&self.host)
            .arg("--state-dir")
            .arg(&self.state_dir)
            .arg(verb);
        let t = Instant::now();
        let out = run(&mut cmd);
        let took = t.elapsed();
        assert!(
            out.status.success(),
            "kvmroll-guests {verb} failed ({:?}):\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
        (took, out)
    }

    fn pids(&self) -> Vec<Option<u32>> {
        self.names.iter().map(|n| qemu_pid(n)).collect()
    }

    /// After a stop: every guest is off with a managed-save image; the
    /// images' total size.
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
    /// disk; warns if the kernel kept some.
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
                    "  note: {} MiB of the images stayed in the page cache",
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

/// The kernel's count of dirty page-cache bytes.
fn dirty_bytes() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("Dirty:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Writes back what a stop left dirty; how long that took.
fn sync_after(who: &str) -> Duration {
    let dirty = dirty_bytes();
    let t = Instant::now();
    nix::unistd::sync();
    let took = t.elapsed();
    if dirty > 64 * MIB {
        println!(
            "  note: {who} stop left {} MiB dirty; sync took {:.2} s",
            dirty / MIB,
            secs(took)
        );
    }
    took
}

fn print_log(out: &Output) {
    for stream in [&out.stdout, &out.stderr] {
        for line in String::from_utf8_lossy(stream)
            .lines()
            .filter(|l| !l.trim().is_empty())
        {
            println!("    | {line}");
        }
    }
}

fn libvirt_guests(verb: &str) -> (Duration, Output) {
    let mut cmd = Command::new(LG_SCRIPT);
    cmd.arg(verb).env("LC_ALL", "C");
    let t = Instant::now();
    let out = run(&mut cmd);
    let took = t.elapsed();
    assert!(
        out.status.success(),
        "{LG_SCRIPT} {verb} failed ({:?}):\n{}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (took, out)
}

/// Both services, one after the other, on the set's running guests.
fn measure(set: &Set, f: &mut Figures) {
    println!("{}: kvmroll-guests", set.label);
    let before = set.pids();
    let (stop, out) = set.kvmroll_guests("stop");
    print_log(&out);
    f.kv_stop = stop;
    f.kv_sync = sync_after("kvmroll-guests");
    f.image_bytes = set.check_saved("kvmroll-guests");
    set.uncache_images();
    let (start, out) = set.kvmroll_guests("start");
    print_log(&out);
    f.kv_start = start;
    set.check_restored("kvmroll-guests", &before);

    println!("{}: libvirt-guests.sh", set.label);
    let original = std::fs::read(LG_DEFAULTS).ok();
    leftovers(|l| l.defaults = Some(original.clone()));
    std::fs::write(LG_DEFAULTS, LG_SETTINGS).expect("write /etc/default/libvirt-guests");
    let before = set.pids();
    let (stop, out) = libvirt_guests("stop");
    print_log(&out);
    f.lg_stop = stop;
    f.lg_sync = sync_after("libvirt-guests");
    let lg_bytes = set.check_saved("libvirt-guests");
    assert!(
        Path::new(LG_LISTFILE).exists(),
        "libvirt-guests stop left no list of the guests it suspended ({LG_LISTFILE})"
    );
    set.uncache_images();
    let (start, out) = libvirt_guests("start");
    print_log(&out);
    f.lg_start = start;
    set.check_restored("libvirt-guests", &before);
    leftovers(|l| l.defaults = None);
    put_back_defaults(original);
    if lg_bytes.abs_diff(f.image_bytes) > f.image_bytes / 20 {
        println!(
            "  note: images differ: {} MiB after kvmroll-guests, {} MiB after libvirt-guests",
            f.image_bytes / MIB,
            lg_bytes / MIB
        );
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

fn mem_available() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemAvailable:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

// ---- checks before anything is made ---------------------------------------

fn preflight(sizes: &[u64]) {
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
        ("/lib/lsb/init-functions", "sysvinit-utils (lsb-base)"),
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
    let running = kvmroll_tests::virsh_ok(&["list", "--name"]);
    let others: Vec<&str> = running
        .lines()
        .map(str::trim)
        .filter(|n| !n.is_empty() && !n.starts_with(PREFIX))
        .collect();
    if !others.is_empty() {
        refuse(&format!(
            "other guests run on qemu:///system ({}); kvmroll-guests and libvirt-guests would save or \
             shut them down: stop them first",
            others.join(", ")
        ));
    }
    if Path::new(LG_LISTFILE).exists() {
        refuse(&format!(
            "{LG_LISTFILE} exists: libvirt-guests has guests of its own to bring back (run its start, or remove it)"
        ));
    }
    let largest: u64 = sizes.iter().max().copied().unwrap_or(0) * MIB * GUESTS as u64;
    let need_disk = largest + 2 * GIB;
    let free = free_bytes(Path::new(SAVE_DIR)).min(free_bytes(&std::env::temp_dir()));
    if free < need_disk {
        refuse(&format!(
            "{:.1} GiB free where {:.1} GiB is needed (images, dd's file, initrd)",
            free as f64 / GIB as f64,
            need_disk as f64 / GIB as f64
        ));
    }
    // At first boot each QEMU keeps a copy of its initrd besides the RAM.
    let need_mem = largest * 2 + 2 * GIB;
    if mem_available() < need_mem {
        refuse(&format!(
            "{:.1} GiB of memory available where {:.1} GiB is needed",
            mem_available() as f64 / GIB as f64,
            need_mem as f64 / GIB as f64
        ));
    }
    // Guests of an earlier run that died without cleaning up: ours by name.
    let all = kvmroll_tests::virsh_ok(&["list", "--all", "--name"]);
    for name in all.lines().map(str::trim).filter(|n| n.starts_with(PREFIX)) {
        println!("removing {name}, left by an earlier run");
        let _ = kvmroll_tests::virsh(&["destroy", name]);
        let _ = kvmroll_tests::virsh(&["undefine", name, "--managed-save"]);
    }
    leftovers(|l| {
        l.listfile = true;
        l.lock_existed = Some(Path::new(LG_LOCK).exists());
    });
}

// ---- the report -------------------------------------------------------------

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}

fn report(label: &str, f: &Figures, write_bw: f64, read_bw: f64, floor_goal: bool) -> bool {
    let kv_stop = f.kv_stop + f.kv_sync;
    let lg_stop = f.lg_stop + f.lg_sync;
    let floor_w = f.image_bytes as f64 / write_bw;
    let floor_r = f.image_bytes as f64 / read_bw;
    let r_stop = secs(kv_stop) / secs(lg_stop);
    let r_start = secs(f.kv_start) / secs(f.lg_start);
    let (x_stop, x_start) = (secs(kv_stop) / floor_w, secs(f.kv_start) / floor_r);
    println!();
    println!(
        "{label}: images {:.2} GiB in all; cold boots (initrd copied into RAM) {}",
        f.image_bytes as f64 / GIB as f64,
        f.boots
            .iter()
            .map(|d| format!("{:.2}", secs(*d)))
            .collect::<Vec<_>>()
            .join(" ")
            + " s"
    );
    println!("  {:<36} {:>9} {:>9}", "", "stop", "start");
    println!(
        "  {:<36} {:>7.2} s {:>7.2} s   (stop: {:.2} s + sync {:.2} s)",
        "kvmroll-guests",
        secs(kv_stop),
        secs(f.kv_start),
        secs(f.kv_stop),
        secs(f.kv_sync)
    );
    println!(
        "  {:<36} {:>7.2} s {:>7.2} s   (stop: {:.2} s + sync {:.2} s)",
        "libvirt-guests.sh",
        secs(lg_stop),
        secs(f.lg_start),
        secs(f.lg_stop),
        secs(f.lg_sync)
    );
    println!(
        "  {:<36} {:>9.2} {:>9.2}",
        "kvmroll / libvirt-guests", r_stop, r_start
    );
    println!(
        "  {:<36} {:>7.2} s {:>7.2} s",
        "disk floor (bytes / bandwidth)", floor_w, floor_r
    );
    println!(
        "  {:<36} {:>7.2} s {:>7.2} s",
        "twice the floor",
        2.0 * floor_w,
        2.0 * floor_r
    );
    println!(
        "  {:<36} {:>9.2} {:>9.2}",
        "kvmroll / floor", x_stop, x_start
    );
    let mut all = true;
    let mut goal = |what: &str, value: f64, limit: f64| {
        let ok = value <= limit;
        all &= ok;
        println!(
            "  goal: {what:<44} {value:>5.2} <= {limit:.2}: {}",
            verdict(ok)
        );
    };
    goal("kvmroll stop / libvirt-guests stop", r_stop, 1.0 / 3.0);
    goal("kvmroll start / libvirt-guests start", r_start, 0.5);
    if floor_goal {
        goal("kvmroll stop / disk floor", x_stop, 2.0);
        goal("kvmroll start / disk floor", x_start, 2.0);
    }
    all
}

fn main() {
    guard();
    let sizes = [256, 1024];
    preflight(&sizes);
    let tmp = tempfile::Builder::new()
        .prefix("kvmroll-bench-guests-")
        .tempdir()
        .expect("tempdir")
        .keep();
    leftovers(|l| l.paths.push(tmp.clone()));
    let kernel = build_kernel(&tmp);

    let largest = sizes.iter().max().copied().unwrap_or(0) * MIB * GUESTS as u64;
    let (write_bw, read_bw) = disk_bandwidth(&dd_dir(&tmp), largest);
    println!(
        "disk, direct I/O on {SAVE_DIR}'s file system, {:.1} GiB: write {:.0} MB/s, read {:.0} MB/s",
        largest as f64 / GIB as f64,
        write_bw / 1e6,
        read_bw / 1e6
    );

    let mut results = Vec::new();
    for mem in sizes {
        let label = format!("{GUESTS} guests of {mem} MiB, RAM full");
        let mut f = Figures::default();
        let set = Set::up(&label, mem, &tmp, &kernel, &mut f);
        measure(&set, &mut f);
        set.down();
        results.push((label, f, mem >= 1024));
    }

    let mut all = true;
    for (label, f, floor_goal) in &results {
        all &= report(label, f, write_bw, read_bw, *floor_goal);
    }
    println!();
    println!(
        "stop times include a sync right after the service returned; images were dropped from the page cache before each start"
    );
    println!("all goals: {}", verdict(all));
    cleanup();
}
