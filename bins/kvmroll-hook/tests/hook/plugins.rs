//! The stages' plugins: their order, arguments and environment, filters
//! whose XML reaches libvirt, failures, and the stage's one time budget.

use crate::fixture::*;
use std::os::unix::fs::PermissionsExt;

#[test]
fn plugins_run_global_first_in_byte_order_with_their_arguments_and_env() {
    let fx = Fx::new();
    let log = fx.marker("order.log");
    let rec = |tag: &str| {
        format!(
            "echo \"{tag} $1 $2 $KVMROLL_VM $KVMROLL_UUID $KVMROLL_CONTAINER $KVMROLL_STAGE $KVMROLL_OP $KVMROLL_SUBOP $KVMROLL_EXTRA ro=${{KVMROLL_DB_READONLY:-0}} db=$KVMROLL_DB $(grep -c '<name>hosted-vm-0-0-0</name>')\" >> {}",
            log.display()
        )
    };
    fx.plugin("plugins/preboot.d", "20-global", &rec("g20"));
    fx.plugin("plugins/preboot.d", "10-global", &rec("g10"));
    fx.plugin("plugins/preboot.d", "B-global", &rec("gB"));
    fx.plugin(&format!("vms/{VM}/preboot.d"), "00-own", &rec("own"));
    fx.plugin(&format!("vms/{VM}/allocate.d"), "00-own", &rec("alloc"));
    let out = fx.hook(VM, "start", "begin", &fx.xml());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(out.stdout.is_empty(), "stdout at start begin");
    let out = fx.hook(VM, "prepare", "begin", &fx.xml());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let got = std::fs::read_to_string(&log).unwrap();
    let db = fx.db().display().to_string();
    let common = format!("{VM} {VM} 0f5a2b3c-1d2e-4f50-8a6b-7c8d9e0f1a2b {HOST}");
    let want = [
        format!("g10 preboot {common} preboot start begin - ro=1 db={db} 1"),
        format!("g20 preboot {common} preboot start begin - ro=1 db={db} 1"),
        format!("gB preboot {common} preboot start begin - ro=1 db={db} 1"),
        format!("own preboot {common} preboot start begin - ro=1 db={db} 1"),
        format!("alloc allocate {common} allocate prepare begin - ro=0 db={db} 1"),
    ];
    assert_eq!(got.lines().collect::<Vec<_>>(), want);
}

#[test]
fn restore_filters_reach_libvirt_on_stdout_and_each_plugin_sees_the_last_xml() {
    let fx = Fx::new();
    let dir = format!("vms/{VM}/preboot.d");
    fx.plugin(
        &dir,
        "10-describe",
        "sed 's|</name>|</name><description>one</description>|'",
    );
    fx.plugin(&dir, "20-silent", "cat >/dev/null");
    fx.plugin(
        &dir,
        "30-again",
        "sed 's|<description>one</description>|<description>two</description>|'",
    );
    let out = fx.hook(VM, "restore", "begin", &fx.xml());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let xml = String::from_utf8(out.stdout).unwrap();
    assert!(
        xml.contains("</name><description>two</description>"),
        "{xml}"
    );
    // At a cold start libvirt ignores hook output: nothing is printed.
    let out = fx.hook(VM, "start", "begin", &fx.xml());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
    // With no plugin changing it, a restore or a migration prints nothing.
    std::fs::remove_dir_all(fx.root().join(&dir)).unwrap();
    for op in ["restore", "migrate"] {
        let out = fx.hook(VM, op, "begin", &fx.xml());
        assert!(out.status.success() && out.stdout.is_empty(), "{op}");
    }
}

#[test]
fn a_filter_that_prints_another_vm_or_junk_fails_the_stage() {
    let fx = Fx::new();
    let dir = format!("vms/{VM}/preboot.d");
    let p = fx.plugin(&dir, "10-bad", "echo '<domain><name>other</name></domain>'");
    let out = fx.hook(VM, "restore", "begin", &fx.xml());
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert!(stderr(&out).contains("named \"other\""), "{}", stderr(&out));
    std::fs::write(&p, "#!/bin/sh\necho 'not xml at all'\n").unwrap();
    let out = fx.hook(VM, "restore", "begin", &fx.xml());
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("printed XML that is refused"),
        "{}",
        stderr(&out)
    );
    std::fs::write(&p, "#!/bin/sh\nsed 's|<uuid>[^<]*</uuid>|<uuid>11111111-2222-4333-8444-555555555555</uuid>|'\n").unwrap();
    let out = fx.hook(VM, "restore", "begin", &fx.xml());
    assert!(stderr(&out).contains("UUID"), "{}", stderr(&out));
}

