//! Malformed calls and XML, from libvirt or from a filter plugin: refused
//! with one short line and an event, never a panic or an overflow.

use crate::fixture::*;
use std::process::{Command, Output, Stdio};

#[test]
fn malformed_calls_are_errors_not_panics() {
    let fx = Fx::new();
    for args in [
        vec![],
        vec!["vm"],
        vec!["vm", "start"],
        vec!["vm", "start", "begin", "-", "x"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_kvmroll-hook"))
            .args(&args)
            .env("KVMROLL_CONF", fx.conf())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            stderr(&out).contains("malformed call"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn malformed_xml_is_refused_at_start_and_tolerated_at_release() {
    let fx = Fx::new();
    fx.plugin(
        &format!("vms/{VM}/shutdown.d"),
        "10-release",
        &format!("touch {}", fx.marker("released").display()),
    );
    for (op, subop) in [
        ("prepare", "begin"),
        ("start", "begin"),
        ("restore", "begin"),
    ] {
        let out = fx.hook(VM, op, subop, "<domain><name>hosted-vm");
        assert_eq!(out.status.code(), Some(1), "{op}");
        assert!(
            stderr(&out).contains("domain XML on stdin is refused"),
            "{}",
            stderr(&out)
        );
    }
    let out = fx.hook(
        VM,
        "prepare",
        "begin",
        "<domain><name>someone-else</name></domain>",
    );
    assert!(
        stderr(&out).contains("not \"hosted-vm-0-0-0\""),
        "{}",
        stderr(&out)
    );
    let out = fx.hook(VM, "release", "end", "garbage");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(fx.marker("released").exists());
}

#[test]
fn replacement_xml_that_is_not_utf8_is_refused() {
    let fx = Fx::new();
    fx.plugin(
        &format!("vms/{VM}/preboot.d"),
        "10-latin1",
        "sed 's|</name>|</name><description>caf\\o351</description>|'",
    );
    let out = fx.hook(VM, "restore", "begin", &fx.xml());
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("10-latin1") && err.contains("not UTF-8"),
        "{err}"
    );
}

/// The VM's domain with `depth` more levels of elements inside it.
pub fn deep_domain(depth: usize) -> String {
    format!(
        "<domain type='kvm'><name>{VM}</name>{}{}</domain>",
        "<a>".repeat(depth),
        "</a>".repeat(depth)
    )
}

/// Asserts a refusal: exit 1, one line on stderr holding `why`, nothing on
/// stdout, and the refusal recorded as the invocation's event.
pub fn assert_refused_and_recorded(fx: &Fx, out: &Output, why: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains(why), "{err}");
    assert!(out.stdout.is_empty());
    let events = fx.events(VM);
    let own = events
        .iter()
        .find(|e| e.plugin.is_none())
        .expect("no event");
    assert_eq!(own.outcome.as_str(), "failed");
    assert!(own.message.contains(why), "{}", own.message);
}

/// Regression: stdin XML 200,000 levels deep made the hook segfault (its
/// stack overflowed) with no message and no event.
#[test]
fn stdin_xml_200000_deep_is_refused_with_a_line_and_an_event() {
    let fx = Fx::new();
    let out = fx.hook(VM, "start", "begin", &deep_domain(200_000));
    assert_refused_and_recorded(
        &fx,
        &out,
        "libvirt's domain XML on stdin is refused: not well-formed domain XML: \
         nested deeper than 256 elements",
    );
}

/// Regression: a preboot plugin printing XML 200,000 levels deep at
/// `restore begin` made the hook segfault.
#[test]
fn a_filter_printing_xml_200000_deep_is_refused_with_a_line_and_an_event() {
    let fx = Fx::new();
    let deep = fx.marker("deep.xml");
    std::fs::write(&deep, deep_domain(200_000)).unwrap();
    fx.plugin(
        &format!("vms/{VM}/preboot.d"),
        "10-deep",
        &format!("cat {}", deep.display()),
    );
    let out = fx.hook(VM, "restore", "begin", &fx.xml());
    assert_refused_and_recorded(
        &fx,
        &out,
        "/10-deep printed XML that is refused: not well-formed domain XML: \
         nested deeper than 256 elements",
    );
}

/// Regression: a preboot plugin printing 50 MB of non-XML at `restore
/// begin` made a 16 MB stderr "line" and two 16 MB event rows.
#[test]
fn a_filter_printing_50_mb_leaves_a_short_line_and_short_events() {
    let fx = Fx::new();
    fx.plugin(
        &format!("vms/{VM}/preboot.d"),
        "10-flood",
        "head -c 52428800 /dev/zero | tr '\\000' z",
    );
    let out = fx.hook(VM, "restore", "begin", &fx.xml());
    assert_refused_and_recorded(&fx, &out, "/10-flood printed XML that is refused");
    let max = kvmroll_core::text::MAX_BYTES;
    assert!(out.stderr.len() <= max + 1, "{} bytes", out.stderr.len());
    let events = fx.events(VM);
    assert_eq!(events.len(), 2, "{events:?}");
    for e in &events {
        assert!(e.message.len() <= max, "{} bytes", e.message.len());
    }
}

/// A plugin's flood of stderr is kept to a few lines in its event, with a
/// note of the cut.
#[test]
fn a_plugin_flooding_stderr_leaves_a_short_event() {
    let fx = Fx::new();
    fx.plugin(
        &format!("vms/{VM}/allocate.d"),
        "10-noisy",
        "yes 'a line of noise' | head -c 1000000 >&2; exit 3",
    );
    let out = fx.hook(VM, "prepare", "begin", &fx.xml());
    assert_refused_and_recorded(&fx, &out, "plugin 10-noisy failed: a line of noise");
    let events = fx.events(VM);
    let run = events.iter().find(|e| e.plugin.is_some()).unwrap();
    assert_eq!(run.message.lines().count(), 5, "{}", run.message);
    assert!(
        run.message.ends_with("(cut: 1000000 bytes in all)"),
        "{}",
        run.message
    );
}
