//! Without the database: a frontend outage, seen from a container.

use crate::fixture::*;
use std::path::PathBuf;

/// A plugin that writes what it was told of the database to `file`.
pub fn tell_tale(fx: &Fx, folder: &str, file: &str) -> PathBuf {
    let out = fx.marker(file);
    fx.plugin(
        folder,
        "10-tell",
        &format!(
            "echo \"unreachable=$KVMROLL_DB_UNREACHABLE reason=$KVMROLL_DB_UNREACHABLE_REASON\" >{}",
            out.display()
        ),
    );
    out
}

/// With the database gone, a VM with kvmroll's metadata starts and stops
/// as before: its plugins run, those of the stages that open the database
/// are told it does not answer, and no database is made; the events wait
/// in the spool and reach the database once it is back, each once.
#[test]
fn a_vm_starts_and_stops_with_the_database_gone_and_plugins_are_told() {
    let fx = Fx::new();
    let allocate = tell_tale(&fx, &format!("vms/{VM}/allocate.d"), "allocate");
    let preboot = tell_tale(&fx, "plugins/preboot.d", "preboot");
    let shutdown = tell_tale(&fx, &format!("vms/{VM}/shutdown.d"), "shutdown");
    let xml = fx.xml();
    let kept = fx.take_db_away();
    for (op, subop) in [
        ("prepare", "begin"),
        ("start", "begin"),
        ("started", "begin"),
        ("stopped", "end"),
        ("release", "end"),
    ] {
        let out = fx.hook(VM, op, subop, &xml);
        assert_eq!(out.status.code(), Some(0), "{op}: {}", stderr(&out));
        assert!(out.stdout.is_empty() && out.stderr.is_empty(), "{op}");
    }
    let told = |p: &PathBuf| std::fs::read_to_string(p).unwrap();
    for p in [&allocate, &shutdown] {
        let said = told(p);
        assert!(
            said.starts_with("unreachable=1 reason=") && said.contains("does not exist"),
            "{said}"
        );
    }
    // start begin opens no database: there is nothing to tell.
    assert_eq!(told(&preboot), "unreachable= reason=\n");
    assert!(!fx.db().exists(), "a database was made");
    assert_eq!(std::fs::read_dir(fx.spool()).unwrap().count(), 5);
    fx.bring_db_back(&kept);
    let events = fx.events(VM);
    let count = |outcome: &str| {
        events
            .iter()
            .filter(|e| e.outcome.as_str() == outcome)
            .count()
    };
    // Two stages said the database did not answer; the allocate stage's
    // relocation check was skipped, saying so.
    assert_eq!(count("unreachable"), 3, "{events:#?}");
    assert!(events.iter().any(|e| e
        .message
        .contains("relocation check after the allocate plugins is skipped")));
    // Five invocations, three plugin runs, each once, in order.
    let invocations: Vec<&str> = events
        .iter()
        .filter(|e| e.plugin.is_none() && e.outcome.as_str() == "ok")
        .map(|e| e.op.as_str())
        .collect();
    assert_eq!(
        invocations,
        ["prepare", "start", "started", "stopped", "release"]
    );
    assert_eq!(events.iter().filter(|e| e.plugin.is_some()).count(), 3);
    assert!(events.iter().all(|e| e.container.as_deref() == Some(HOST)));
    // Forwarded: nothing is delivered twice.
    assert_eq!(fx.events(VM).len(), events.len());
}

#[test]
fn kvm_require_database_refuses_a_start_without_the_database() {
    let fx = Fx::new();
    fx.set_attr("kvm_require_database", "true");
    let ran = fx.marker("ran");
    fx.plugin(
        &format!("vms/{VM}/allocate.d"),
        "10-ran",
        &format!("touch {}", ran.display()),
    );
    let xml = fx.xml();
    let kept = fx.take_db_away();
    let out = fx.hook(VM, "prepare", "begin", &xml);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("kvm_require_database is true") && err.contains("database is unreachable"),
        "{err}"
    );
    assert!(!ran.exists(), "an allocate plugin ran");
    // The stop side goes on.
    let out = fx.hook(VM, "release", "end", &xml);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // Back, the same start goes.
    fx.bring_db_back(&kept);
    let out = fx.hook(VM, "prepare", "begin", &xml);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(ran.exists());
}

/// A VM without kvmroll metadata (defined by hand) is not held up, nor
/// refused, by a cluster database server that does not answer: it passes
/// through, as a VM the database does not know.
#[test]
fn a_vm_without_metadata_passes_through_a_server_that_does_not_answer() {
    let fx = Fx::new();
    let ran = fx.marker("ran");
    fx.plugin(
        "plugins/allocate.d",
        "10-ran",
        &format!("touch {}", ran.display()),
    );
    let nowhere = fx.dir.path().join("no-server");
    std::fs::write(
        fx.conf(),
        format!(
            "db = postgresql://kvmroll_container:pw@/kvmroll?host={}&port=5432\nroot = {}\nhost = {HOST}\nkvmroll = /bin/false\nspool = {}\n",
            nowhere.display(),
            fx.root().display(),
            fx.spool().display()
        ),
    )
    .unwrap();
    let xml = strip_metadata(&fx.xml());
    for (op, subop) in [("prepare", "begin"), ("start", "begin"), ("release", "end")] {
        let out = fx.hook(VM, op, subop, &xml);
        assert_eq!(out.status.code(), Some(0), "{op}: {}", stderr(&out));
        assert!(out.stderr.is_empty(), "{op}: {}", stderr(&out));
    }
    assert!(!ran.exists(), "a plugin ran for a VM it cannot know");
}
