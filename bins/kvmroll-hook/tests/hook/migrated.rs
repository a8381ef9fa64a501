//! `release end` of a VM that migrated away: the shutdown plugins are told
//! where it went, and no refresh defines it back here.

use crate::fixture::*;
use kvmroll_core::sqlite::SqliteStore;
use kvmroll_core::{Change, Host, OpenMode, Store};
use std::time::Duration;

/// Releases the VM with a shutdown plugin that records KVMROLL_MIGRATED_TO
/// and a `kvmroll` that records being run; the database places the VM on
/// `now_on`. Returns what the plugin saw and whether a refresh ran.
fn release(now_on: &str) -> (String, bool) {
    let fx = Fx::new();
    let xml = fx.xml();
    let refreshed = fx.marker("refreshed");
    let kvmroll = fx.plugin("bin", "kvmroll", &format!("touch {}", refreshed.display()));
    let conf = std::fs::read_to_string(fx.conf()).unwrap();
    let conf = conf.replace(
        "kvmroll = /bin/false",
        &format!("kvmroll = {}", kvmroll.display()),
    );
    std::fs::write(fx.conf(), conf).unwrap();
    let mut store = SqliteStore::open(&fx.db(), OpenMode::ReadWrite).unwrap();
    store
        .update(&mut |c| {
            let mut vm = c.vm(VM)?.clone();
            vm.container = Some(now_on.into());
            let mut host = Host::new("vm-container-0-1", "vm-container");
            host.cpus = 4;
            Ok(vec![Change::AddHost(host), Change::SetVm(vm)])
        })
        .unwrap();
    let seen = fx.marker("seen");
    fx.plugin(
        "plugins/shutdown.d",
        "10-release",
        &format!(
            "echo \"to=${{KVMROLL_MIGRATED_TO:-none}}\" > {}",
            seen.display()
        ),
    );
    let out = fx.hook(VM, "release", "end", &xml);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // The refresh is detached and waits for the hook to be gone.
    std::thread::sleep(Duration::from_millis(1500));
    let said = std::fs::read_to_string(&seen).unwrap().trim().to_string();
    (said, refreshed.exists())
}

#[test]
fn shutdown_plugins_of_a_vm_that_migrated_away_are_told_where_and_no_refresh_runs() {
    let (said, refreshed) = release("vm-container-0-1");
    assert_eq!(said, "to=vm-container-0-1");
    assert!(!refreshed, "the refresh would define the VM back here");
}

#[test]
fn shutdown_plugins_of_a_vm_that_stays_are_not_told_of_a_migration() {
    let (said, refreshed) = release(HOST);
    assert_eq!(said, "to=none");
    assert!(refreshed, "a VM that stays is refreshed after it stops");
}
