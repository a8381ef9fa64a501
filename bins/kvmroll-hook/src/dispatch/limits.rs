//! The VM's attributes the hook reads as numbers and flags: the stage's
//! time budget, the database's connection time, booleans.

use super::Stage;
use kvmroll_core::VmBrief;
use std::time::Duration;

/// How long the hook waits for the database where it opens it, unless the
/// VM's `kvm_db_connect_timeout` says otherwise: within the stage's budget.
pub(super) const DB_CONNECT_TIMEOUT: u64 = 5;

/// The stage's time budget, shared by all its plugins: the VM's attribute
/// (or the stage's default), capped at `MAX_PLUGIN_TIMEOUT_SECS`. The CLI
/// refuses larger values; one found in the database anyway is capped here,
/// with a log line.
pub(super) fn stage_limit(stage: &Stage, brief: Option<&VmBrief>, vm: &str) -> Duration {
    let (attr, default) = stage.timeout();
    seconds(
        brief,
        attr,
        default,
        kvmroll_core::attrs::MAX_PLUGIN_TIMEOUT_SECS,
        vm,
    )
}

/// A VM's attribute in seconds: its default where unset or not a positive
/// number, `cap` where over it (each with a log line).
pub(super) fn seconds(
    brief: Option<&VmBrief>,
    attr: &str,
    default: u64,
    cap: u64,
    vm: &str,
) -> Duration {
    let Some(value) = brief.and_then(|b| b.attrs.get(attr)) else {
        return Duration::from_secs(default);
    };
    let value = value.trim();
    let secs = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Digits too many for a u64 are over the cap all the same.
        value.parse::<u64>().unwrap_or(u64::MAX)
    } else {
        0
    };
    if secs == 0 {
        log::warn!("VM {vm}: {attr} {value:?} is not a positive number of seconds; the default of {default}s applies");
        return Duration::from_secs(default);
    }
    if secs > cap {
        log::warn!("VM {vm}: {attr} {value} is over the cap of {cap}s; {cap}s applies");
        return Duration::from_secs(cap);
    }
    Duration::from_secs(secs)
}

/// Whether a boolean attribute of the VM is true.
pub(super) fn flag(brief: Option<&VmBrief>, attr: &str) -> bool {
    brief
        .and_then(|b| b.attrs.get(attr))
        .and_then(|v| kvmroll_core::model::parse_bool(v))
        == Some(true)
}
