//! Unit tests of running: input and output, the time limit, what a
//! plugin leaves behind, large input.

use super::*;
use crate::fixtures::{script, tree};

fn spec<'a>(path: &'a Path, stdin: &'a [u8], timeout: Duration) -> RunSpec<'a> {
    RunSpec {
        path,
        args: &[],
        env: &[],
        stdin,
        timeout,
    }
}

#[test]
fn runs_with_stdin_and_captures_output() {
    let t = tree();
    let p = script(t.path(), "p", "cat; echo err >&2; exit 3", 0o755);
    let r = run(&spec(&p, b"<domain/>", Duration::from_secs(10))).unwrap();
    assert_eq!(r.code, Some(3));
    assert_eq!(r.stdout, b"<domain/>");
    assert_eq!(r.stderr, b"err\n");
    assert!(!r.success());
}

#[test]
fn a_hung_plugin_and_its_children_are_killed_at_the_limit() {
    let t = tree();
    let marker = t.path().join("child.pid");
    let p = script(
        t.path(),
        "hang",
        &format!("sleep 300 & echo $! > {}; sleep 300", marker.display()),
        0o755,
    );
    // A limit long enough for the shell to record its child even on a
    // loaded machine.
    let r = run(&spec(&p, b"", Duration::from_millis(1500))).unwrap();
    assert!(r.timed_out);
    assert_eq!(r.signal, Some(9));
    assert!(r.duration < Duration::from_secs(5));
    let child: i32 = std::fs::read_to_string(&marker)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // The background child got SIGKILL too. The kernel may still be
    // tearing it down when `run` returns (CI once saw it in state R,
    // already reparented), so allow it a moment to die; a process that
    // was never signalled would still be asleep after it.
    let gone = |state: &str| state.is_empty() || state.contains(") Z");
    let read = || std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
    let until = Instant::now() + Duration::from_secs(5);
    let mut state = read();
    while !gone(&state) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
        state = read();
    }
    assert!(gone(&state), "{state}");
}

#[test]
fn a_process_that_left_the_group_holding_the_pipes_does_not_hold_the_hook() {
    let t = tree();
    let marker = t.path().join("escaped.pid");
    // setsid puts the sleeper in a session (and group) of its own, out
    // of reach of the group kill, still holding stdout and stderr.
    let p = script(
        t.path(),
        "escape",
        &format!(
            "setsid sh -c 'echo $$ > {}; exec sleep 30' & sleep 0.2; echo done; exit 0",
            marker.display()
        ),
        0o755,
    );
    let r = run(&spec(&p, b"", Duration::from_secs(20))).unwrap();
    if let Ok(pid) = std::fs::read_to_string(&marker) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid.trim().parse().unwrap()),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    assert!(r.success(), "{r:?}");
    assert_eq!(r.stdout, b"done\n");
    assert!(r.duration < Duration::from_secs(5), "{:?}", r.duration);
}

#[test]
fn a_limit_too_large_to_add_is_no_limit() {
    let t = tree();
    let p = script(t.path(), "p", "exit 0", 0o755);
    let r = run(&spec(&p, b"", Duration::MAX)).unwrap();
    assert!(r.success(), "{r:?}");
}

#[test]
fn a_plugin_that_ignores_a_large_stdin_is_fine() {
    let t = tree();
    let p = script(t.path(), "p", "exit 0", 0o755);
    let big = vec![b'x'; 1 << 20];
    let r = run(&spec(&p, &big, Duration::from_secs(10))).unwrap();
    assert!(r.success());
}
