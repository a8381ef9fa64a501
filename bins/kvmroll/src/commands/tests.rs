//! The power and cdrom commands' decisions, on a database of their own and
//! the fake libvirt: what each asks of libvirt, what it leaves in the
//! database, and what it reports.

use super::power::Power;
use super::{App, Exit};
use crate::cli::{PowerArgs, Timeout};
use crate::sync::{SyncMode, Syncer};
use kvmroll_core::{open_store, Change, Host, OpenMode, Scope, Vm};
use kvmroll_virt::fake::FakeLibvirt;
use kvmroll_virt::{Connector, DomainState};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Two containers, c0 (`fake:///c0`) and c1 (`fake:///c1`), with the VMs
/// `vms` on them as (name, container); the fake has them all, shut off.
fn app(fake: &FakeLibvirt, vms: &[(&str, &str)]) -> (tempfile::TempDir, App<'static>) {
    let made = app_over(fake.clone(), vms);
    for (name, _) in vms {
        fake.add(name, DomainState::ShutOff);
    }
    made
}

/// Two VM containers, c0 (`fake:///c0`) and c1 (`fake:///c1`), 8 CPUs
/// each, with the VMs `vms` on them as (name, container), in the database
/// only; commands reach libvirt through `connector`.
pub(super) fn app_over(
    connector: impl Connector + Clone + Send + 'static,
    vms: &[(&str, &str)],
) -> (tempfile::TempDir, App<'static>) {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open_store(&dir.path().join("k.db"), OpenMode::Create).unwrap();
    let mut changes = Vec::new();
    for c in ["c0", "c1"] {
        let mut host = Host::new(c, "vm-container");
        host.cpus = 8;
        changes.push(Change::AddHost(host));
        for (name, value) in [
            ("libvirt_uri", format!("fake:///{c}")),
            ("kvm", "true".into()),
        ] {
            changes.push(Change::SetAttr {
                scope: Scope::Host(c.into()),
                name: name.into(),
                value,
            });
        }
    }
    for (name, container) in vms {
        changes.push(Change::AddVm(Vm {
            id: 0,
            name: name.to_string(),
            container: Some(container.to_string()),
            memory_mib: 128,
            vcpus: 1,
            uuid: uuid::Uuid::new_v4().to_string(),
            cdrom: None,
            virt_type: "kvm".into(),
            disks: Vec::new(),
            nics: Vec::new(),
            stale: false,
            generation: 0,
        }));
    }
    store.update(&mut |_| Ok(changes.clone())).unwrap();
    // The syncer borrows its connector for the App's whole life.
    let leaked: &'static dyn Connector = Box::leak(Box::new(connector.clone()));
    let app = App {
        store,
        sync: Syncer::new(leaked, SyncMode::Live, "frontend".into()),
        connector: Arc::new(connector) as Arc<dyn Connector + Send>,
    };
    (dir, app)
}

fn names(names: &[&str]) -> PowerArgs {
    PowerArgs {
        names: names.iter().map(|n| n.to_string()).collect(),
        all: false,
        container: None,
        timeout: Timeout {
            limit: Duration::from_secs(3),
        },
    }
}

/// The calls that act on a domain, without connects and lists.
fn acts(fake: &FakeLibvirt) -> Vec<String> {
    fake.said()
        .into_iter()
        .filter(|c| !c.starts_with("connect") && c != "list" && !c.starts_with("define"))
        .collect()
}

#[test]
fn a_start_the_hook_refuses_is_one_error_with_the_hook_s_words() {
    let fake = FakeLibvirt::new();
    let (_dir, mut app) = app(&fake, &[("vm-a", "c0")]);
    fake.hook_refuses(
        "vm-a",
        "kvmroll-hook: VM vm-a: allocate plugin deny refused: no room",
    );
    let err = app.power(Power::Start, names(&["vm-a"])).unwrap_err();
    assert_eq!(
        kvmroll_cli::error_chain(&err),
        "domain vm-a did not start: kvmroll-hook: VM vm-a: allocate plugin deny refused: no room"
    );
    assert_eq!(fake.state("vm-a"), Some(DomainState::ShutOff));
}

#[test]
fn start_all_on_a_container_starts_its_off_vms_only() {
    let fake = FakeLibvirt::new();
    let vms = [("a", "c0"), ("b", "c0"), ("c", "c1")];
    let (_dir, mut app) = app(&fake, &vms);
    fake.add("b", DomainState::Running);
    let all = PowerArgs {
        names: Vec::new(),
        all: true,
        container: Some("c0".into()),
        timeout: Timeout {
            limit: Duration::from_secs(3),
        },
    };
    assert_eq!(app.power(Power::Start, all).unwrap(), Exit::Done);
    assert_eq!(acts(&fake), ["start a"]);
    assert_eq!(fake.state("c"), Some(DomainState::ShutOff));
}

#[test]
fn shutdown_and_destroy_reach_each_vm_s_own_container() {
    let fake = FakeLibvirt::new();
    let (_dir, mut app) = app(&fake, &[("a", "c0"), ("b", "c1")]);
    fake.add("a", DomainState::Running)
        .add("b", DomainState::Running)
        .fault("a", kvmroll_virt::fake::Fault::ShutdownIgnored);
    app.power(Power::Shutdown, names(&["a", "b"])).unwrap();
    assert_eq!(fake.state("b"), Some(DomainState::ShutOff));
    app.power(Power::Destroy, names(&["a"])).unwrap();
    assert_eq!(fake.state("a"), Some(DomainState::ShutOff));
    assert_eq!(acts(&fake), ["shutdown a", "shutdown b", "destroy a"]);
    // Asked from threads first, so in no set order.
    let connects: std::collections::BTreeSet<String> = fake
        .said()
        .into_iter()
        .filter(|c| c.starts_with("connect"))
        .collect();
    assert_eq!(
        connects.into_iter().collect::<Vec<_>>(),
        ["connect fake:///c0", "connect fake:///c1"]
    );
}

