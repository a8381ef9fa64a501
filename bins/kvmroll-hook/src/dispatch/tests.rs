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
