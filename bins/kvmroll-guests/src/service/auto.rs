//! `kvm_guests_parallel=auto`: how many saves or restores at once fit
//! this machine, chosen at the start of each run and logged.
//!
//! A managed save is one stream from QEMU's migration thread through
//! libvirt's I/O helper to the disk; a few streams keep a fast disk busy,
//! more only contend on a slow one. Each stream in flight also holds dirty
//! or read-ahead pages in memory, and a QEMU of its own on a CPU. So the
//! choice is the least of: the disk's throughput over what one stream
//! writes, twice the CPUs, and the free memory over what one stream holds.
//! The disk is measured at `stop` (a 16 MiB synced write in the save folder,
//! about 0.1 s on any disk a host shuts down with) and the figure kept in
//! the journal for the next `start`, which then measures nothing: a boot
//! should spend its time on restores.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

/// What one save stream moves, roughly: 100 to 200 MB/s. Measured here
/// (benches/guests_scale.rs, sixteen 256 MiB guests on a disk writing
/// 330 MB/s synced): two at once saved at 430 MB/s, four at 760 MB/s, the
/// page cache taking more than the disk's synced rate; so a disk's synced
/// rate over this is a low bound on the streams worth running.
const STREAM_BYTES_PER_SEC: u64 = 100_000_000;
/// What one stream in flight holds in memory (dirty or read-ahead pages,
/// libvirt's I/O helper's buffers), roughly.
const STREAM_MEMORY: u64 = 512 << 20;
/// The disk's share when its throughput is unknown: the former default.
const UNKNOWN_DISK: usize = 4;
/// The most streams, however large the machine.
const MOST: usize = 16;
/// How much the measurement writes.
const PROBE: usize = 16 << 20;

/// What the choice is made from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Machine {
    /// The save folder's disk, bytes per second (synced writes).
    pub disk: Option<u64>,
    /// `MemAvailable`, bytes.
    pub free_memory: Option<u64>,
    pub cpus: usize,
}

/// The number of streams, and the sentence that says why.
pub fn choose(m: &Machine) -> (usize, String) {
    let by_disk = m.disk.map_or(UNKNOWN_DISK, |b| {
        usize::try_from(b.div_ceil(STREAM_BYTES_PER_SEC)).unwrap_or(MOST)
    });
    // Two streams at least for the disk: one leaves it idle while a VM
    // pauses, or while libvirt starts a QEMU.
    let by_disk = by_disk.clamp(2, MOST);
    let by_cpu = m.cpus.max(1) * 2;
    let by_memory = m
        .free_memory
        .map_or(MOST, |b| usize::try_from(b / STREAM_MEMORY).unwrap_or(MOST));
    let n = by_disk.min(by_cpu).min(by_memory).clamp(1, MOST);
    let disk = m.disk.map_or("disk throughput unknown".to_string(), |b| {
        format!("disk {} MB/s", b / 1_000_000)
    });
    let memory = m
        .free_memory
        .map_or("free memory unknown".to_string(), |b| {
            format!("{} free", super::human(b))
        });
    let why = format!("{disk}, {memory}, {} CPU(s)", m.cpus);
    (n, why)
}

/// `MemAvailable` from a `/proc/meminfo` text, in bytes.
pub fn mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// This machine's free memory and CPUs, with `disk` as measured or kept.
pub fn machine(disk: Option<u64>) -> Machine {
    Machine {
        disk,
        free_memory: std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| mem_available(&m)),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
    }
}

/// Times a synced write of [`PROBE`] bytes in `dir` (the save folder), and
/// removes it. `None`, said in the log, when it cannot be written.
pub fn measure_disk(dir: &Path) -> Option<u64> {
    let path = dir.join(format!(".kvmroll-guests-probe-{}", std::process::id()));
    let result = (|| -> std::io::Result<Duration> {
        std::fs::create_dir_all(dir)?;
        let mut f = std::fs::File::create(&path)?;
        // Not zeros: a compressing file system would write nothing.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let block: Vec<u8> = (0..1 << 20)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let t = Instant::now();
        for _ in 0..PROBE / block.len() {
            f.write_all(&block)?;
        }
        f.sync_data()?;
        Ok(t.elapsed())
    })();
    let _ = std::fs::remove_file(&path);
    match result {
        Ok(took) => Some((PROBE as f64 / took.as_secs_f64().max(1e-6)) as u64),
        Err(e) => {
            log::warn!(
                "cannot measure the disk of {} ({e}); choosing parallelism without it",
                dir.display()
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: u64 = 1_000_000;

    fn m(disk: Option<u64>, free: Option<u64>, cpus: usize) -> usize {
        choose(&Machine {
            disk,
            free_memory: free,
            cpus,
        })
        .0
    }

    #[test]
    fn a_slow_disk_gets_two_streams_a_fast_one_more() {
        assert_eq!(m(Some(120 * MB), Some(64 << 30), 32), 2);
        assert_eq!(m(Some(700 * MB), Some(64 << 30), 32), 7);
        assert_eq!(m(Some(20_000 * MB), Some(64 << 30), 32), MOST);
    }

    #[test]
    fn few_cpus_or_little_free_memory_bound_it() {
        assert_eq!(m(Some(2000 * MB), Some(64 << 30), 2), 4);
        assert_eq!(m(Some(2000 * MB), Some(1 << 30), 32), 2);
        assert_eq!(m(Some(2000 * MB), Some(100 * MB), 32), 1, "never zero");
    }

    #[test]
    fn an_unknown_disk_is_the_former_default() {
        assert_eq!(m(None, None, 8), UNKNOWN_DISK);
        let (_, why) = choose(&Machine {
            disk: None,
            free_memory: None,
            cpus: 8,
        });
        assert_eq!(
            why,
            "disk throughput unknown, free memory unknown, 8 CPU(s)"
        );
    }

    #[test]
    fn mem_available_is_read_from_meminfo() {
        let text = "MemTotal:       16000000 kB\nMemFree:  100 kB\nMemAvailable:    8000000 kB\n";
        assert_eq!(mem_available(text), Some(8_000_000 * 1024));
        assert_eq!(mem_available("MemTotal: 1 kB\n"), None);
    }

    #[test]
    fn the_disk_is_measured_and_the_probe_removed() {
        let dir = tempfile::tempdir().unwrap();
        let rate = measure_disk(dir.path()).expect("a temp dir is writable");
        assert!(rate > 0);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
