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
//! guests boot the kernel of `tests/benches/guests/halt.S`, assembled
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
const LG_SETTINGS: &str = "# Written by kvmroll's guests benchmark (tests/benches/guests/);\n\
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

mod cleanup;
mod disk;
mod guest;
mod helpers;
mod measure;
mod preflight;
mod report;

use cleanup::*;
use disk::*;
use guest::*;
use helpers::*;
use measure::*;
use preflight::*;
use report::*;

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