#[test]
fn a_failing_start_plugin_refuses_with_its_message_and_stops_the_stage() {
    let fx = Fx::new();
    let dir = format!("vms/{VM}/allocate.d");
    fx.plugin(
        &dir,
        "10-fail",
        "echo 'no storage left on /state' >&2; echo second line >&2; exit 4",
    );
    fx.plugin(
        &dir,
        "20-after",
        &format!("touch {}", fx.marker("after").display()),
    );
    let out = fx.hook(VM, "prepare", "begin", &fx.xml());
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(
        err.trim(),
        "VM hosted-vm-0-0-0: plugin 10-fail failed: no storage left on /state"
    );
    assert!(!fx.marker("after").exists());
    let ev = fx.events(VM);
    let run = ev
        .iter()
        .find(|e| e.plugin.as_deref().is_some_and(|p| p.ends_with("10-fail")))
        .unwrap();
    assert_eq!((run.outcome.as_str(), run.status), ("failed", Some(4)));
    assert_eq!(run.message, "no storage left on /state\nsecond line");
}

#[test]
fn every_shutdown_plugin_runs_even_after_a_failure() {
    let fx = Fx::new();
    let dir = format!("vms/{VM}/shutdown.d");
    fx.plugin(&dir, "10-fail", "exit 1");
    fx.plugin(
        &dir,
        "20-after",
        &format!("touch {}", fx.marker("after").display()),
    );
    let out = fx.hook(VM, "release", "end", &fx.xml());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
    assert!(fx.marker("after").exists());
}

#[test]
fn a_hung_plugin_is_killed_at_the_stage_limit() {
    let fx = Fx::new();
    fx.set_attr("kvm_plugin_timeout_preboot", "1");
    fx.plugin(&format!("vms/{VM}/preboot.d"), "10-hang", "sleep 300");
    let t = std::time::Instant::now();
    let out = fx.hook(VM, "start", "begin", &fx.xml());
    assert!(t.elapsed() < std::time::Duration::from_secs(5));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("ran past the preboot stage's limit of 1s"),
        "{}",
        stderr(&out)
    );
    assert!(fx
        .events(VM)
        .iter()
        .any(|e| e.outcome.as_str() == "timeout"));
}

#[test]
fn an_unsafe_plugin_is_not_run_and_refuses_a_start() {
    let fx = Fx::new();
    let p = fx.plugin(
        &format!("vms/{VM}/preboot.d"),
        "10-open",
        &format!("touch {}", fx.marker("ran").display()),
    );
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = fx.hook(VM, "start", "begin", &fx.xml());
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("writable by group or others"),
        "{}",
        stderr(&out)
    );
    assert!(!fx.marker("ran").exists());
    // On the stop side it is skipped, logged, and the stop goes on.
    let q = fx.plugin(
        &format!("vms/{VM}/shutdown.d"),
        "10-open",
        &format!("touch {}", fx.marker("ran").display()),
    );
    std::fs::set_permissions(&q, std::fs::Permissions::from_mode(0o666 | 0o111)).unwrap();
    let out = fx.hook(VM, "release", "end", &fx.xml());
    assert_eq!(out.status.code(), Some(0));
    assert!(!fx.marker("ran").exists());
    assert_eq!(
        fx.events(VM)
            .iter()
            .filter(|e| e.outcome.as_str() == "refused")
            .count(),
        2
    );
}

#[test]
fn plugins_share_one_stage_budget() {
    // Five plugins of 1.5 s under a 2 s limit: the second is killed at 2 s
    // and the other three do not run (a limit per plugin let them run 7.5 s).
    let fx = Fx::new();
    for (stage, attr) in [
        ("allocate", "kvm_plugin_timeout_allocate"),
        ("shutdown", "kvm_plugin_timeout_shutdown"),
    ] {
        fx.set_attr(attr, "2");
        for i in 1..=5 {
            fx.plugin(
                &format!("vms/{VM}/{stage}.d"),
                &format!("{i}0-slow"),
                &format!(
                    "sleep 1.5; touch {}",
                    fx.marker(&format!("{stage}{i}")).display()
                ),
            );
        }
    }
    let t = std::time::Instant::now();
    let out = fx.hook(VM, "prepare", "begin", &fx.xml());
    let took = t.elapsed();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(took < std::time::Duration::from_secs(4), "took {took:?}");
    let err = stderr(&out);
    assert_eq!(
        err.trim(),
        format!(
            "VM {VM}: plugin 20-slow ran past the allocate stage's limit of 2s and was killed; 3 plugins did not run"
        )
    );
    let ran: Vec<bool> = (1..=5)
        .map(|i| fx.marker(&format!("allocate{i}")).exists())
        .collect();
    assert_eq!(ran, [true, false, false, false, false]);
    let timeout: Vec<_> = fx
        .events(VM)
        .into_iter()
        .filter(|e| e.outcome.as_str() == "timeout")
        .collect();
    assert_eq!(timeout.len(), 1, "{timeout:?}");
    assert!(timeout[0].plugin.as_deref().unwrap().ends_with("20-slow"));
    assert!(timeout[0].message.contains("3 plugins did not run"));
    // The stop side goes on (exit 0), but within the same budget.
    let t = std::time::Instant::now();
    let out = fx.hook(VM, "release", "end", &fx.xml());
    assert!(
        t.elapsed() < std::time::Duration::from_secs(4),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(fx.marker("shutdown1").exists() && !fx.marker("shutdown3").exists());
}
