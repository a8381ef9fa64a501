//! The stages' plugins through a real libvirtd: the static hook installed,
//! plugins run in order with their rights, failures and time limits refuse
//! the start.

use super::*;

#[test]
fn the_installed_hook_is_the_static_build() {
    // libvirtd runs it at every VM event: no dynamic loader on that path,
    // and nothing a shared-library upgrade could break under it.
    let Some(_cluster) = Cluster::get("the_installed_hook_is_the_static_build") else {
        return;
    };
    let out = std::process::Command::new("ldd")
        .arg(INSTALLED_HOOK)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("statically linked"),
        "ldd {INSTALLED_HOOK}: {said}"
    );
}

// size: one scenario against real daemons, each step on the state the last one left; kept whole
#[test]
fn plugins_run_at_each_stage_in_order_with_their_rights() {
    let t = "plugins_run_at_each_stage_in_order_with_their_rights";
    let Some(cl) = Cluster::get(t) else { return };
    let vm = cl.vm("seq");
    let name = vm.name.clone();
    let log = cl.file("seq.log");
    // on-restore.d is there to show it is not used: `restore begin` is a
    // preboot (filter) stage.
    let stages = [
        "allocate",
        "preboot",
        "shutdown",
        "on-started",
        "on-stopped",
        "on-restore",
    ];
    for stage in stages {
        vm.plugin(stage, "10-record", &recorder(&log));
    }
    let uuid = virsh_ok(&["domuuid", &name]).trim().to_string();
    let start = [
        triple("allocate", "prepare", "begin"),
        triple("preboot", "start", "begin"),
        triple("on-started", "started", "begin"),
    ];
    let stop = [
        triple("on-stopped", "stopped", "end"),
        triple("shutdown", "release", "end"),
    ];

    // A cold start.
    let t0 = Instant::now();
    virsh_ok(&["start", &name]);
    let took_start = t0.elapsed();
    assert_eq!(sequence(&recorded_n(&log, 3)), start, "cold start");
    assert_eq!(vm.state(), "running");

    // A managed save.
    let t0 = Instant::now();
    virsh_ok(&["managedsave", &name]);
    let took_save = t0.elapsed();
    let want: Vec<_> = start.iter().chain(&stop).cloned().collect();
    assert_eq!(sequence(&recorded_n(&log, 5)), want, "managedsave");
    assert_eq!(vm.state(), "shut off");
    assert!(
        virsh_ok(&["dominfo", &name]).contains("Managed save:   yes"),
        "no managed-save image"
    );

    // A start that restores the image: restore begin (preboot) first.
    let t0 = Instant::now();
    virsh_ok(&["start", &name]);
    let took_restore = t0.elapsed();
    let mut want = want;
    want.push(triple("preboot", "restore", "begin"));
    want.extend(start.iter().cloned());
    assert_eq!(sequence(&recorded_n(&log, 9)), want, "restore");
    let reason = virsh_ok(&["domstate", "--reason", &name]);
    assert_eq!(reason.trim(), "running (restored)");

    // A destroy.
    let t0 = Instant::now();
    virsh_ok(&["destroy", &name]);
    let took_destroy = t0.elapsed();
    want.extend(stop.iter().cloned());
    recorded_n(&log, 11);
    std::thread::sleep(Duration::from_millis(300));
    let runs = recorded(&log);
    assert_eq!(sequence(&runs), want, "destroy: the whole sequence");
    assert_eq!(vm.state(), "shut off");
    eprintln!(
        "{t}: start {took_start:?}, managedsave {took_save:?}, restore {took_restore:?}, \
         destroy {took_destroy:?}"
    );

    // What every run saw.
    let kvmroll = cl
        .conf
        .kvmroll
        .clone()
        .unwrap_or_else(|| bin_dir().join("kvmroll"));
    for (i, r) in runs.iter().enumerate() {
        let stage = r["stage"].as_str();
        let ctx = format!("run {i} ({stage} at {} {}): {r:?}", r["op"], r["subop"]);
        assert_eq!(r["argc"], "2", "{ctx}");
        assert_eq!(r["arg1"], stage, "{ctx}");
        assert_eq!(r["arg2"], name, "{ctx}");
        assert_eq!(r["vm"], name, "{ctx}");
        assert_eq!(r["uuid"], uuid, "{ctx}");
        assert_eq!(r["container"], cl.host, "{ctx}");
        assert_eq!(r["extra"], "-", "{ctx}");
        assert_eq!(Path::new(&r["db"]), cl.conf.db, "{ctx}");
        assert_eq!(r["stdin"], "domain", "stdin held the domain: {ctx}");
        assert_eq!(
            Path::new(&r["kvmroll"]),
            kvmroll,
            "kvmroll's folder first in PATH: {ctx}"
        );
        if matches!(stage, "allocate" | "shutdown") {
            assert_eq!(r["readonly"], "unset", "{ctx}");
            assert_eq!(r["write"], "ok", "a write in {stage}: {ctx}");
        } else {
            assert_eq!(r["readonly"], "1", "{ctx}");
            assert!(
                r["write"].starts_with("refused") && r["write"].contains("read-only"),
                "a write in {stage} must be refused: {ctx}"
            );
        }
    }
    // The writes that were allowed are in the database; the others are not.
    for (stage, set) in [
        ("allocate", true),
        ("shutdown", true),
        ("preboot", false),
        ("on-started", false),
        ("on-stopped", false),
    ] {
        let out = cl.kvmroll(&["attr", "get", &name, &format!("probe_{stage}")]);
        assert_eq!(
            out.status.success(),
            set,
            "probe_{stage}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // The events table has each run, all fine, and nothing for on-restore.d.
    let events = cl.events(&name);
    let runs_logged: Vec<_> = events
        .iter()
        .filter(|e| e.plugin.is_some())
        .map(|e| (e.stage.clone(), e.op.clone(), e.subop.clone()))
        .collect();
    assert_eq!(runs_logged, want, "plugin events: {events:#?}");
    for e in &events {
        assert!(
            e.outcome == "ok",
            "every invocation and run should be ok (a drift means the hook's render \
             differs from `kvmroll vm define`'s): {e:#?}"
        );
    }

    cl.ok(&["vm", "remove", &name]);
}

/// A failing plugin in STAGE aborts the start with its message; the VM stays
/// off.
fn a_failing_plugin_refuses_the_start(t: &str, stage: &str) {
    let Some(cl) = Cluster::get(t) else { return };
    let vm = cl.vm(&format!("fail-{stage}"));
    let name = vm.name.clone();
    vm.plugin(
        stage,
        "10-fail",
        "echo \"no storage for $KVMROLL_VM\" >&2\nexit 1",
    );
    let t0 = Instant::now();
    let err = start_refused(&name);
    eprintln!("{t}: virsh start refused in {:?}", t0.elapsed());
    assert!(
        err.contains(&format!("no storage for {name}")),
        "the plugin's message reaches virsh: {err}"
    );
    assert_eq!(vm.state(), "shut off");
    let events = cl.events(&name);
    let e = plugin_event(&events, stage, "10-fail");
    assert_eq!(e.outcome, "failed", "{e:#?}");
    assert_eq!(e.status.as_deref(), Some("1"), "{e:#?}");
    assert!(e.message.contains("no storage for"), "{e:#?}");
    cl.ok(&["vm", "remove", &name]);
}

#[test]
fn a_failing_allocate_plugin_refuses_the_start() {
    a_failing_plugin_refuses_the_start("a_failing_allocate_plugin_refuses_the_start", "allocate");
}

#[test]
fn a_failing_preboot_plugin_refuses_the_start() {
    a_failing_plugin_refuses_the_start("a_failing_preboot_plugin_refuses_the_start", "preboot");
}

#[test]
fn a_plugin_past_its_limit_is_killed_with_its_children() {
    let t = "a_plugin_past_its_limit_is_killed_with_its_children";
    let Some(cl) = Cluster::get(t) else { return };
    let vm = cl.vm("hang");
    let name = vm.name.clone();
    cl.ok(&["attr", "set", &name, "kvm_plugin_timeout_allocate", "2"]);
    let (shell, child) = (cl.file("shell.pid"), cl.file("child.pid"));
    vm.plugin(
        "allocate",
        "10-hang",
        &format!(
            "echo $$ > '{}'\nsleep 300 &\necho $! > '{}'\nsleep 300",
            shell.display(),
            child.display()
        ),
    );
    let t0 = Instant::now();
    let err = start_refused(&name);
    let took = t0.elapsed();
    eprintln!("{t}: virsh start refused in {took:?}");
    assert!(
        err.contains("past the allocate stage's limit of 2s"),
        "{err}"
    );
    assert!(
        took >= Duration::from_secs(2),
        "refused before the limit: {took:?}"
    );
    assert!(
        took < Duration::from_secs(10),
        "refused only after {took:?}"
    );
    for (what, file) in [
        ("the plugin's shell", &shell),
        ("its background sleep", &child),
    ] {
        let pid = std::fs::read_to_string(file)
            .unwrap_or_else(|e| panic!("{}: {e}: the plugin did not run", file.display()));
        assert!(
            wait_for(Duration::from_secs(2), || gone(&pid)),
            "{what} (pid {}) is still alive",
            pid.trim()
        );
    }
    assert_eq!(vm.state(), "shut off");
    let events = cl.events(&name);
    let e = plugin_event(&events, "allocate", "10-hang");
    assert_eq!(e.outcome, "timeout", "{e:#?}");
    cl.ok(&["vm", "remove", &name]);
}
