//! The events table: pruning, and the spool forwarded before reading.

use std::path::Path;

use crate::fixture::*;

on_both_engines!(pruning_events_by_age_and_count,);

fn pruning_events_by_age_and_count(e: Engine) {
    let f = Fixture::on(e);
    // Events as the hook records them: two a year old, three from now.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    for (i, t) in [
        now_ms - 365 * 86_400_000,
        now_ms - 364 * 86_400_000,
        now_ms,
        now_ms,
        now_ms,
    ]
    .iter()
    .enumerate()
    {
        f.execute(&format!(
            "INSERT INTO events (time_ms, vm, stage, op, subop, outcome, duration_ms, message)
             VALUES ({t}, 'hosted-vm-0-0-0', 'allocate', 'prepare', 'begin', 'ok', 1, 'event {i}')"
        ));
    }
    let count = || {
        f.ok(&["events", "--limit", "100", "--json"])
            .matches("\"message\"")
            .count()
    };
    assert_eq!(count(), 5);
    // Bad input changes nothing: one line, exit 2.
    for args in [
        &["events", "prune", "--older-than", "0"][..],
        &["events", "prune", "--keep", "some"][..],
        &["events", "prune", "--vm", "x"][..],
    ] {
        let before = f.state();
        let out = f.run(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("kvmroll: "), "{err}");
        assert!(f.state() == before, "{args:?} changed the database");
    }
    f.refused(
        &["attr", "set", "--global", "kvm_events_keep_days", "forever"],
        "kvm_events_keep_days",
    );
    // No argument: the default age, 90 days.
    assert_eq!(
        f.ok(&["events", "prune"]),
        "pruned 2 event(s) older than 90 days\n"
    );
    assert_eq!(count(), 3);
    // By count, and by the attribute.
    assert_eq!(
        f.ok(&["events", "prune", "--keep", "1"]),
        "pruned 2 event(s) beyond the newest 1\n"
    );
    f.ok(&["attr", "set", "--global", "kvm_events_keep_days", "1"]);
    assert_eq!(
        f.ok(&["events", "prune"]),
        "pruned 0 event(s) older than 1 days\n"
    );
    assert_eq!(count(), 1);
}

#[test]
fn the_event_pruning_units_run_prune_daily() {
    // systemd-analyze verify runs on every unit in tests/e2e/host.rs.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../systemd");
    let service = std::fs::read_to_string(dir.join("kvmroll-events-prune.service")).unwrap();
    let timer = std::fs::read_to_string(dir.join("kvmroll-events-prune.timer")).unwrap();
    assert!(service.contains("ExecStart=/usr/bin/kvmroll --no-sync events prune"));
    assert!(timer.contains("OnCalendar=daily") && timer.contains("WantedBy=timers.target"));
}

/// On a container, `kvmroll events` hands the events its hook spooled to
/// the database first (the database of this host's kvmroll.conf only),
/// shows which container each happened on, and picks one with --container.
#[test]
fn events_forward_this_hosts_spool_and_filter_by_container() {
    use kvmroll_core::events::{Event, EventOutcome};
    let f = Fixture::on(Engine::Sqlite);
    let dir = f.file("x").parent().unwrap().to_path_buf();
    let conf = dir.join("kvmroll.conf");
    std::fs::write(&conf, format!("db = {}\nhost = vm-container-0-0\n", f.db)).unwrap();
    let event = |container: &str, message: &str| Event {
        id: 0,
        time_ms: kvmroll_core::now_ms(),
        vm: "hosted-vm-0-0-0".into(),
        stage: "preboot".into(),
        op: "start".into(),
        subop: "begin".into(),
        plugin: None,
        outcome: EventOutcome::Ok,
        status: None,
        duration_ms: 1,
        message: message.into(),
        container: Some(container.into()),
    };
    let spool = kvmroll_core::spool::Spool::new(dir.join("spool"), "vm-container-0-0");
    spool
        .write(&[
            event("vm-container-0-0", "here"),
            event("elsewhere", "there"),
        ])
        .unwrap();
    let events = |extra: &[&str]| {
        let out = f
            .cmd()
            .args(["events", "--json"])
            .args(extra)
            .env("KVMROLL_CONF", &conf)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        json.as_array()
            .unwrap()
            .iter()
            .map(|e| e["message"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(events(&[]), ["here", "there"]);
    assert!(spool.pending().unwrap().is_empty());
    assert_eq!(events(&["--container", "elsewhere"]), ["there"]);
    // Shown once, though asked twice.
    assert_eq!(events(&[]).len(), 2);
    let table = f.ok(&["events"]);
    assert!(
        table.lines().next().unwrap().contains("CONTAINER"),
        "{table}"
    );
}
