//! The hook's log lines: to the journal natively where systemd's socket is,
//! with the VM as a field of its own, else to syslog; each line once.
//! This machine may run neither daemon, so the test binds the socket
//! itself under the hook's `KVMROLL_LOG_ROOT` and reads what arrives.

use crate::fixture::*;
use std::os::unix::net::UnixDatagram;
use std::path::Path;

/// A datagram socket bound at `root/rel`, as journald's or syslog's.
fn bind(root: &Path, rel: &str) -> UnixDatagram {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let s = UnixDatagram::bind(&path).unwrap();
    s.set_nonblocking(true).unwrap();
    s
}

/// Every datagram waiting on `s`.
fn received(s: &UnixDatagram) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    while let Ok(n) = s.recv(&mut buf) {
        out.push(buf[..n].to_vec());
    }
    out
}

/// A journal datagram's `KEY=value` fields (the hook's messages here are
/// one line, so none uses the length-prefixed form).
fn fields(d: &[u8]) -> Vec<(String, String)> {
    String::from_utf8_lossy(d)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// An allocate plugin that fails: the hook refuses and logs why.
fn failing_allocate(fx: &Fx) {
    fx.plugin(
        &format!("vms/{VM}/allocate.d"),
        "10-fail",
        "echo 'no storage left' >&2; exit 4",
    );
}

const SAID: &str = "plugin 10-fail failed: no storage left";

#[test]
fn under_systemd_a_line_reaches_the_journal_once_with_its_vm() {
    let fx = Fx::new();
    failing_allocate(&fx);
    let journal = bind(&fx.log_root(), "run/systemd/journal/socket");
    let syslog = bind(&fx.log_root(), "dev/log");
    let out = fx.hook(VM, "prepare", "begin", &fx.xml());
    assert_eq!(out.status.code(), Some(1));
    let lines: Vec<Vec<(String, String)>> = received(&journal)
        .iter()
        .map(|d| fields(d))
        .filter(|f| f.iter().any(|(k, v)| k == "MESSAGE" && v.contains(SAID)))
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    let get = |k: &str| {
        lines[0]
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(get("SYSLOG_IDENTIFIER"), Some("kvmroll-hook"));
    assert_eq!(get("VM"), Some(VM));
    assert_eq!(get("PRIORITY"), Some("3"), "an error: {lines:?}");
    // Not to syslog as well.
    assert!(received(&syslog).is_empty());
}

#[test]
fn without_systemd_a_line_reaches_syslog_once() {
    let fx = Fx::new();
    failing_allocate(&fx);
    let syslog = bind(&fx.log_root(), "dev/log");
    let out = fx.hook(VM, "prepare", "begin", &fx.xml());
    assert_eq!(out.status.code(), Some(1));
    let lines: Vec<String> = received(&syslog)
        .iter()
        .map(|d| String::from_utf8_lossy(d).into_owned())
        .filter(|l| l.contains(SAID))
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    // Facility daemon (3), severity error (3): 3 * 8 + 3.
    assert!(lines[0].starts_with("<27>kvmroll-hook["), "{}", lines[0]);
    assert!(
        lines[0].contains(&format!("VM {VM}: {SAID}")),
        "{}",
        lines[0]
    );
}

/// Debug lines show with `KVMROLL_LOG=debug`, and only then: a file in a
/// plugin folder that is not executable is skipped with a debug line.
#[test]
fn debug_lines_show_with_kvmroll_log_debug() {
    let fx = Fx::new();
    let dir = fx.plugin(&format!("vms/{VM}/allocate.d"), "10-ok", "true");
    let notes = dir.with_file_name("README");
    std::fs::write(&notes, "not a plugin\n").unwrap();
    let syslog = bind(&fx.log_root(), "dev/log");
    let skipped = |env: &[(&str, &str)]| {
        let out = fx
            .spawn_hook_with(VM, "prepare", "begin", &fx.xml(), env)
            .wait_with_output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        received(&syslog)
            .iter()
            .map(|d| String::from_utf8_lossy(d).into_owned())
            .filter(|l| l.contains("README: not an executable file, skipped"))
            .count()
    };
    assert_eq!(skipped(&[]), 0);
    assert_eq!(skipped(&[("KVMROLL_LOG", "debug")]), 1);
}
