//! Opening a database: what each mode makes, refuses and reports.

use crate::common::{event, one_line, vm, Engine};
use kvmroll_core::events::EventFilter;
use kvmroll_core::{Change, Host, Init, OpenMode, Scope, StoreError};

on_both_engines!(
    a_new_database_is_seeded,
    read_only_refuses_every_write,
    only_create_makes_a_database,
    init_makes_upgrades_or_finds_current,
    status_counts_hosts_vms_and_events,
);

fn a_new_database_is_seeded(e: &dyn Engine) {
    let c = e.init().snapshot().unwrap();
    assert!(c.appliances.contains("vm-container"));
    assert!(c.appliances.contains("hosted-vm"));
    assert_eq!(
        c.attrs[&Scope::Appliance("vm-container".into())]["kvm"],
        "true"
    );
    assert!(c.hosts.is_empty() && c.vms.is_empty());
}

fn read_only_refuses_every_write(e: &dyn Engine) {
    let mut rw = e.init();
    rw.record_events(&[event("v", 1)]).unwrap();
    let before = rw.snapshot().unwrap();
    let mut ro = e.open(OpenMode::ReadOnly).unwrap();
    let refused = |r: Result<(), StoreError>| {
        let err = r.unwrap_err();
        assert!(matches!(err, StoreError::ReadOnly), "{err:?}");
        assert!(one_line(&err).contains("read-only"));
    };
    refused(
        ro.update(&mut |_| Ok(vec![Change::AddHost(Host::new("h", "compute"))]))
            .map(drop),
    );
    refused(ro.record_events(&[event("v", 2)]));
    refused(ro.prune_events(None, Some(0)).map(drop));
    assert_eq!(rw.snapshot().unwrap(), before);
    assert_eq!(rw.events(&EventFilter::default()).unwrap().len(), 1);
}

fn only_create_makes_a_database(e: &dyn Engine) {
    for mode in [
        OpenMode::ReadOnly,
        OpenMode::ReadWriteFast,
        OpenMode::ReadWrite,
    ] {
        let Err(err) = e.open(mode) else {
            panic!("{mode:?} opened a database nobody made")
        };
        one_line(&err);
        assert!(!e.made(), "{mode:?} made a database");
    }
    // Each engine makes it at the first write that a new cluster accepts
    // (SQLite its file, PostgreSQL its tables): a refused one leaves
    // nothing.
    let mut first = e.open(OpenMode::Create).unwrap();
    assert_eq!(first.snapshot().unwrap(), kvmroll_core::Cluster::seeded());
    let refused = first.update(&mut |_| Ok(vec![Change::AddHost(Host::new("h", "nope"))]));
    assert!(
        matches!(refused, Err(StoreError::Refused(_))),
        "{refused:?}"
    );
    assert!(!e.made(), "a refused first write made a database");
    first.record_events(&[event("v", 1)]).unwrap();
    assert!(e.made());
    e.open(OpenMode::ReadWriteFast).unwrap();
    e.open(OpenMode::ReadOnly).unwrap();
}

fn init_makes_upgrades_or_finds_current(e: &dyn Engine) {
    let (_, made) = kvmroll_core::location::init(&e.location()).unwrap();
    assert_eq!(made, Init::Created);
    let (_, again) = kvmroll_core::location::init(&e.location()).unwrap();
    assert_eq!(again, Init::Current);
}

fn status_counts_hosts_vms_and_events(e: &dyn Engine) {
    let mut s = e.init();
    s.update(&mut |_| {
        Ok(vec![
            Change::AddHost(Host::new("c", "vm-container")),
            Change::AddHost(Host::new("compute-0-0", "compute")),
            Change::AddVm(vm("v", "c")),
        ])
    })
    .unwrap();
    s.record_events(&[event("v", 1), event("v", 2)]).unwrap();
    let st = e.open(OpenMode::ReadOnly).unwrap().status().unwrap();
    assert_eq!(st.engine, e.location().engine());
    assert_eq!(st.location, e.location().to_string());
    assert!(!st.location.contains(":kvmroll-test@"), "{}", st.location);
    assert_eq!(st.schema_version, kvmroll_core::sqlite::SCHEMA_VERSION);
    assert_eq!((st.hosts, st.vms, st.events), (2, 1, 2));
}
