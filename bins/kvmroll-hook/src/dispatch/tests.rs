//! Unit tests of the stage table and the stage budget.

use super::limits::stage_limit;
use super::*;

#[test]
fn stages_follow_the_design_table() {
    assert_eq!(Stage::of("prepare", "begin"), Stage::Allocate);
    assert_eq!(Stage::of("start", "begin"), Stage::Preboot);
    assert_eq!(Stage::of("restore", "begin"), Stage::Filter);
    assert_eq!(Stage::of("migrate", "begin"), Stage::Filter);
    assert_eq!(Stage::of("release", "end"), Stage::Shutdown);
    assert_eq!(Stage::of("started", "begin").name(), "on-started");
    assert_eq!(Stage::of("stopped", "end").name(), "on-stopped");
    assert_eq!(Stage::Filter.name(), "preboot");
}

#[test]
fn a_limit_over_the_cap_in_the_database_is_capped() {
    let brief = |v: &str| VmBrief {
        name: "a".into(),
        uuid: "u".into(),
        container: None,
        generation: 0,
        attrs: [("kvm_plugin_timeout_allocate".to_string(), v.to_string())].into(),
    };
    let limit = |v: &str| stage_limit(&Stage::Allocate, Some(&brief(v)), "a").as_secs();
    assert_eq!(limit("4294967295"), 3600);
    assert_eq!(limit("99999999999999999999999"), 3600);
    assert_eq!(limit("3600"), 3600);
    assert_eq!(limit("2"), 2);
    // Not a number of seconds: the stage's default.
    assert_eq!(limit("0"), 300);
    assert_eq!(limit("soon"), 300);
    assert_eq!(stage_limit(&Stage::Preboot, None, "a").as_secs(), 60);
}

#[test]
fn refusals_read_as_the_one_lines_libvirt_showed_before_they_were_typed() {
    use super::refusal::PluginFailure;
    use kvmroll_core::drift::DomainError;
    let vm = || "v".to_string();
    let said = |r: &Refusal| error_chain(r);
    assert_eq!(
        said(&Refusal::Moved {
            vm: vm(),
            container: "c2".into()
        }),
        "VM v was moved to container c2 by an allocate plugin; start it there"
    );
    assert_eq!(
        said(&Refusal::Elsewhere {
            vm: vm(),
            container: "c2".into(),
            host: "c1".into()
        }),
        "VM v belongs on container c2, not on this host (c1); start it there"
    );
    assert_eq!(
        said(&Refusal::PluginRefused {
            vm: vm(),
            stage: "allocate".into(),
            path: "/p/10-a".into(),
            why: "writable by others".into()
        }),
        "VM v: allocate stage refused: /p/10-a not run: writable by others"
    );
    let timed_out = PluginFailure::TimedOut {
        plugin: "10-a".into(),
        stage: "preboot".into(),
        limit: 60,
        rest: "; 2 plugins did not run".into(),
    };
    assert_eq!(
        said(&Refusal::Plugin {
            vm: vm(),
            source: timed_out
        }),
        "VM v: plugin 10-a ran past the preboot stage's limit of 60s and was killed; 2 plugins did not run"
    );
    let not_started = PluginFailure::NotStarted {
        path: "/p/10-a".into(),
        source: std::io::Error::from_raw_os_error(nix::libc::ENOEXEC),
    };
    assert!(said(&Refusal::Plugin {
        vm: vm(),
        source: not_started
    })
    .starts_with("VM v: plugin /p/10-a could not be started: Exec format error"));
    assert_eq!(
        said(&Refusal::Stdin {
            vm: vm(),
            source: DomainError::NotDomain("network".into())
        }),
        "VM v: libvirt's domain XML on stdin is refused: the root element is <network>, not <domain>"
    );
    assert_eq!(
        said(&Refusal::Roots {
            vm: vm(),
            why: "not absolute".into()
        }),
        "VM v: kvm_disk_roots is refused: not absolute"
    );
}
