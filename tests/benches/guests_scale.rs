//! Benchmark (not a test): sixteen guests of 256 MiB, their RAM full of
//! data, saved and brought back on one node of the cluster rig (a private
//! libvirtd in its own namespaces, never the machine's) by, in turn:
//! `kvmroll-guests stop` / `start`; sixteen plain `virsh managedsave` /
//! `virsh start`, as many at once as kvmroll-guests chose
//! (`kvm_guests_parallel`, `auto` by default); and Debian's libvirt-guests
//! script (`ON_SHUTDOWN=suspend`, `ON_BOOT=start`, its defaults file private
//! to the node). Prints each time, the ratios to plain virsh and
//! libvirt-guests, and the disk floor (the images' bytes over the save
//! folder's synced write and read rates, measured with dd).
//!
//!     cargo build --workspace && cargo bench -p kvmroll-tests --bench guests_scale
//!
//! Goals (issue 15): stop and start each at most 1.0x plain virsh, and
//! within 1.5x of the disk floor. `KVMROLL_BENCH_ROUNDS` (default 1) runs
//! more rounds, in a rotating order; medians are compared.
//! `KVMROLL_BENCH_ATTRS=kvm_guests_parallel=4,...` sets the container's
//! attributes. A stop's time includes a `sync` after it; every image is
//! dropped from the page cache before a start. The rig removes everything
//! it made when the benchmark ends, however it ends.

use kvmroll_tests::halting::{build_kernel, domain_xml, random_file};
use kvmroll_tests::rig::{self, Node, Rig};
use kvmroll_tests::{bin_dir, Kvmroll};
use nix::fcntl::{posix_fadvise, PosixFadviseAdvice};
use std::collections::VecDeque;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const NODE: &str = "bench-g";
const GUESTS: usize = 16;
const MEM_MIB: u64 = 256;
/// Guest RAM the initrd leaves free (the kernel at 1 MiB, the initrd after).
const HEADROOM_MIB: u64 = 4;
const SAVE_DIR: &str = "/var/lib/libvirt/qemu/save";
const STATE: &str = "/var/lib/kvmroll/guests";
const LG_SCRIPT: &str = "/usr/lib/libvirt/libvirt-guests.sh";
const LG_SETTINGS: &str = "URIS=qemu:///system\nON_BOOT=start\nON_SHUTDOWN=suspend\n";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tool {
    Kvmroll,
    Virsh,
    LibvirtGuests,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::Kvmroll => "kvmroll-guests",
            Tool::Virsh => "virsh, bounded",
            Tool::LibvirtGuests => "libvirt-guests.sh",
        }
    }
}

struct Bench<'a> {
    node: &'a Node,
    db: PathBuf,
    names: Vec<String>,
    /// How many at once plain virsh runs: what kvmroll-guests chose.
    width: usize,
    lg: bool,
}

