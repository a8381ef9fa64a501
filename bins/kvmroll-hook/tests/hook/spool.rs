//! The event spool: bursts of hooks, the detached upkeep, and events that
//! arrive once and in order whatever is killed.

use crate::fixture::*;
use std::path::PathBuf;
use std::process::{Command, Output};

#[test]
fn a_burst_of_64_invocations_records_every_event() {
    let fx = Fx::new();
    fx.plugin(
        &format!("vms/{VM}/on-started.d"),
        "10-noop",
        "cat >/dev/null",
    );
    let xml = fx.xml();
    let results: Vec<Output> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..64)
            .map(|_| s.spawn(|| fx.hook(VM, "started", "begin", &xml)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for out in &results {
        assert_eq!(out.status.code(), Some(0), "{}", stderr(out));
    }
    let events = fx.events(VM);
    let invocations = events.iter().filter(|e| e.plugin.is_none()).count();
    let runs = events.iter().filter(|e| e.plugin.is_some()).count();
    assert_eq!((invocations, runs), (64, 64));
}

#[test]
fn a_detached_upkeep_keeps_the_wal_short() {
    // Each event adds two or three WAL frames; a hook that finds more than
    // 32 leaves a checkpoint to a detached process. Without it, 60 events
    // would leave some 150 frames, and every hook would read them all.
    let fx = Fx::new();
    let xml = fx.xml();
    for _ in 0..60 {
        let out = fx.hook(VM, "started", "begin", &xml);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    let wal = PathBuf::from(format!("{}-wal", fx.db().display()));
    let frames = || std::fs::metadata(&wal).map_or(0, |m| m.len().saturating_sub(32) / 4120);
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while frames() > 40 && std::time::Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(frames() <= 40, "the WAL holds {} frames", frames());
    assert_eq!(fx.events(VM).len(), 60, "an event was lost");
}

/// The upkeep processes this test's hooks started (found by the
/// configuration in their environment, so no one else's).
pub fn upkeeps_of(conf: &std::path::Path) -> Vec<i32> {
    let want = format!("KVMROLL_CONF={}", conf.display());
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let environ = std::fs::read(e.path().join("environ")).unwrap_or_default();
        let ours = environ.split(|b| *b == 0).any(|v| v == want.as_bytes());
        let upkeep = cmdline.split(|b| *b == 0).any(|a| a == b"upkeep");
        if ours && upkeep {
            pids.push(pid);
        }
    }
    pids
}

/// Events spooled by hooks and forwarded by upkeeps reach the database
/// exactly once and in order, whatever was killed when: 60 events, hooks
/// and upkeeps killed with SIGKILL at random moments (the seed is printed).
/// A hook that finished has its event there once; a killed one at most
/// once (killed before it spooled, it has none).
#[test]
fn spooled_events_arrive_once_and_in_order_whatever_is_killed() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let fx = Fx::new();
    let xml = fx.xml();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("seed {seed}");
    let mut state = seed;
    let mut random = move |below: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % below
    };
    let (mut finished, mut killed) = (Vec::new(), Vec::new());
    let mut mine: Vec<std::process::Child> = Vec::new();
    for n in 0..60 {
        let op = format!("probe{n:02}");
        let mut child = fx.spawn_hook(VM, &op, "begin", &xml);
        if random(3) == 0 {
            std::thread::sleep(std::time::Duration::from_micros(random(6000)));
            let _ = child.kill();
        }
        let status = child.wait().unwrap();
        if status.success() {
            finished.push(op);
        } else {
            killed.push(op);
        }
        // An upkeep of this test's own, killed a moment later, and the
        // hooks' own upkeeps, killed wherever they are.
        if random(2) == 0 {
            mine.push(
                Command::new(env!("CARGO_BIN_EXE_kvmroll-hook"))
                    .arg("upkeep")
                    .env("KVMROLL_CONF", fx.conf())
                    .spawn()
                    .unwrap(),
            );
        }
        std::thread::sleep(std::time::Duration::from_micros(random(3000)));
        if random(3) == 0 {
            for pid in upkeeps_of(&fx.conf()) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }
    for mut c in mine {
        let _ = c.kill();
        let _ = c.wait();
    }
    for pid in upkeeps_of(&fx.conf()) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    eprintln!("{} finished, {} killed", finished.len(), killed.len());
    let events = fx.events(VM);
    let count = |op: &str| events.iter().filter(|e| e.op == op).count();
    for op in &finished {
        assert_eq!(count(op), 1, "seed {seed}: {op} finished");
    }
    for op in &killed {
        assert!(count(op) <= 1, "seed {seed}: {op} was killed");
    }
    let order: Vec<&str> = events.iter().map(|e| e.op.as_str()).collect();
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(order, sorted, "seed {seed}: out of order");
    assert!(!fx.spool().join("bad").exists(), "seed {seed}: a torn file");
}