#[test]
fn one_failure_among_several_is_counted_and_the_others_still_act() {
    let fake = FakeLibvirt::new();
    let (_dir, mut app) = app(&fake, &[("a", "c0"), ("b", "c0")]);
    fake.fault("a", kvmroll_virt::fake::Fault::StartFails);
    let err = app.power(Power::Start, names(&["a", "b"])).unwrap_err();
    assert_eq!(err.to_string(), "1 of 2 VM(s) could not be started");
    assert_eq!(fake.state("b"), Some(DomainState::Running));
}

#[test]
fn a_hanging_container_costs_its_limit_once_and_the_others_act() {
    let fake = FakeLibvirt::new();
    let vms = [("a", "c0"), ("b", "c1"), ("c", "c1")];
    let (_dir, mut app) = app(&fake, &vms);
    fake.add("a", DomainState::Running)
        .connect_hangs("fake:///c1", Duration::from_secs(5));
    let mut all = names(&[]);
    all.all = true;
    all.timeout.limit = Duration::from_millis(300);
    let t = Instant::now();
    let err = app.power(Power::Destroy, all).unwrap_err();
    assert!(
        t.elapsed() < Duration::from_millis(600),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(err.to_string(), "2 of 3 VM(s) could not be destroyed");
    assert_eq!(acts(&fake), ["destroy a"]);
}

const WITH_DRIVE: &str = "<domain type='kvm'><name>cd</name><devices>\
    <disk type='file' device='cdrom'><source file='/old.iso'/>\
    <target dev='hdc' bus='ide'/><readonly/></disk></devices></domain>";

#[test]
fn cdrom_live_changes_the_running_vm_s_medium_and_the_database() {
    let fake = FakeLibvirt::new();
    let (_dir, mut app) = app(&fake, &[("cd", "c0")]);
    fake.add_xml("cd", WITH_DRIVE, DomainState::Running);
    app.set_cdrom("cd", "/isos/new.iso", true).unwrap();
    let media = fake.live_media("cd").expect("a live change");
    assert!(media.contains("<source file='/isos/new.iso'/>"), "{media}");
    assert!(media.contains("<target dev='hdc' bus='ide'/>"), "{media}");
    let c = app.store.snapshot().unwrap();
    assert_eq!(c.vm("cd").unwrap().cdrom.as_deref(), Some("/isos/new.iso"));
    // Ejected: the drive stays, without a medium.
    app.set_cdrom("cd", "none", true).unwrap();
    assert!(!fake.live_media("cd").unwrap().contains("<source"));
}

#[test]
fn cdrom_without_live_or_on_an_off_vm_changes_only_the_definition() {
    let fake = FakeLibvirt::new();
    let (_dir, mut app) = app(&fake, &[("cd", "c0")]);
    fake.add_xml("cd", WITH_DRIVE, DomainState::ShutOff);
    app.set_cdrom("cd", "/isos/a.iso", true).unwrap();
    fake.add_xml("cd", WITH_DRIVE, DomainState::Running);
    app.set_cdrom("cd", "/isos/b.iso", false).unwrap();
    assert!(!acts(&fake).iter().any(|c| c.starts_with("change-media")));
    let c = app.store.snapshot().unwrap();
    assert_eq!(c.vm("cd").unwrap().cdrom.as_deref(), Some("/isos/b.iso"));
}

#[test]
fn cdrom_live_on_a_running_vm_without_a_drive_changes_nothing() {
    let fake = FakeLibvirt::new();
    let (_dir, mut app) = app(&fake, &[("cd", "c0")]);
    fake.add("cd", DomainState::Running);
    let err = app.set_cdrom("cd", "/isos/a.iso", true).unwrap_err();
    assert!(
        err.to_string().contains("runs without a cdrom drive"),
        "{err}"
    );
    let c = app.store.snapshot().unwrap();
    assert_eq!(c.vm("cd").unwrap().cdrom, None);
    assert!(fake.live_media("cd").is_none());
}

/// Regression: `vm set --container` undefined the VM on its old container
/// before defining it on the new one, so a define that failed left it
/// defined nowhere. The old definition now stays until the new one is made.
#[test]
fn a_move_whose_define_fails_keeps_the_old_definition() {
    let fake = FakeLibvirt::new();
    let (_dir, mut app) = app(&fake, &[("a", "c0")]);
    fake.fault("a", kvmroll_virt::fake::Fault::DefineFails);
    let moved = app.set_vm(crate::cli::VmSet {
        name: "a".into(),
        container: Some("c1".into()),
        mem: None,
        cpus: None,
        virt_type: None,
    });
    assert!(moved.is_err(), "{moved:?}");
    assert_eq!(fake.state("a"), Some(DomainState::ShutOff));
    assert!(
        !fake.said().iter().any(|c| c.starts_with("undefine")),
        "{:?}",
        fake.said()
    );
}
