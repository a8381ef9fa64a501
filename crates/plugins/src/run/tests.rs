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

/// The one plugin of `dir`'s `preboot.d`, discovered as the hook does.
fn plugin(dir: &Path, body: &str) -> Plugin {
    script(&dir.join("plugins/preboot.d"), "10-p", body, 0o755);
    let found = crate::discover(dir, "preboot", Ok("vm"), crate::fixtures::me());
    match found.into_iter().next() {
        Some(crate::Found::Run(p)) => p,
        other => panic!("no plugin: {other:?}"),
    }
}

/// The hook's own start of a checked plugin (a vfork-style clone, not
/// std's spawn) hands it what std's did: its arguments, the hook's
/// environment with the stage's on top, its name, stdin, a group of its
/// own, and default signals; and reports its code or signal.
#[test]
fn a_checked_plugin_gets_its_arguments_environment_and_input() {
    let t = tree();
    let p = plugin(
        t.path(),
        // The shell's signals are read first, by a builtin: around a fork
        // dash blocks every signal for a moment.
        "while read -r k v; do case $k in SigBlk:|SigIgn:) echo \"$k\t$v\";; esac; \
         done < /proc/$$/status; \
         echo \"$1 $2 $KVMROLL_VM $KVMROLL_PLUGIN $(cat)\"; \
         ps -o pgid= -p $$ | tr -d ' '; echo $$; \
         test -n \"$HOME$PATH\"; exit 4",
    );
    let args = ["preboot".to_string(), "vm".to_string()];
    let env = [("KVMROLL_VM".to_string(), "vm".to_string())];
    let r = p
        .run(&args, &env, b"<domain/>", Duration::from_secs(10))
        .unwrap();
    assert_eq!(r.code, Some(4), "{}", String::from_utf8_lossy(&r.stderr));
    let out = String::from_utf8(r.stdout).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[2],
        format!("preboot vm vm {} <domain/>", p.path().display())
    );
    // Its own process group.
    assert_eq!(lines[3], lines[4]);
    // Signals as std's spawn leaves them: nothing blocked, and of the
    // standard signals (glibc keeps 32 and 33 for itself) none ignored,
    // SIGPIPE included, which the hook ignores.
    let standard = |line: &str| {
        let hex = line.split('\t').nth(1).unwrap_or_default();
        u64::from_str_radix(hex, 16).unwrap() & 0x7fff_ffff
    };
    assert_eq!(lines[0], "SigBlk:\t0000000000000000", "{out}");
    assert!(lines[1].starts_with("SigIgn:"), "{out}");
    assert_eq!(standard(lines[1]), 0, "{out}");

    let p = plugin(t.path(), "kill -TERM $$");
    let r = p.run(&[], &[], b"", Duration::from_secs(10)).unwrap();
    assert_eq!((r.code, r.signal), (None, Some(15)));
}

#[test]
fn a_checked_plugin_and_its_group_are_killed_at_the_limit() {
    let t = tree();
    let p = plugin(t.path(), "sleep 300 & sleep 300");
    let r = p.run(&[], &[], b"", Duration::from_millis(500)).unwrap();
    assert!(r.timed_out);
    assert_eq!(r.signal, Some(9));
    assert!(r.duration < Duration::from_secs(5));
}

/// An exec that fails in the child is the spawn's error, not a plugin
/// that ran and exited 127.
#[test]
fn a_checked_plugin_that_cannot_be_executed_is_an_error() {
    let t = tree();
    let dir = t.path().join("plugins/preboot.d");
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("10-p");
    std::fs::write(&p, "#!/nonexistent/interpreter\n").unwrap();
    crate::fixtures::mode(&p, 0o755);
    let found = crate::discover(t.path(), "preboot", Ok("vm"), crate::fixtures::me());
    let Some(crate::Found::Run(p)) = found.into_iter().next() else {
        panic!("no plugin")
    };
    let e = p.run(&[], &[], b"", Duration::from_secs(10)).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::NotFound, "{e}");
}