fn checked(out: Output, what: &str) -> Output {
    assert!(
        out.status.success(),
        "{what} failed ({:?}): {}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

impl Bench<'_> {
    fn kvmroll_guests(&self, verb: &str) -> Output {
        let out = self
            .node
            .command(bin_dir().join("kvmroll-guests"))
            .args(["--host", NODE, "--state-dir", STATE, verb])
            .env("KVMROLL_DB", &self.db)
            .env_remove("KVMROLL_CONF")
            .output()
            .expect("kvmroll-guests runs");
        checked(out, &format!("kvmroll-guests {verb}"))
    }

    /// `virsh VERB NAME` for every guest, `width` at once, from the machine
    /// on the node's socket.
    fn virsh_each(&self, verb: &str) {
        let queue = Mutex::new(self.names.iter().collect::<VecDeque<_>>());
        let uri = self.node.libvirt_uri();
        std::thread::scope(|s| {
            for _ in 0..self.width {
                s.spawn(|| loop {
                    let Some(name) = queue.lock().unwrap().pop_front() else {
                        return;
                    };
                    let out = Command::new("virsh")
                        .args(["-q", "-c", &uri, verb, name])
                        .output()
                        .expect("virsh runs");
                    checked(out, &format!("virsh {verb} {name}"));
                });
            }
        });
    }

    fn libvirt_guests(&self, verb: &str) {
        let out = self
            .node
            .command(LG_SCRIPT)
            .arg(verb)
            .env("LC_ALL", "C")
            .output()
            .expect("libvirt-guests.sh runs");
        checked(out, &format!("libvirt-guests.sh {verb}"));
    }

    fn images(&self) -> Vec<PathBuf> {
        let dir = self.node.outside(SAVE_DIR);
        self.names
            .iter()
            .map(|n| dir.join(format!("{n}.save")))
            .collect()
    }

    /// Stop, sync, then start with the images out of the page cache; the
    /// three times. Every guest must come back restored.
    fn round(&self, tool: Tool) -> [Duration; 3] {
        let t = Instant::now();
        match tool {
            Tool::Kvmroll => drop(self.kvmroll_guests("stop")),
            Tool::Virsh => self.virsh_each("managedsave"),
            Tool::LibvirtGuests => self.libvirt_guests("stop"),
        }
        let stop = t.elapsed();
        let t = Instant::now();
        nix::unistd::sync();
        let sync = t.elapsed();
        assert!(
            self.node.qemus().is_empty(),
            "{}: a guest runs on",
            tool.name()
        );
        for image in self.images() {
            let f =
                std::fs::File::open(&image).unwrap_or_else(|e| panic!("{}: {e}", image.display()));
            posix_fadvise(f.as_raw_fd(), 0, 0, PosixFadviseAdvice::POSIX_FADV_DONTNEED)
                .expect("fadvise");
        }
        let t = Instant::now();
        match tool {
            Tool::Kvmroll => drop(self.kvmroll_guests("start")),
            Tool::Virsh => self.virsh_each("start"),
            Tool::LibvirtGuests => self.libvirt_guests("start"),
        }
        let start = t.elapsed();
        let qemus = self.node.qemus();
        for name in &self.names {
            let procs = qemus.get(name).cloned().unwrap_or_default();
            assert!(
                procs.len() == 1 && procs[0].1,
                "{}: {name} is not back from its image: {procs:?}",
                tool.name()
            );
        }
        [stop, sync, start]
    }
}

/// The save folder's synced write and read rates (bytes/s), with dd over
/// `bytes` (the images' total). Zeros are written: /dev/urandom is slower
/// than many disks, and the save folder's file system compresses nothing.
fn disk_rates(dir: &Path, bytes: u64) -> (f64, f64) {
    let file = dir.join("kvmroll-bench-dd");
    let count = (bytes >> 20).to_string();
    let of = format!("of={}", file.display());
    let t = Instant::now();
    let out = Command::new("dd")
        .args(["if=/dev/zero", &of, "bs=1M", &format!("count={count}")])
        .arg("conv=fdatasync")
        .output()
        .expect("dd runs");
    checked(out, "dd write");
    let write = bytes as f64 / t.elapsed().as_secs_f64();
    let f = std::fs::File::open(&file).expect("dd's file");
    posix_fadvise(f.as_raw_fd(), 0, 0, PosixFadviseAdvice::POSIX_FADV_DONTNEED).expect("fadvise");
    let t = Instant::now();
    let out = Command::new("dd")
        .args([&format!("if={}", file.display()), "of=/dev/null", "bs=1M"])
        .output()
        .expect("dd runs");
    checked(out, "dd read");
    let read = bytes as f64 / t.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&file);
    (write, read)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// The bench's guests, booted on the rig's node, and their database.
struct Fixture {
    /// The guests' kernel, initrd and domain XML, and the database:
    /// removed before the rig.
    _tmp: tempfile::TempDir,
    rig: Rig,
    db: PathBuf,
    names: Vec<String>,
}

impl Fixture {
    /// Starts the rig, then defines and boots the guests, their RAM full.
    fn new() -> Fixture {
        let rig = Rig::builder()
            .node(NODE, move |n| {
                // libvirt-guests reads /etc/default/libvirt-guests: the node's own.
                n.private_dir("/etc/default")?;
                n.write("/etc/default/libvirt-guests", LG_SETTINGS, 0o644)
                    .map(drop)
            })
            .start()
            .unwrap_or_else(|e| panic!("the rig did not start: {}", rig::chain(&e)));
        let node = rig.node(NODE);
        let tmp = tempfile::tempdir().expect("tempdir");
        let kernel = build_kernel(tmp.path());
        let initrd = tmp.path().join("initrd");
        random_file(
            &initrd,
            (MEM_MIB - HEADROOM_MIB) << 20,
            0x6b76_6d72_6f6c_6c16,
        );

        let db = tmp.path().join("kvmroll.db");
        let k = Kvmroll::new(&db);
        k.init_with_container(NODE, &node.libvirt_uri());
        set_attrs(&k);
        let names: Vec<String> = (0..GUESTS).map(|i| format!("bench-{i:02}")).collect();
        let t = Instant::now();
        for name in &names {
            k.ok(&[
                "vm",
                "add",
                name,
                "--container",
                NODE,
                "--mem",
                &MEM_MIB.to_string(),
            ]);
            k.ok(&["attr", "set", name, "kvm_autostart", "true"]);
            let xml = tmp.path().join(format!("{name}.xml"));
            std::fs::write(&xml, domain_xml(name, MEM_MIB, &kernel, &initrd)).expect("xml");
            checked(
                node.virsh(&["define", &xml.to_string_lossy()]),
                "virsh define",
            );
            checked(node.virsh(&["start", name]), "virsh start");
        }
        // QEMU copies the initrd into RAM before the guest runs; then it is
        // swapped for a tiny file, since QEMU reads it again at each restore.
        std::thread::sleep(Duration::from_secs(2));
        let small = tmp.path().join("initrd.small");
        random_file(&small, 4096, 7);
        std::fs::rename(&small, &initrd).expect("swap the initrd");
        println!(
            "{GUESTS} guests of {MEM_MIB} MiB booted in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        Fixture {
            _tmp: tmp,
            rig,
            db,
            names,
        }
    }
}

/// The container's attributes from `KVMROLL_BENCH_ATTRS`.
fn set_attrs(k: &Kvmroll) {
    for pair in std::env::var("KVMROLL_BENCH_ATTRS")
        .unwrap_or_default()
        .split(',')
    {
        if let Some((name, value)) = pair.split_once('=') {
            k.ok(&["attr", "set", NODE, name.trim(), value.trim()]);
        }
    }
}

/// An untimed kvmroll-guests round: every guest restored once (alike for
/// every tool), the definitions brought up to date, and the parallelism
/// kvmroll-guests chooses read from its log into `bench.width`.
fn warm_up(bench: &mut Bench) {
    let out = bench.kvmroll_guests("stop");
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    bench.width = log
        .split("kvm_guests_parallel=auto: ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .or_else(|| {
            log.split(" at once")
                .next()?
                .rsplit(", ")
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(4);
    for line in log.lines().filter(|l| l.contains("kvm_guests_parallel")) {
        println!("  {line}");
    }
    bench.kvmroll_guests("start");
}

/// The disk floor (s) of a stop and of a start: the images' bytes over the
/// save folder's write and read rates.
fn disk_floor(bench: &Bench) -> (f64, f64) {
    let bytes: u64 = bench
        .images()
        .iter()
        .map(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
        .sum();
    let bytes = bytes.max((GUESTS as u64 * MEM_MIB) << 20);
    let (write, read) = disk_rates(&bench.node.outside(SAVE_DIR), bytes);
    println!(
        "disk: write {:.0} MB/s, read {:.0} MB/s; images {:.2} GiB; virsh {} at once",
        write / 1e6,
        read / 1e6,
        bytes as f64 / f64::from(1 << 30),
        bench.width
    );
    (bytes as f64 / write, bytes as f64 / read)
}

/// Each tool's times, `rounds` rounds of each, in a rotating order.
type Times = Vec<(Tool, Vec<[Duration; 3]>)>;

/// Runs `rounds` rounds of each tool, the order rotated each round.
fn measure(bench: &Bench, tools: &[Tool], rounds: usize) -> Times {
    let mut times: Times = tools.iter().map(|t| (*t, vec![])).collect();
    for r in 0..rounds {
        let mut order = tools.to_vec();
        order.rotate_left(r % tools.len());
        for tool in order {
            let run = bench.round(tool);
            println!(
                "  round {}: {:<18} stop {:6.2} s (+ sync {:.2} s), start {:6.2} s",
                r + 1,
                tool.name(),
                run[0].as_secs_f64(),
                run[1].as_secs_f64(),
                run[2].as_secs_f64()
            );
            if let Some((_, v)) = times.iter_mut().find(|(t, _)| *t == tool) {
                v.push(run);
            }
        }
    }
    times
}

fn main() {
    if !rig::available("guests_scale benchmark") {
        return;
    }
    let rounds: usize = std::env::var("KVMROLL_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .max(1);
    let lg = Path::new(LG_SCRIPT).exists();
    if !lg {
        println!("{LG_SCRIPT} is missing (Debian's libvirt-clients): libvirt-guests is left out");
    }
    let fx = Fixture::new();
    let mut bench = Bench {
        node: fx.rig.node(NODE),
        db: fx.db.clone(),
        names: fx.names.clone(),
        width: 4,
        lg,
    };
    warm_up(&mut bench);
    let floor = disk_floor(&bench);
    let mut tools = vec![Tool::Kvmroll, Tool::Virsh];
    if bench.lg {
        tools.push(Tool::LibvirtGuests);
    }
    let times = measure(&bench, &tools, rounds);
    report(&times, floor);
}

/// The medians and the ratios against the goals.
fn report(times: &Times, floor: (f64, f64)) {
    let med = |tool: Tool| {
        let runs = &times.iter().find(|(t, _)| *t == tool).expect("measured").1;
        let stop = median(runs.iter().map(|r| r[0] + r[1]).collect());
        let start = median(runs.iter().map(|r| r[2]).collect());
        (stop.as_secs_f64(), start.as_secs_f64())
    };
    let (ks, kst) = med(Tool::Kvmroll);
    let (vs, vst) = med(Tool::Virsh);
    println!("medians (stop includes its sync):");
    for (tool, _) in times {
        let (s, st) = med(*tool);
        println!("  {:<18} stop {s:6.2} s, start {st:6.2} s", tool.name());
    }
    println!(
        "  disk floor         stop {:6.2} s, start {:6.2} s",
        floor.0, floor.1
    );
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    println!(
        "kvmroll / virsh: stop {:.2}x, start {:.2}x (goal at most 1.0x: {})",
        ks / vs,
        kst / vst,
        verdict(ks <= vs && kst <= vst)
    );
    println!(
        "kvmroll / disk floor: stop {:.2}x, start {:.2}x (goal within 1.5x: {})",
        ks / floor.0,
        kst / floor.1,
        verdict(ks <= 1.5 * floor.0 && kst <= 1.5 * floor.1)
    );
    if times.iter().any(|(t, _)| *t == Tool::LibvirtGuests) {
        let (ls, lst) = med(Tool::LibvirtGuests);
        println!(
            "kvmroll / libvirt-guests: stop {:.2}x, start {:.2}x",
            ks / ls,
            kst / lst
        );
    }
}
